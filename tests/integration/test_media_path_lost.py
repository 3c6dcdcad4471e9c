"""A media path that dies while the signaling socket lives: the server gives the participant
new media (media_reset, a new connection) with back-off, and the call comes back by itself;
if it keeps failing, the session ends: bye, teardown."""

from __future__ import annotations

import aioice.ice
import pytest
from aiortc import RTCPeerConnection

from media.clips import Clip
from rooms.roles import Role
from signaling import protocol as p
from signaling.bot import Bot
from tests.integration.conftest import Harness


def _block_udp(pc: RTCPeerConnection) -> None:
    """As a firewall that starts dropping UDP would: nothing in or out, sockets stay open."""
    connections = {t.receiver.transport.transport._connection for t in pc.getTransceivers()}
    for connection in connections:
        for protocol in connection._protocols:
            protocol.datagram_received = lambda data, addr: None
            protocol.transport.sendto = lambda data, addr=None: None


@pytest.fixture
def quick_consent(monkeypatch: pytest.MonkeyPatch) -> None:
    # aioice checks consent every 5 s and gives up after 6 failures in a row (~30 s), as
    # module constants it reads on every check: shortened here, in this process only, so a
    # blocked path is given up on after ~2 s instead.
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.5)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 3)


async def _call(harness: Harness, consultation: str, **media: Clip) -> tuple[Bot, Bot]:
    doctor, patient = (
        harness.bot(harness.token(consultation, role), **media)
        for role in (Role.doctor, Role.patient)
    )
    await doctor.connect()
    await patient.connect()
    assert await doctor.wait_for(
        lambda: doctor.frames_from(patient.participant_id, "video") > 10, timeout=15
    )
    return doctor, patient


@pytest.mark.parametrize("how", ["udp_blocked", "peer_connection_closed"])
async def test_a_media_path_that_dies_comes_back_by_itself(
    harness: Harness,
    consultation: str,
    video_clip: Clip,
    audio_clip: Clip,
    quick_consent: None,
    how: str,
) -> None:
    doctor, patient = await _call(harness, consultation, video=video_clip, audio=audio_clip)
    assert patient.pc is not None
    if how == "udp_blocked":
        _block_udp(patient.pc)  # this connection only: the new one gets through
    else:
        await patient.pc.close()  # DTLS close_notify: the Worker's connection closes at once

    # Only the server can notice (the signaling socket is fine): it sends new media.
    assert await patient.wait_for(lambda: patient.media_resets == 1, 15)
    before = doctor.frames_from(patient.participant_id, "video")
    assert await doctor.wait_for(
        lambda: doctor.frames_from(patient.participant_id, "video") > before + 20, 15
    )
    assert patient.bye is None
    assert not any(
        isinstance(e, p.ParticipantLeft) and e.participantId == patient.participant_id
        for e in doctor.events
    )
    assert "media_recovered" in [e["action"] for e in harness.server.audit.entries()]


async def test_media_that_keeps_failing_ends_the_session(
    harness: Harness,
    consultation: str,
    video_clip: Clip,
    audio_clip: Clip,
    quick_consent: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from signaling.room import room as room_module

    monkeypatch.setattr(room_module, "MEDIA_RECOVERIES", 1)
    doctor, patient = await _call(harness, consultation, video=video_clip, audio=audio_clip)
    # Every new connection of this client is blocked too, as behind a firewall that stays shut.
    new_pc = patient._new_pc

    def blocked_pc(ice_servers: list[p.IceServer]) -> RTCPeerConnection:
        pc = new_pc(ice_servers)
        pc.on(
            "connectionstatechange",
            lambda: _block_udp(pc) if pc.connectionState == "connected" else None,
        )
        return pc

    patient._new_pc = blocked_pc  # type: ignore[method-assign]
    assert patient.pc is not None
    _block_udp(patient.pc)

    # The signaling socket is still up: only the server can end this session.
    assert await patient.wait_for(lambda: patient.bye is not None, 30)
    assert "media connection" in patient.bye.reason  # type: ignore[union-attr]
    assert patient.media_resets == 1
    # participant_left goes out once the teardown is through (Worker, Room, store).
    assert await doctor.wait_for(
        lambda: any(
            isinstance(e, p.ParticipantLeft) and e.participantId == patient.participant_id
            for e in doctor.events
        ),
        5,
    )
    server = harness.server
    assert harness.worker.stats().sessions == 1
    assert [x.id for x in await server.store.participants(consultation)] == [doctor.participant_id]
    assert harness.room(consultation) is not None
    assert patient.participant_id not in harness.room(consultation).members  # type: ignore[union-attr]
    assert await patient.wait_for(lambda: patient.close_code is not None, 5)
