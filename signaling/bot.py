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
from media.tap import (
    install_receiver_tap,
    on_keyframe_request,
    simulate_receive_loss,
    tolerate_close_while_connecting,
)
from signaling import protocol as p

log = logging.getLogger(__name__)


@dataclass
class Inbound:
    """What one bot received on one m-line."""

    mid: str
    kind: str
    participant_id: str | None = None
    producer_id: str | None = None
    source: str | None = None
    frames: int = 0
    keyframes: int = 0
    bytes: int = 0
    first_frame_at: float | None = None
    first_frame_was_keyframe: bool | None = None
    by_participant: dict[str, int] = field(default_factory=dict)
    by_producer: dict[str, int] = field(default_factory=dict)


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
        video_codecs: list[str] | None = None,
        relay_only: bool = False,
        receive_loss: float = 0.0,
    ) -> None:
        # video_codec: what the bot's clip is and what it expects to receive. video_codecs:
        # what it tells the server it can use (join's videoCodecs); None says nothing.
        # relay_only: gather TURN candidates only (iceTransportPolicy "relay"), as a client
        # behind a firewall that lets nothing but its TURN server through.
        self._relay_only = relay_only
        # receive_loss: the fraction of incoming RTP packets lost on the way, as on a weak
        # link (tests: this kernel has no netem). NACKs and receiver reports see it.
        self._receive_loss = receive_loss
        self._video_codec: VideoCodec = video_codec
        self._video_codecs = video_codecs
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.tracks: dict[str, ClipTrack] = {}
        if video is not None:
            self.tracks["video"] = ClipTrack(video, on_sent)
        if audio is not None:
            self.tracks["audio"] = ClipTrack(audio, on_sent)
        # Extra video tracks by source ("screen", "camera2"): see publish_extra().
        self.extra_tracks: dict[str, ClipTrack] = {}
        self.inbound: dict[str, Inbound] = {}
        # What earlier connections of this session received (before a media reset).
        self._past_inbound: list[Inbound] = []
        self.media_resets = 0
        self.resumed = False
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
        self._waiting_event = asyncio.Event()
        self._closed = asyncio.Event()
        self.close_code: int | None = None

    # ------------------------------------------------------------ public

    @property
    def participant_id(self) -> str | None:
        return self.joined.participant.id if self.joined else None

    async def connect(self, timeout: float = 10.0, *, may_wait: bool = False) -> None:
        """Open the socket and join; returns once ``joined`` (or raises). With ``may_wait``,
        once put in the waiting room too (``waiting``): ``joined`` comes when admitted."""
        self._session = aiohttp.ClientSession()
        ws_url = self.base_url.replace("http", "ws", 1) + "/ws"
        self._ws = await self._session.ws_connect(ws_url, heartbeat=None, max_msg_size=1 << 20)
        self.joined_at = time.monotonic()
        join = p.Join(
            type="join",
            token=self.token,
            publish=list(self.tracks),  # type: ignore[arg-type]
            videoCodecs=self._video_codecs,
        )
        await self.send(join)
        self._reader = asyncio.create_task(self._read())
        async with asyncio.timeout(timeout):
            ends = {
                asyncio.create_task(self._joined_event.wait()),
                asyncio.create_task(self._closed.wait()),
            }
            if may_wait:
                ends.add(asyncio.create_task(self._waiting_event.wait()))
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
            for task in ends:
                task.cancel()
        if self.joined is None and not (may_wait and self._waiting_event.is_set()):
            reason = self.errors[-1].message if self.errors else "closed"
            raise ConnectionError(f"join refused: {reason}")

    @property
    def resume_token(self) -> str | None:
        if self.joined is not None and self.joined.resumeToken:
            return self.joined.resumeToken
        waiting = [e for e in self.events if isinstance(e, p.Waiting) and e.resumeToken]
        return waiting[-1].resumeToken if waiting else None

    async def drop_socket(self) -> None:
        """Lose the signaling socket only (a tunnel, a stalled link): the media goes on."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._ws is not None:
            await self._ws.close()

    async def resume(self, timeout: float = 10.0) -> bool:
        """A new socket presenting the resume token: True if the session went on
        (``resumed``), False if the server made it a new join (``joined`` again)."""
        token = self.resume_token
        assert self._session is not None and token is not None
        self.resumed = False
        before = self.joined
        ws_url = self.base_url.replace("http", "ws", 1) + "/ws"
        self._ws = await self._session.ws_connect(ws_url, heartbeat=None, max_msg_size=1 << 20)
        self._closed.clear()
        self._joined_event.clear()
        await self.send(
            p.Join(
                type="join",
                token=self.token,
                publish=list(self.tracks),  # type: ignore[arg-type]
                videoCodecs=self._video_codecs,
                resume=token,
            )
        )
        self._reader = asyncio.create_task(self._read())
        ok = await self.wait_for(lambda: self.resumed or self.joined is not before, timeout)
        if not ok:
            raise ConnectionError("neither resumed nor joined")
        return self.resumed

    async def restart_media(self) -> None:
        """Ask for a new media connection (as after a network switch)."""
        await self.send(p.MediaRestart(type="media_restart"))

    async def send(self, message: p._Message) -> None:
        assert self._ws is not None
        await self._ws.send_str(p.dump(message))

    async def send_raw(self, data: str | bytes) -> None:
        assert self._ws is not None
        if isinstance(data, bytes):
            await self._ws.send_bytes(data)
        else:
            await self._ws.send_str(data)

    async def publish_extra(self, source: p.ExtraSource, clip: Clip) -> None:
        """Ask to publish ``clip`` as an extra video track of ``source``; it is sent on the
        m-line the server's next offer names for that source."""
        self.extra_tracks[source] = ClipTrack(clip)
        await self.send(p.PublishExtra(type="publish_extra", source=source))

    async def unpublish_extra(self, source: p.ExtraSource) -> None:
        await self.send(p.UnpublishExtra(type="unpublish_extra", source=source))
        track = self.extra_tracks.pop(source, None)
        for transceiver in self.pc.getTransceivers() if self.pc is not None else ():
            if track is not None and transceiver.sender.track is track:
                # Not track.stop(): that would end the sender's loop for good, and the
                # m-line is reused by the next extra track. Without a track it idles.
                transceiver.sender.replaceTrack(None)

    def frames_of(self, producer_id: str) -> int:
        """Frames received of one Producer, on whatever m-line carried it."""
        return sum(
            i.by_producer.get(producer_id, 0) for i in (*self._past_inbound, *self.inbound.values())
        )

    def published(self, participant_id: str, source: str) -> list[str]:
        """Ids of the Producers of ``source`` the participant opened, in order: announced
        (``track_published``) or, for those opened before this bot joined, offered."""
        ids = [
            e.producerId
            for e in self.events
            if isinstance(e, p.TrackPublished)
            and e.participantId == participant_id
            and e.source == source
        ]
        offered = [
            i.producer_id
            for i in (*self._past_inbound, *self.inbound.values())
            if i.participant_id == participant_id and i.source == source and i.producer_id
        ]
        return [*(x for x in dict.fromkeys(offered) if x not in ids), *ids]

    def frames_from(self, participant_id: str, kind: str) -> int:
        return sum(
            i.by_participant.get(participant_id, 0)
            for i in (*self._past_inbound, *self.inbound.values())
            if i.kind == kind
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
            old = self.pc
            if old is not None:
                # A new session after a resume that could not be: start over, keep counts.
                self._retire_connection()
            self.joined = message
            self.pc = self._new_pc(message.iceServers)
            self._joined_event.set()
            if old is not None:
                await old.close()
        elif isinstance(message, p.Resumed):
            self.resumed = True
            self.events.append(message)
        elif isinstance(message, p.MediaReset):
            # The media moved to another Worker: a new connection, the same session. What
            # was received so far still counts.
            self.events.append(message)
            self.media_resets += 1
            self._retire_connection()
            old, self.pc = self.pc, self._new_pc(self.joined.iceServers if self.joined else [])
            if old is not None:
                await old.close()
        elif isinstance(message, p.Offer):
            await self._answer(message)
        elif isinstance(message, p.Error):
            self.errors.append(message)
        elif isinstance(message, p.Bye):
            self.bye = message
        else:
            if isinstance(message, p.Waiting):
                self._waiting_event.set()
            self.events.append(message)

    def _retire_connection(self) -> None:
        """Before a new RTCPeerConnection: what was received still counts, and the tracks
        go on fresh (aiortc stops a sender's track with its connection)."""
        self._past_inbound += self.inbound.values()
        self.inbound, self._slots = {}, {}
        self.tracks = {kind: track.successor() for kind, track in self.tracks.items()}
        self.extra_tracks = {src: track.successor() for src, track in self.extra_tracks.items()}

    def _new_pc(self, ice_servers: list[p.IceServer]) -> RTCPeerConnection:
        pc = RTCPeerConnection(
            RTCConfiguration(
                iceServers=[
                    RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
                    for s in ice_servers
                ],
                bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
                iceTransportPolicy=(
                    RTCIceTransportPolicy.RELAY if self._relay_only else RTCIceTransportPolicy.ALL
                ),
            )
        )
        tolerate_close_while_connecting(pc)
        pc.on("track", self._on_track)
        return pc

    async def _answer(self, offer: p.Offer) -> None:
        assert self.pc is not None
        self.offers += 1
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        for slot in offer.tracks:
            self._slots[slot.mid] = slot
            transceiver = next(t for t in self.pc.getTransceivers() if t.mid == slot.mid)
            if slot.role == "publish":
                extra = slot.source not in (None, "camera", "microphone")
                track = (
                    self.extra_tracks.get(slot.source or "")
                    if extra
                    else self.tracks.get(slot.kind)
                )
                if track is not None and transceiver.sender.track is not track:
                    transceiver.sender.replaceTrack(track)
                    on_keyframe_request(transceiver.sender, track.request_keyframe)
                transceiver.direction = "sendonly" if track is not None else "inactive"
            elif slot.role == "consume":
                transceiver.direction = "recvonly"
                inbound = self.inbound.get(slot.mid)
                if inbound is not None:
                    inbound.participant_id = slot.participantId
                    inbound.producer_id = slot.producerId
                    inbound.source = slot.source
            else:
                transceiver.direction = "inactive"
                if transceiver.sender.track is not None:
                    # aiortc goes on sending on an inactive m-line while it has a track.
                    transceiver.sender.replaceTrack(None)
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        await self.send(p.Answer(type="answer", sdp=self.pc.localDescription.sdp))

    def _on_track(self, track: MediaStreamTrack) -> None:
        assert self.pc is not None
        transceiver = next(t for t in self.pc.getTransceivers() if t.receiver.track is track)
        mid = transceiver.mid or ""
        slot = self._slots.get(mid)
        inbound = Inbound(
            mid,
            track.kind,
            slot.participantId if slot else None,
            slot.producerId if slot else None,
            slot.source if slot else None,
        )
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
            if inbound.producer_id is not None:
                per = inbound.by_producer
                per[inbound.producer_id] = per.get(inbound.producer_id, 0) + 1
            if self._on_frame is not None:
                self._on_frame(inbound.kind, inbound.participant_id, frame.data, now)

        if self._receive_loss:
            simulate_receive_loss(transceiver.receiver, self._receive_loss)
        install_receiver_tap(
            transceiver.receiver, on_frame, starts_frame=frame_start_check(self._video_codec)
        )
