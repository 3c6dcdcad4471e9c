"""Retention shreds a consultation's clinical records with its recordings (one data key), and
``teleconsult opinions verify`` checks every signed opinion: a changed byte in the stored
opinion or its signature is reported and fails the command."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from recordings.crypto import load_or_create_master_key
from recordings.store import RecordingStore
from rooms.records.access import Actor
from rooms.records.attachments import MediaType, new_attachment_id
from rooms.records.clinic import Clinic
from rooms.records.clinical import TextState
from rooms.records.database import SQLITE_FILE, Database
from rooms.records.frontdesk import FrontDesk
from rooms.records.opinions import Check, OpinionFields
from rooms.records.passwords import Passwords
from rooms.records.quality import QualityRow
from rooms.records.sites import SiteKind
from rooms.roles import StaffRole
from signaling.cli.main import main
from signaling.console.attachments import AttachmentFiles
from signaling.console.cipher import KeystoreCipher
from tests.clinic_images import pdf

ROOT = Actor.command_line("tests")
FIELDS = OpinionFields.checked(
    findings="Sinus rhythm", impression="Normal ECG", recommendations="No treatment needed"
)


@dataclass
class Filed:
    consultation: str
    request: str
    opinion: str
    attachment: str
    attachment_path: Path


async def _with_clinic(data_dir: Path, body):  # type: ignore[no-untyped-def]
    master = load_or_create_master_key(data_dir)
    database = Database.for_data_dir(data_dir)
    await database.upgrade()
    try:
        desk = FrontDesk.build(database, master, passwords=Passwords.for_tests())
        store = RecordingStore(data_dir, master)
        clinic = Clinic.build(database, desk, KeystoreCipher(store.keystore))
        return await body(desk, clinic, store)
    finally:
        await database.close()


def _file_one(data_dir: Path) -> Filed:
    async def body(desk: FrontDesk, clinic: Clinic, store: RecordingStore) -> Filed:
        thc = await desk.sites.create(ROOT, SiteKind.township_health_centre, "THC")
        hosp = await desk.sites.create(ROOT, SiteKind.expert_hospital, "Hospital")
        cardio = await desk.sites.add_department(ROOT, hosp.id, "Cardiology")
        await desk.sites.partner(ROOT, thc.id, cardio.id)
        doctor = await desk.staff.add(
            ROOT,
            username="dr-wang",
            display_name="Dr. Wang",
            password="x" * 12 + "abcd",
            role=StaffRole.doctor,
            site_id=thc.id,
        )
        expert = await desk.staff.add(
            ROOT,
            username="dr-zhang",
            display_name="Dr. Zhang",
            password="x" * 12 + "abcd",
            role=StaffRole.expert,
            site_id=hosp.id,
        )
        request, c = await clinic.requests.create(
            doctor.actor, cardio.id, urgency="urgent", reason="Palpitations", patient="Zhao"
        )
        await clinic.requests.accept(
            expert.actor, request.id, datetime.now(UTC) + timedelta(days=1), 30
        )
        opinion = await clinic.opinions.file(expert, c.id, FIELDS)
        files = AttachmentFiles(store)
        attachment_id = new_attachment_id()
        sha = await files.save(c.id, attachment_id, pdf())
        await clinic.attachments.add(
            doctor.actor,
            c.id,
            attachment_id=attachment_id,
            media_type=MediaType.pdf,
            size=len(pdf()),
            sha256=sha,
            name="ecg report.pdf",
        )
        return Filed(c.id, request.id, opinion.id, attachment_id, files.path(c.id, attachment_id))

    return asyncio.run(_with_clinic(data_dir, body))


def _tamper(data_dir: Path, column: str, opinion_id: str) -> bytes:
    with sqlite3.connect(data_dir / SQLITE_FILE) as db:
        (value,) = db.execute(
            f"SELECT {column} FROM opinions WHERE id = ?", (opinion_id,)
        ).fetchone()
        changed = bytearray(value)
        changed[len(changed) // 2] ^= 0x04
        db.execute(f"UPDATE opinions SET {column} = ? WHERE id = ?", (bytes(changed), opinion_id))
    return bytes(value)


def _restore(data_dir: Path, column: str, opinion_id: str, value: bytes) -> None:
    with sqlite3.connect(data_dir / SQLITE_FILE) as db:
        db.execute(f"UPDATE opinions SET {column} = ? WHERE id = ?", (value, opinion_id))


def test_opinions_verify_reports_every_changed_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TELECONSULT_MASTER_KEY", raising=False)
    monkeypatch.delenv("TELECONSULT_DATABASE_URL", raising=False)
    filed = _file_one(tmp_path)
    argv = ["opinions", "verify", "--data-dir", str(tmp_path)]
    assert main(argv) == 0
    assert "1 opinions checked: 1 verified, 0 failed, 0 shredded" in capsys.readouterr().out
    for column, check in (("body_sealed", "unreadable"), ("signature", "bad_signature")):
        original = _tamper(tmp_path, column, filed.opinion)
        assert main(argv) == 1, column
        out = capsys.readouterr().out
        assert f"FAILED {filed.opinion} consultation {filed.consultation} version 1: {check}" in out
        assert "Sinus" not in out and "Zhao" not in out
        assert main([*argv, "--consultation", "another-consultation"]) == 0
        capsys.readouterr()
        _restore(tmp_path, column, filed.opinion, original)
    assert main(argv) == 0
    assert main([*argv, "--consultation", "bad id!"]) == 2


def test_a_purge_shreds_the_records_and_files_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TELECONSULT_MASTER_KEY", raising=False)
    monkeypatch.delenv("TELECONSULT_DATABASE_URL", raising=False)
    filed = _file_one(tmp_path)
    assert filed.attachment_path.exists()
    assert main(["recordings", "--data-dir", str(tmp_path), "purge", "--older-than", "0"]) == 0
    out = capsys.readouterr().out
    assert f"purged {filed.consultation}" in out and "clinical records are unreadable" in out
    assert not filed.attachment_path.exists()

    async def body(desk: FrontDesk, clinic: Clinic, store: RecordingStore) -> None:
        assert not store.keystore.has_key(filed.consultation)
        doctor = await desk.staff.by_username("dr-wang")
        assert doctor is not None
        c = await clinic.consultations.get(doctor.actor, filed.consultation)
        assert (await clinic.consultations.patient_name(c)).state is TextState.shredded
        request = await clinic.requests.get(doctor.actor, filed.request)
        assert (await clinic.requests.reason(request)).state is TextState.shredded
        (attachment,) = await clinic.attachments.list(doctor.actor, c.id)
        assert (await clinic.attachments.name(attachment)).state is TextState.shredded
        (opinion,) = await clinic.opinions.versions(doctor.actor, c.id)
        assert (await clinic.opinions.read(opinion)).check is Check.shredded
        # What is left says who, when and in what state: no content.
        assert request.status == "accepted" and attachment.media_type is MediaType.pdf

    asyncio.run(_with_clinic(tmp_path, body))
    assert main(["opinions", "verify", "--data-dir", str(tmp_path)]) == 0
    assert "1 opinions checked: 0 verified, 0 failed, 1 shredded" in capsys.readouterr().out


def test_a_purge_deletes_the_call_quality_of_what_it_purged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TELECONSULT_MASTER_KEY", raising=False)
    monkeypatch.delenv("TELECONSULT_DATABASE_URL", raising=False)
    filed = _file_one(tmp_path)
    sample = QualityRow("P0123456789ab", "doctor", datetime.now(UTC), 5.0, fps_in=30.0)

    async def store_samples(desk: FrontDesk, clinic: Clinic, store: RecordingStore) -> str:
        doctor = await desk.staff.by_username("dr-wang")
        assert doctor is not None
        held, _ = await clinic.consultations.start_now(doctor.actor, "joint", patient="Li")
        batches = {filed.consultation: [sample], held.id: [sample, sample], "no-record": [sample]}
        # A call by a bare link has no record: its samples are not kept at all.
        assert await clinic.quality.add(batches) == 3
        return held.id

    held = asyncio.run(_with_clinic(tmp_path, store_samples))
    assert main(["recordings", "--data-dir", str(tmp_path), "hold", held]) == 0
    assert main(["recordings", "--data-dir", str(tmp_path), "purge", "--older-than", "0"]) == 0
    out = capsys.readouterr().out
    assert f"purged {filed.consultation}" in out and f"kept {held}" in out
    assert "1 call quality samples of purged consultations deleted" in out

    async def remaining(desk: FrontDesk, clinic: Clinic, store: RecordingStore) -> list[str]:
        return await clinic.quality.consultations()

    assert asyncio.run(_with_clinic(tmp_path, remaining)) == [held]
