"""Revocation: a host removes someone or ends the consultation, a link is withdrawn from the
command line; the link stops working at once, across a restart, and nobody else is hurt."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import aiohttp
import pytest

from media.clips import Clip
from rooms.records.revocations import Scope
from rooms.roles import Role
from signaling import protocol as p
from signaling.bot import Bot
from signaling.cli.main import main as cli
from signaling.config import ServerConfig
from signaling.keys import load_or_create_secret
from signaling.tokens import mint
from tests.integration.conftest import Harness, running


def _token(harness: Harness, consultation: str, identity: str, role: Role) -> str:
    return mint(
        harness.config.secret,
        consultation_id=consultation,
        kind="joint",
        identity=identity,
        name="Wang Fang",
        role=role,
        waiting_room=False,
    )


async def _refused(harness: Harness, token: str) -> str:
    bot = Bot(harness.base_url, token)
    try:
        with pytest.raises(ConnectionError):
            await bot.connect(timeout=5)
        return bot.errors[-1].code
    finally:
        await bot.close(leave=False)


def _audited(harness: Harness, action: str) -> list[dict]:
    return [e for e in harness.server.audit.entries() if e["action"] == action]


async def test_a_removed_participant_is_ended_and_cannot_come_back(
    harness: Harness, consultation: str, video_clip: Clip
) -> None:
    doctor = harness.bot(harness.token(consultation, Role.doctor), video=video_clip)
    expert = harness.bot(harness.token(consultation, Role.expert), video=video_clip)
    relative = harness.bot(_token(harness, consultation, "rel-1", Role.patient), video=video_clip)
    for bot in (doctor, expert, relative):
        await bot.connect()
    assert await expert.wait_for(
        lambda: expert.frames_from(relative.participant_id, "video") > 5, 10
    )

    await doctor.send(p.Remove(type="remove", participantId=relative.participant_id))
    assert await relative.wait_for(lambda: relative.bye is not None, 5)
    assert relative.bye is not None and relative.bye.reason == "removed"
    # The same link, and any other link for the same person, no longer opens the room.
    assert await _refused(harness, relative.token) == "revoked_token"
    assert await _refused(harness, _token(harness, consultation, "rel-1", Role.patient)) == (
        "revoked_token"
    )
    # Everyone else goes on; the removal is in the audit log, by opaque ids only.
    before = expert.frames_from(doctor.participant_id, "video")
    assert await expert.wait_for(
        lambda: expert.frames_from(doctor.participant_id, "video") > before + 30, 5
    )
    (entry,) = _audited(harness, "revoked")
    assert (entry["scope"], entry["subject"], entry["reason"]) == ("identity", "rel-1", "removed")
    assert "Wang Fang" not in harness.server.audit.path.read_text()


async def test_only_the_host_may_remove_or_end(harness: Harness, consultation: str) -> None:
    doctor = harness.bot(harness.token(consultation, Role.doctor))
    patient = harness.bot(harness.token(consultation, Role.patient))
    await doctor.connect()
    await patient.connect()
    await patient.send(p.Remove(type="remove", participantId=doctor.participant_id))
    await patient.send(p.End(type="end"))
    await doctor.send(p.Remove(type="remove", participantId="Pnobody"))
    assert await patient.wait_for(lambda: len(patient.errors) == 2, 5)
    assert [e.code for e in patient.errors] == ["forbidden", "forbidden"]
    assert await doctor.wait_for(lambda: len(doctor.errors) == 1, 5)
    assert doctor.errors[0].code == "unexpected"
    assert doctor.bye is None and patient.bye is None
    assert _audited(harness, "revoked") == []


async def test_ending_the_consultation_ends_it_for_everyone_and_for_good(
    config: ServerConfig, consultation: str
) -> None:
    async with running(config) as harness:
        doctor = harness.bot(harness.token(consultation, Role.doctor))
        others = [harness.bot(harness.token(consultation, r)) for r in (Role.expert, Role.patient)]
        for bot in (doctor, *others):
            await bot.connect()
        await doctor.send(p.End(type="end"))
        for bot in (doctor, *others):
            assert await bot.wait_for(lambda b=bot: b.bye is not None, 5)
            assert bot.bye is not None and bot.bye.reason == "consultation_ended"
        assert await _refused(harness, harness.token(consultation, Role.doctor)) == (
            "revoked_token"
        )
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{harness.base_url}/join/{others[1].token}?lang=en") as r:
                assert r.status == 401
                assert "This consultation has ended." in await r.text()
    # A restart forgets live state (the in-memory RoomStore), not the revocation.
    async with running(config) as harness:
        assert await _refused(harness, harness.token(consultation, Role.doctor)) == (
            "revoked_token"
        )


async def test_a_link_revoked_from_the_command_line_ends_its_session(
    tmp_path: Path, consultation: str, video_clip: Clip, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TELECONSULT_SECRET", raising=False)
    data_dir = tmp_path / "data"
    # The secret file `serve` and the CLI both read.
    config = ServerConfig(data_dir=data_dir, secret=load_or_create_secret(data_dir))
    async with running(config) as harness:
        doctor = harness.bot(harness.token(consultation, Role.doctor), video=video_clip)
        guest_token = _token(harness, consultation, "guest-1", Role.observer)
        guest = harness.bot(guest_token)
        same_person_other_link = _token(harness, consultation, "guest-1", Role.observer)
        await doctor.connect()
        await guest.connect()

        url = f"{harness.base_url}/join/{guest_token}"
        revoke = ["revoke", "--token", url, "--data-dir", str(data_dir)]
        assert await asyncio.to_thread(cli, revoke) == 0
        # Another process wrote it: the server finds it on its next poll (every 2 s).
        assert await guest.wait_for(lambda: guest.bye is not None, 6)
        assert guest.bye is not None and guest.bye.reason == "removed"
        assert await _refused(harness, guest_token) == "revoked_token"
        # Only that link: the same person's other link still works.
        other = harness.bot(same_person_other_link)
        await other.connect()
        assert other.joined is not None and doctor.bye is None
        (entry,) = _audited(harness, "revoked")
        assert entry["scope"] == "token" and entry["by"].startswith("cli:")


async def test_a_revoked_link_gets_its_own_page(harness: Harness, consultation: str) -> None:
    token = _token(harness, consultation, "late-1", Role.patient)
    await harness.server.revocation.revoke(
        consultation, Scope.identity, "late-1", reason="removed", by="test"
    )
    async with aiohttp.ClientSession() as http:
        for lang, text in (("en", "withdrawn by the doctor"), ("zh-CN", "医生已撤销此邀请链接")):
            async with http.get(f"{harness.base_url}/join/{token}?lang={lang}") as r:
                assert r.status == 401
                body = await r.text()
                assert text in body and token not in body


async def test_a_join_racing_a_revocation_is_ended(harness: Harness, consultation: str) -> None:
    """The database said yes, then the revocation landed before the join reached the Hub."""
    guard = harness.server.revocation
    real_check = guard.check
    token = _token(harness, consultation, "racer", Role.patient)

    async def check_then_revoke(grant: object) -> None:
        await real_check(grant)  # type: ignore[arg-type]
        await guard.revoke(consultation, Scope.identity, "racer", reason="removed", by="test")

    guard.check = check_then_revoke  # type: ignore[method-assign]
    bot = harness.bot(token)
    await bot.connect()
    assert await bot.wait_for(lambda: bot.bye is not None, 5)
    assert bot.bye is not None and bot.bye.reason == "removed"
    assert await bot.wait_for(lambda: harness.worker.stats().sessions == 0, 5)


def test_the_cli_refuses_tokens_of_another_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TELECONSULT_SECRET", raising=False)
    foreign = mint(
        secrets.token_bytes(32),
        consultation_id="cons-12345",
        kind="joint",
        identity="u-1",
        name="x",
        role="patient",
    )
    assert cli(["revoke", "--token", foreign, "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a token of this server" in err and foreign not in err


async def test_recordings_stay_reachable_after_the_end_but_not_to_the_removed(
    harness: Harness, consultation: str
) -> None:
    doctor = harness.token(consultation, Role.doctor)
    removed_expert = _token(harness, consultation, "exp-9", Role.expert)
    guard = harness.server.revocation
    await guard.revoke(consultation, Scope.identity, "exp-9", reason="removed", by="test")
    await guard.revoke(consultation, Scope.consultation, reason="ended", by="test")
    url = f"{harness.base_url}/api/consultations/{consultation}/recordings"
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers={"Authorization": f"Bearer {doctor}"}) as r:
            assert r.status == 200
        async with http.get(url, headers={"Authorization": f"Bearer {removed_expert}"}) as r:
            assert r.status == 401
