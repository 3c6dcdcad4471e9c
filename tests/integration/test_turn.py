"""Through a real coturn: a participant that can reach nothing but its TURN server, with
credentials minted for it alone (coturn's use-auth-secret REST scheme)."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from media.clips import Clip
from media.config import IceServer, MediaConfig
from media.turn import rest_credential
from rooms.roles import Role
from signaling.config import ServerConfig
from tests.conftest import CoturnServer
from tests.integration.conftest import Harness, running


@pytest.fixture
def turn(coturn: CoturnServer) -> str:
    return coturn.url


@pytest.fixture
def turn_secret(coturn: CoturnServer) -> bytes:
    return coturn.secret.encode()


@pytest.fixture
async def turn_harness(turn: str, turn_secret: bytes, tmp_path: Path) -> AsyncIterator[Harness]:
    config = ServerConfig(
        data_dir=tmp_path / "data",
        secret=secrets.token_bytes(32),
        media=MediaConfig(ice_servers=(IceServer((turn,)),), turn_secret=turn_secret),
    )
    async with running(config) as harness:
        yield harness


async def test_relay_only_participants_talk_through_turn(
    turn_harness: Harness, turn: str, consultation: str, video_clip: Clip, turn_secret: bytes
) -> None:
    harness = turn_harness
    doctor = harness.bot(harness.token(consultation, Role.doctor), video=video_clip)
    patient = harness.bot(
        harness.token(consultation, Role.patient), video=video_clip, relay_only=True
    )
    await doctor.connect()
    await patient.connect()
    # Each participant gets a credential of its own, naming only its opaque id, expiring.
    assert patient.joined is not None and doctor.joined is not None
    (handed,) = patient.joined.iceServers
    (doctors,) = doctor.joined.iceServers
    assert handed.urls == [turn]
    assert handed.username is not None and doctors.username is not None
    expiry, subject = handed.username.split(":")
    assert subject == patient.participant_id
    assert 11 * 3600 < int(expiry) - time.time() <= 12 * 3600
    assert handed.credential == rest_credential(turn_secret, subject, 1, now=int(expiry) - 1)[1]
    assert (doctors.username, doctors.credential) != (handed.username, handed.credential)
    assert await patient.wait_for(
        lambda: (
            patient.frames_from(doctor.participant_id, "video") > 30
            and doctor.frames_from(patient.participant_id, "video") > 30
        ),
        20,
    )
    # Relay-only: every candidate the patient offered was a TURN relay.
    assert patient.pc is not None
    transport = patient.pc.getTransceivers()[0].receiver.transport.transport
    kinds = {c.type for c in transport.iceGatherer.getLocalCandidates()}
    assert kinds == {"relay"}


async def test_an_expired_credential_is_refused_by_coturn(turn: str, turn_secret: bytes) -> None:
    """The credential really is checked by the TURN server: a stale one gets no relay."""
    from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

    async def relay_candidates(username: str, password: str) -> set[str]:
        pc = RTCPeerConnection(
            RTCConfiguration(
                iceServers=[RTCIceServer(urls=[turn], username=username, credential=password)]
            )
        )
        pc.addTransceiver("audio")
        try:
            await pc.setLocalDescription(await pc.createOffer())
            return {
                line.split()[7]
                for line in pc.localDescription.sdp.splitlines()
                if line.startswith("a=candidate:")
            }
        finally:
            await pc.close()

    good = rest_credential(turn_secret, "Pcheck", 600)
    stale = rest_credential(turn_secret, "Pcheck", 600, now=time.time() - 3600)
    forged = (good[0], rest_credential(b"not-the-secret", "Pcheck", 600)[1])
    assert "relay" in await relay_candidates(*good)
    assert "relay" not in await relay_candidates(*stale)
    assert "relay" not in await relay_candidates(*forged)


@pytest.mark.parametrize("for_observers", [False, True])
async def test_observers_get_a_relay_only_when_the_site_says_so(
    turn: str, tmp_path: Path, consultation: str, for_observers: bool, turn_secret: bytes
) -> None:
    """A receive-only observer needs no relay where the Worker is reachable (its own checks
    open the path): by default it gets the STUN server and no TURN credential."""
    config = ServerConfig(
        data_dir=tmp_path / "data",
        secret=secrets.token_bytes(32),
        media=MediaConfig(
            ice_servers=(IceServer(("stun:127.0.0.1:3478",)), IceServer((turn,))),
            turn_secret=turn_secret,
            turn_for_observers=for_observers,
        ),
    )
    async with running(config) as harness:
        observer = harness.bot(harness.token(consultation, Role.observer))
        expert = harness.bot(harness.token(consultation, Role.expert))
        await observer.connect()
        await expert.connect()
        assert observer.joined is not None and expert.joined is not None
        observers = {tuple(s.urls): s.username for s in observer.joined.iceServers}
        experts = {tuple(s.urls): s.username for s in expert.joined.iceServers}
        assert experts[(turn,)] is not None
        assert observers.keys() == (
            {("stun:127.0.0.1:3478",), (turn,)} if for_observers else {("stun:127.0.0.1:3478",)}
        )
        await observer.close()
        await expert.close()
