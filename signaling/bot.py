"""A headless Participant: speaks the signaling protocol with aiohttp, media with aiortc.

Tests and the benchmark use it the way a browser uses web/static: join with a token,
answer every offer, publish pre-encoded clips, and count what arrives per sender. What it
receives is counted through the same encoded-frame tap as the Worker uses, so a bot never
decodes either: dozens fit on one core.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from media.clips import Clip, ClipTrack
from media.codecs import frame_start_check, is_keyframe
from media.config import VideoCodec
from media.tap import install_receiver_tap, on_keyframe_request
from signaling import protocol as p

log = logging.getLogger(__name__)


@dataclass
class Inbound:
    """What one bot received on one m-line."""

    mid: str
    kind: str
    participant_id: str | None = None
    frames: int = 0
    keyframes: int = 0
    bytes: int = 0
    first_frame_at: float | None = None
    first_frame_was_keyframe: bool | None = None
    by_participant: dict[str, int] = field(default_factory=dict)


class Bot:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        video: Clip | None = None,
        audio: Clip | None = None,
        on_frame: Callable[[str, str | None, bytes, float], None] | None = None,
        on_sent: Callable[[bytes, float], None] | None = None,
        video_codec: VideoCodec = "VP8",
        relay_only: bool = False,
    ) -> None:
        # relay_only: gather TURN candidates only (iceTransportPolicy "relay"), as a client
        # behind a firewall that lets nothing but its TURN server through.
        self._relay_only = relay_only
        self._video_codec: VideoCodec = video_codec
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.tracks: dict[str, ClipTrack] = {}
        if video is not None:
            self.tracks["video"] = ClipTrack(video, on_sent)
        if audio is not None:
            self.tracks["audio"] = ClipTrack(audio, on_sent)
        self.inbound: dict[str, Inbound] = {}
        self.errors: list[p.Error] = []
        self.events: list[p.ServerMessage] = []
        self.joined: p.Joined | None = None
        self.bye: p.Bye | None = None
        self.offers = 0
        self.joined_at: float | None = None
        self.pc: RTCPeerConnection | None = None
        self._on_frame = on_frame
        self._slots: dict[str, p.TrackSlot] = {}
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._joined_event = asyncio.Event()
        self._closed = asyncio.Event()
        self.close_code: int | None = None

    # ------------------------------------------------------------ public

    @property
    def participant_id(self) -> str | None:
        return self.joined.participant.id if self.joined else None

    async def connect(self, timeout: float = 10.0) -> None:
        """Open the socket and join; returns once ``joined`` (or raises)."""
        self._session = aiohttp.ClientSession()
        ws_url = self.base_url.replace("http", "ws", 1) + "/ws"
        self._ws = await self._session.ws_connect(ws_url, heartbeat=None, max_msg_size=1 << 20)
        self.joined_at = time.monotonic()
        await self.send(p.Join(type="join", token=self.token, publish=list(self.tracks)))  # type: ignore[arg-type]
        self._reader = asyncio.create_task(self._read())
        async with asyncio.timeout(timeout):
            done = asyncio.create_task(self._joined_event.wait())
            closed = asyncio.create_task(self._closed.wait())
            await asyncio.wait({done, closed}, return_when=asyncio.FIRST_COMPLETED)
            done.cancel()
            closed.cancel()
        if self.joined is None:
            reason = self.errors[-1].message if self.errors else "closed"
            raise ConnectionError(f"join refused: {reason}")

    async def send(self, message: p._Message) -> None:
        assert self._ws is not None
        await self._ws.send_str(p.dump(message))

    async def send_raw(self, data: str | bytes) -> None:
        assert self._ws is not None
        if isinstance(data, bytes):
            await self._ws.send_bytes(data)
        else:
            await self._ws.send_str(data)

    def frames_from(self, participant_id: str, kind: str) -> int:
        return sum(
            i.by_participant.get(participant_id, 0) for i in self.inbound.values() if i.kind == kind
        )

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Poll ``predicate`` every 20 ms, at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            await asyncio.sleep(0.02)
        return predicate()

    async def close(self, leave: bool = True) -> None:
        if self._ws is not None and not self._ws.closed and leave:
            with contextlib.suppress(Exception):
                await self.send(p.Leave(type="leave"))
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self.pc is not None:
            await self.pc.close()
        for track in self.tracks.values():
            track.stop()
        if self._session is not None:
            await self._session.close()

    async def vanish(self) -> None:
        """Drop off the network without a word, as a crashed tab or a cut cable would."""
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self.pc is not None:
            await self.pc.close()
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------ protocol

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                message = p.parse_server(msg.data)
                try:
                    await self._handle(message)
                except (aiohttp.ClientError, ConnectionError):
                    # The server is closing this socket (e.g. an answer to an offer that a
                    # bye follows): keep reading, the bye and the close are still to come.
                    log.info("bot could not reply to %s: socket closing", message.type)
        finally:
            self.close_code = self._ws.close_code
            self._closed.set()

    async def _handle(self, message: p.ServerMessage) -> None:
        if isinstance(message, p.Joined):
            self.joined = message
            self.pc = RTCPeerConnection(
                RTCConfiguration(
                    iceServers=[
                        RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
                        for s in message.iceServers
                    ],
                    bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
                    iceTransportPolicy=(
                        RTCIceTransportPolicy.RELAY
                        if self._relay_only
                        else RTCIceTransportPolicy.ALL
                    ),
                )
            )
            self.pc.on("track", self._on_track)
            self._joined_event.set()
        elif isinstance(message, p.Offer):
            await self._answer(message)
        elif isinstance(message, p.Error):
            self.errors.append(message)
        elif isinstance(message, p.Bye):
            self.bye = message
        else:
            self.events.append(message)

    async def _answer(self, offer: p.Offer) -> None:
        assert self.pc is not None
        self.offers += 1
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        for slot in offer.tracks:
            self._slots[slot.mid] = slot
            transceiver = next(t for t in self.pc.getTransceivers() if t.mid == slot.mid)
            if slot.role == "publish":
                track = self.tracks.get(slot.kind)
                if track is not None and transceiver.sender.track is None:
                    transceiver.sender.replaceTrack(track)
                    on_keyframe_request(transceiver.sender, track.request_keyframe)
                transceiver.direction = "sendonly" if track is not None else "inactive"
            elif slot.role == "consume":
                transceiver.direction = "recvonly"
                inbound = self.inbound.get(slot.mid)
                if inbound is not None:
                    inbound.participant_id = slot.participantId
            else:
                transceiver.direction = "inactive"
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        await self.send(p.Answer(type="answer", sdp=self.pc.localDescription.sdp))

    def _on_track(self, track: MediaStreamTrack) -> None:
        assert self.pc is not None
        transceiver = next(t for t in self.pc.getTransceivers() if t.receiver.track is track)
        mid = transceiver.mid or ""
        slot = self._slots.get(mid)
        inbound = Inbound(mid, track.kind, slot.participantId if slot else None)
        self.inbound[mid] = inbound

        def on_frame(codec: RTCRtpCodecParameters, frame: JitterFrame, lost: bool) -> None:
            now = time.monotonic()
            key = is_keyframe(codec.mimeType, frame.data)
            if inbound.first_frame_at is None:
                inbound.first_frame_at = now
                inbound.first_frame_was_keyframe = key
            inbound.frames += 1
            inbound.keyframes += key and inbound.kind == "video"
            inbound.bytes += len(frame.data)
            if inbound.participant_id is not None:
                counts = inbound.by_participant
                counts[inbound.participant_id] = counts.get(inbound.participant_id, 0) + 1
            if self._on_frame is not None:
                self._on_frame(inbound.kind, inbound.participant_id, frame.data, now)

        install_receiver_tap(
            transceiver.receiver, on_frame, starts_frame=frame_start_check(self._video_codec)
        )
