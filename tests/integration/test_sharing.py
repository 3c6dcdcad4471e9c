"""Chat and shared images in a call, with real bots over real sockets: chat reaches everyone
admitted and not the waiting room, is kept (sealed) with a consultation's record and handed
to newcomers and reloads; images are uploaded and fetched over HTTP by those in the call
only, and the presenter's pointer reaches the others."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest

from rooms.records.access import Actor
from rooms.records.passwords import Passwords
from rooms.records.sites import SiteKind
from rooms.roles import Role, StaffRole
from signaling import protocol as p
from signaling.bot import Bot
from signaling.console.clinic import CLINIC
from tests import dicom_files
from tests.clinic_images import GPS_MARK, jpeg_with_gps
from tests.integration.conftest import Harness

TIMEOUT = 10.0
PATIENT = "Zhao Xiaoming 赵小明"


def _of(bot: Bot, kind: type[Any]) -> list[Any]:
    return [e for e in bot.events if isinstance(e, kind)]


def _chat(bot: Bot) -> list[p.ChatMessage]:
    return _of(bot, p.ChatMessage)


def _history(bot: Bot) -> list[p.ChatEntry]:
    return [m for h in _of(bot, p.ChatHistory) for m in h.messages]


async def _say(bot: Bot, text: str) -> None:
    await bot.send(p.Chat(type="chat", text=text))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _record(harness: Harness) -> str:
    """A consultation with a record, as the front desk makes one ("start now")."""
    service = harness.http.app[CLINIC]
    desk = service.frontdesk.desk
    desk.staff.passwords = Passwords.for_tests()
    root = Actor.command_line("tests")
    site = await desk.sites.create(root, SiteKind.township_health_centre, "Hetian THC")
    doctor = await desk.staff.add(
        root,
        username="dr-wang",
        display_name="Dr. Wang",
        password="a long enough password",
        role=StaffRole.doctor,
        site_id=site.id,
    )
    c = await service.start_now(doctor.actor, "joint", 30, PATIENT)
    return c.id


# ------------------------------------------------------------------ chat


async def test_chat_reaches_everyone_admitted_and_not_the_waiting_room(
    harness: Harness, consultation: str
) -> None:
    doctor = harness.bot(harness.token(consultation, Role.doctor, "Dr. Li"))
    expert = harness.bot(harness.token(consultation, Role.expert, "Dr. Chen"))
    patient = harness.bot(harness.token(consultation, Role.patient, PATIENT))
    waiter = harness.bot(harness.token(consultation, Role.patient, "Waits", waiting_room=True))
    for bot in (doctor, expert, patient):
        await bot.connect()
    await waiter.connect(may_wait=True)

    text = "<img src=x onerror=alert(1)> 请明天复诊"
    await _say(patient, f"  {text}\n")
    for bot in (doctor, expert, patient):
        assert await bot.wait_for(lambda b=bot: len(_chat(b)) == 1, TIMEOUT)
        message = _chat(bot)[0]
        assert message.text == text  # trimmed, otherwise exactly as sent: pages show text
        assert (message.participantId, message.name, message.role) == (
            patient.participant_id,
            PATIENT,
            "patient",
        )
    await asyncio.sleep(0.3)
    assert not _chat(waiter) and not _history(waiter)

    # From the waiting room nothing is taken.
    await _say(waiter, "let me in")
    assert await waiter.wait_for(lambda: any(e.code == "not_admitted" for e in waiter.errors), 5)
    await asyncio.sleep(0.3)
    assert len(_chat(doctor)) == 1

    # Let in: the chat so far, then what follows.
    await doctor.send(p.Admit(type="admit", participantId=_waiting_id(doctor)))
    assert await waiter.wait_for(lambda: waiter.joined is not None, TIMEOUT)
    assert await waiter.wait_for(lambda: len(_history(waiter)) == 1, TIMEOUT)
    assert _history(waiter)[0].text == text

    # Audited by id and length, never the words.
    harness.server.audit.flush()
    log = harness.server.audit.path.read_text(encoding="utf-8")
    entries = [e for e in harness.server.audit.entries() if e["action"] == "chat"]
    assert len(entries) == 1 and entries[0]["chars"] == len(text)
    assert "复诊" not in log and "onerror" not in log and "Xiaoming" not in log


def _waiting_id(host: Bot) -> str:
    rooms = _of(host, p.WaitingRoom)
    assert rooms and rooms[-1].waiting
    return rooms[-1].waiting[0].id


async def test_chat_history_after_a_new_session(harness: Harness, consultation: str) -> None:
    doctor = harness.bot(harness.token(consultation, Role.doctor, "Dr. Li"))
    token = harness.token(consultation, Role.patient, PATIENT)
    patient = harness.bot(token)
    await doctor.connect()
    await patient.connect()
    for i in range(3):
        await _say(doctor if i % 2 == 0 else patient, f"line {i}")
        await asyncio.sleep(0.05)
    assert await patient.wait_for(lambda: len(_chat(patient)) == 3, TIMEOUT)

    # A reload: a new socket and a new session with the same link.
    await patient.close()
    again = harness.bot(token)
    await again.connect()
    assert await again.wait_for(lambda: len(_history(again)) == 3, TIMEOUT)
    assert [m.text for m in _history(again)] == ["line 0", "line 1", "line 2"]
    assert again.participant_id != patient.participant_id


async def test_chat_is_kept_sealed_with_the_record_and_outlives_the_room(
    harness: Harness,
) -> None:
    consultation = await _record(harness)
    doctor = harness.bot(harness.token(consultation, Role.doctor, "Dr. Li"))
    await doctor.connect()
    secret_text = "Hemoglobin 71 g/L; transfuse"
    await _say(doctor, secret_text)
    assert await doctor.wait_for(lambda: len(_chat(doctor)) == 1, TIMEOUT)
    await asyncio.sleep(0.3)  # the row is written beside the call
    await doctor.close()
    assert await _until(lambda: harness.room(consultation) is None)

    # The Room is gone: a newcomer's history comes from the record.
    later = harness.bot(harness.token(consultation, Role.expert, "Dr. Chen"))
    await later.connect()
    assert await later.wait_for(lambda: len(_history(later)) == 1, TIMEOUT)
    assert _history(later)[0].text == secret_text
    assert _history(later)[0].name == "Dr. Li"

    # Sealed at rest: neither the text nor the name is in the database's files.
    files = list(harness.config.data_dir.glob("records.db*"))
    raw = b"".join(f.read_bytes() for f in files)
    assert files and b"msg_" in raw  # the row is there...
    assert b"Hemoglobin" not in raw and b"Dr. Li" not in raw  # ...sealed


async def _until(predicate: Any, timeout: float = TIMEOUT) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_chat_is_rate_limited_per_person(harness: Harness, consultation: str) -> None:
    doctor = harness.bot(harness.token(consultation, Role.doctor, "Dr. Li"))
    await doctor.connect()
    for i in range(12):
        await _say(doctor, f"flood {i}")
    assert await doctor.wait_for(
        lambda: any(e.code == "rate_limited" and e.ref == "chat" for e in doctor.errors), TIMEOUT
    )
    await asyncio.sleep(0.5)
    assert 5 <= len(_chat(doctor)) < 12
    # The socket lives: ping still answered.
    await doctor.send(p.Ping(type="ping", ts=7.0))
    assert await doctor.wait_for(lambda: any(isinstance(e, p.Pong) for e in doctor.events), 5)


# ------------------------------------------------------------------ images


async def _upload(
    harness: Harness,
    http: aiohttp.ClientSession,
    consultation: str,
    token: str,
    data: bytes,
    name: str = "file.bin",
) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    async with http.post(
        f"{harness.base_url}/api/consultations/{consultation}/images",
        data=form,
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        body = await resp.text()
        try:
            return resp.status, json.loads(body)
        except ValueError:
            return resp.status, {"text": body}


async def _fetch(
    harness: Harness,
    http: aiohttp.ClientSession,
    consultation: str,
    token: str,
    image: str,
    preset: str,
) -> tuple[int, bytes, str]:
    async with http.get(
        f"{harness.base_url}/api/consultations/{consultation}/images/{image}/{preset}",
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        return resp.status, await resp.read(), resp.headers.get("Content-Type", "")


@pytest.mark.parametrize("kept", ["ad-hoc", "record"])
async def test_a_dicom_image_is_shared_fetched_by_the_call_only_and_pointed_at(
    harness: Harness, consultation: str, http: aiohttp.ClientSession, kept: str
) -> None:
    if kept == "record":
        consultation = await _record(harness)
    doctor_token = harness.token(consultation, Role.doctor, "Dr. Li")
    patient_token = harness.token(consultation, Role.patient, PATIENT)
    waiter_token = harness.token(consultation, Role.patient, "Waits", waiting_room=True)
    doctor, patient = harness.bot(doctor_token), harness.bot(patient_token)
    waiter = harness.bot(waiter_token)
    await doctor.connect()
    await patient.connect()
    await waiter.connect(may_wait=True)

    status, image = await _upload(harness, http, consultation, doctor_token, dicom_files.ct_slice())
    assert status == 201, image
    assert image["kind"] == "dicom" and image["presets"] == ["soft_tissue", "lung", "bone", "file"]
    assert image["info"] == {
        "modality": "CT",
        "bodyPart": "CHEST",
        "sliceThickness": 1.25,
        "frames": 1,
    }
    await doctor.send(p.Share(type="share", imageId=image["id"], preset="lung"))
    for bot in (doctor, patient):
        assert await bot.wait_for(lambda b=bot: bool(_of(b, p.Shared)), TIMEOUT)
        shared = _of(bot, p.Shared)[0]
        assert (shared.imageId, shared.preset, shared.by) == (
            image["id"],
            "lung",
            doctor.participant_id,
        )
        assert "Wang" not in p.dump(shared) and "88412" not in p.dump(shared)
    await asyncio.sleep(0.2)
    assert not _of(waiter, p.Shared)

    # Everyone in the call fetches each preset; nobody else does.
    for preset in image["presets"]:
        status, png, content_type = await _fetch(
            harness, http, consultation, patient_token, image["id"], preset
        )
        assert status == 200 and content_type == "image/png"
        picture = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        assert picture.shape == (64, 96)
        assert not any(marker in png for marker in dicom_files.PATIENT_MARKERS)
    status, _, _ = await _fetch(harness, http, consultation, waiter_token, image["id"], "lung")
    assert status == 403
    other = harness.token("another-consultation", Role.doctor, "Dr. Li")
    status, _, _ = await _fetch(harness, http, consultation, other, image["id"], "lung")
    assert status == 403
    status, _, _ = await _fetch(harness, http, consultation, "not-a-token", image["id"], "lung")
    assert status == 401
    status, _, _ = await _fetch(harness, http, consultation, patient_token, image["id"], "nope")
    assert status == 404

    # The presenter's pointer reaches the others; nobody else may move it.
    await doctor.send(p.Pointer(type="pointer", x=0.25, y=0.75))
    assert await patient.wait_for(lambda: bool(_of(patient, p.PointerMoved)), TIMEOUT)
    moved = _of(patient, p.PointerMoved)[-1]
    assert (moved.participantId, moved.x, moved.y) == (doctor.participant_id, 0.25, 0.75)
    await patient.send(p.Pointer(type="pointer", x=0.5, y=0.5))
    assert await patient.wait_for(
        lambda: any(e.code == "forbidden" and e.ref == "pointer" for e in patient.errors), 5
    )
    await asyncio.sleep(0.2)
    assert not _of(doctor, p.PointerMoved)

    # A newcomer (the waiter let in) is shown what everyone sees.
    await doctor.send(p.Admit(type="admit", participantId=_waiting_id(doctor)))
    assert await waiter.wait_for(lambda: bool(_of(waiter, p.Shared)), TIMEOUT)
    status, _, _ = await _fetch(harness, http, consultation, waiter_token, image["id"], "bone")
    assert status == 200

    # The presenter leaves: the image closes for everyone.
    await doctor.close()
    assert await patient.wait_for(lambda: bool(_of(patient, p.ShareEnded)), TIMEOUT)


async def test_a_photo_is_shared_without_exif_and_bad_uploads_get_reasons(
    harness: Harness, consultation: str, http: aiohttp.ClientSession
) -> None:
    patient_token = harness.token(consultation, Role.patient, PATIENT)
    observer_token = harness.token(consultation, Role.observer, "Student")
    patient, observer = harness.bot(patient_token), harness.bot(observer_token)
    await patient.connect()
    await observer.connect()

    status, image = await _upload(harness, http, consultation, patient_token, jpeg_with_gps())
    assert status == 201, image
    assert (image["kind"], image["presets"], image["mediaType"]) == (
        "photo",
        ["original"],
        "image/jpeg",
    )
    status, data, content_type = await _fetch(
        harness, http, consultation, observer_token, image["id"], "original"
    )
    assert status == 200 and content_type == "image/jpeg" and GPS_MARK not in data

    # Observers may look, not share.
    status, _ = await _upload(harness, http, consultation, observer_token, jpeg_with_gps())
    assert status == 403
    await observer.send(p.Share(type="share", imageId=image["id"]))
    assert await observer.wait_for(
        lambda: any(e.code == "forbidden" and e.ref == "share" for e in observer.errors), 5
    )

    for data, code in (
        (b"%PDF-1.4\n1 0 obj\n", "bad_type"),
        (dicom_files.jpeg_compressed(), "bad_dicom"),
        (b"", "empty"),
    ):
        status, refused = await _upload(harness, http, consultation, patient_token, data)
        assert status == 400 and refused["error"] == code, refused
        assert refused["message"]

    # An id of no image here: a typed error, the socket lives.
    await patient.send(p.Share(type="share", imageId="img_0000000000000000"))
    assert await patient.wait_for(
        lambda: any(e.code == "unexpected" and e.ref == "share" for e in patient.errors), 5
    )
    # Too large is refused from the header, before the body is read.
    async with http.post(
        f"{harness.base_url}/api/consultations/{consultation}/images",
        data=b"x" * 1024,
        headers={
            "Authorization": f"Bearer {patient_token}",
            "Content-Length": str(60 * 1024 * 1024),
            "Content-Type": "multipart/form-data; boundary=x",
        },
    ) as resp:
        assert resp.status == 413


async def test_only_the_presenter_or_the_host_closes_the_image(
    harness: Harness, consultation: str, http: aiohttp.ClientSession
) -> None:
    patient_token = harness.token(consultation, Role.patient, PATIENT)
    doctor = harness.bot(harness.token(consultation, Role.doctor, "Dr. Li"))
    patient, other = (
        harness.bot(patient_token),
        harness.bot(harness.token(consultation, Role.expert)),
    )
    for bot in (doctor, patient, other):
        await bot.connect()
    status, image = await _upload(harness, http, consultation, patient_token, jpeg_with_gps())
    assert status == 201
    await patient.send(p.Share(type="share", imageId=image["id"]))
    assert await other.wait_for(lambda: bool(_of(other, p.Shared)), TIMEOUT)

    # An expert may share, but not close the patient's image; the host may.
    await other.send(p.Unshare(type="unshare"))
    assert await other.wait_for(
        lambda: any(e.code == "forbidden" and e.ref == "unshare" for e in other.errors), 5
    )
    await doctor.send(p.Unshare(type="unshare"))
    for bot in (doctor, patient, other):
        assert await bot.wait_for(lambda b=bot: bool(_of(b, p.ShareEnded)), TIMEOUT)
    assert _of(patient, p.ShareEnded)[0].by == doctor.participant_id
    await doctor.send(p.Unshare(type="unshare"))
    assert await doctor.wait_for(
        lambda: any(e.code == "unexpected" and e.ref == "unshare" for e in doctor.errors), 5
    )
