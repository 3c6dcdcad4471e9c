"""The encoded-frame tap against the pinned aiortc: fails loudly if an upgrade moves it."""

from __future__ import annotations

import asyncio

import aiortc
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver
from aiortc.mediastreams import MediaStreamTrack

from media.clips import Clip, ClipTrack
from media.codecs import frame_start_check
from media.rate import LinkReport
from media.tap import (
    TESTED_AIORTC,
    TapError,
    install_receiver_tap,
    on_keyframe_request,
    on_link_report,
    simulate_receive_loss,
)
from rooms.roles import Role
from tests.integration.conftest import Counter, Harness


def test_pinned_version() -> None:
    assert aiortc.__version__ == TESTED_AIORTC


async def test_tap_refuses_a_receiver_whose_thread_runs() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transceiver = pc.addTransceiver("video", direction="recvonly")
    receiver: RTCRtpReceiver = transceiver.receiver
    receiver._RTCRtpReceiver__decoder_thread = object()  # type: ignore[attr-defined]
    with pytest.raises(TapError):
        install_receiver_tap(receiver, lambda *a: None, starts_frame=lambda b: True)
    await pc.close()


async def test_frames_pass_byte_exact_and_nothing_decodes(
    video_clip: Clip, audio_clip: Clip, decoder_calls: Counter
) -> None:
    """Two bare aiortc peers: what the sender's ClipTrack sends arrives unchanged."""
    sender_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    sent: list[bytes] = []
    received: dict[str, list[bytes]] = {"video": [], "audio": []}
    tracks = [ClipTrack(video_clip, lambda d, t: sent.append(d)), ClipTrack(audio_clip)]
    for track in tracks:
        on_keyframe_request(sender_pc.addTrack(track), track.request_keyframe)

    def on_track(track: MediaStreamTrack) -> None:
        t = next(t for t in receiver_pc.getTransceivers() if t.receiver.track is track)
        install_receiver_tap(
            t.receiver,
            lambda codec, frame, lost, kind=track.kind: received[kind].append(frame.data),
            starts_frame=frame_start_check("VP8"),
        )

    receiver_pc.on("track", on_track)
    try:
        await sender_pc.setLocalDescription(await sender_pc.createOffer())
        await receiver_pc.setRemoteDescription(sender_pc.localDescription)
        await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
        await sender_pc.setRemoteDescription(receiver_pc.localDescription)
        async with asyncio.timeout(15):
            while len(received["video"]) < 40 or len(received["audio"]) < 40:
                await asyncio.sleep(0.05)
    finally:
        await sender_pc.close()
        await receiver_pc.close()
    # Byte-exact, in order: the receiving side reassembled exactly the sent frames.
    assert received["video"][:40] == sent[: len(received["video"])][:40]
    assert set(received["audio"]) <= set(audio_clip.frames)
    assert decoder_calls.calls == 0


async def test_server_decodes_and_encodes_nothing(
    harness: Harness, consultation: str, video_clip: Clip, audio_clip: Clip, decoder_calls: Counter
) -> None:
    bots = [
        harness.bot(harness.token(consultation, role), video=video_clip, audio=audio_clip)
        for role in (Role.doctor, Role.patient)
    ]
    await asyncio.gather(*(b.connect() for b in bots))
    a, b = bots
    assert await a.wait_for(
        lambda: (
            a.frames_from(b.participant_id, "video") > 60
            and b.frames_from(a.participant_id, "video") > 60
        ),
        timeout=15,
    )
    assert decoder_calls.calls == 0


async def test_link_reports_and_simulated_loss_on_bare_peers(video_clip: Clip) -> None:
    """on_link_report hears the receiver's reports about one sender (aiortc still handles
    them: its RTT comes through); simulate_receive_loss makes the loss the reports show."""
    sender_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    track = ClipTrack(video_clip)
    sender = sender_pc.addTrack(track)
    on_keyframe_request(sender, track.request_keyframe)
    reports: list[LinkReport] = []
    on_link_report(sender, reports.append)

    def on_track(t: MediaStreamTrack) -> None:
        tr = next(x for x in receiver_pc.getTransceivers() if x.receiver.track is t)
        simulate_receive_loss(tr.receiver, 0.3)
        install_receiver_tap(tr.receiver, lambda *a: None, starts_frame=frame_start_check("VP8"))

    receiver_pc.on("track", on_track)
    try:
        await sender_pc.setLocalDescription(await sender_pc.createOffer())
        await receiver_pc.setRemoteDescription(sender_pc.localDescription)
        await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
        await sender_pc.setRemoteDescription(receiver_pc.localDescription)
        async with asyncio.timeout(20):
            while len([r for r in reports if r.fraction_lost is not None]) < 4:
                await asyncio.sleep(0.1)
    finally:
        await sender_pc.close()
        await receiver_pc.close()
    losses = [r.fraction_lost for r in reports if r.fraction_lost is not None]
    assert max(losses) > 0.1, losses  # the simulated 30 % shows in the receiver's reports
    assert any(r.round_trip_s is not None for r in reports)  # aiortc handled them first
    assert any(r.remb_bps for r in reports)  # aiortc's receiver sends REMB too


async def test_link_report_refuses_a_changed_sender() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    sender = pc.addTransceiver("video", direction="sendonly").sender
    sender._handle_rtcp_packet = None  # type: ignore[assignment,method-assign]
    with pytest.raises(TapError):
        on_link_report(sender, lambda r: None)
    await pc.close()
