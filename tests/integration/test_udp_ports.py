"""The Worker's ICE sockets take UDP ports from a configured range (for a firewall)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from media.clips import Clip
from media.config import MediaConfig
from media.ice import restrict_ports
from rooms.roles import Role
from signaling.config import ServerConfig
from tests.integration.conftest import running

LOW, HIGH = 47100, 47119


@pytest.fixture
def ports_restored() -> Iterator[None]:
    yield
    restrict_ports(None)  # process-wide: the other tests bind anywhere again


async def test_candidates_are_in_the_range(
    tmp_path: Path, consultation: str, video_clip: Clip, ports_restored: None
) -> None:
    config = ServerConfig(
        data_dir=tmp_path,
        secret=secrets.token_bytes(32),
        media=MediaConfig(answer_timeout_s=5.0, udp_ports=(LOW, HIGH)),
        resume_grace_s=1.0,
    )
    async with running(replace(config)) as harness:
        offers: list[str] = []
        doctor = harness.bot(harness.token(consultation, Role.doctor), video=video_clip)
        patient = harness.bot(harness.token(consultation, Role.patient), video=video_clip)
        original = patient._answer

        async def keep(offer):  # type: ignore[no-untyped-def]
            offers.append(offer.sdp)
            await original(offer)

        patient._answer = keep  # type: ignore[method-assign]
        await doctor.connect()
        await patient.connect()
        assert await patient.wait_for(
            lambda: patient.frames_from(doctor.participant_id, "video") > 10, 10
        )
        ports = {
            int(m.group(1))
            for sdp in offers
            for m in re.finditer(r"a=candidate:\S+ \d+ udp \d+ \S+ (\d+) typ host", sdp)
        }
        assert ports and all(LOW <= port <= HIGH for port in ports), ports


def test_a_bad_range_is_refused() -> None:
    with pytest.raises(ValueError):
        restrict_ports((80, 90))
    with pytest.raises(ValueError):
        restrict_ports((50000, 40000))
