"""Consent-gated recording through the real browser client, server, Worker and composer.

Three Chromium tabs (doctor, expert, patient) join one consultation with a moving, noisy
fake camera; the doctor clicks Record, the others click Yes in their consent dialogs, every
page shows REC, they talk for 10 s, the doctor stops, everyone leaves. Then, with the
doctor's own token: the recordings panel and the HTTP API list the recording, compose it,
report progress, play it and download it; the composed MP4 decodes with PyAV, lasts the
recorded time, holds a non-blank picture in every grid tile and has sound; and the per-track
files carry the very codec and picture size each browser sent (remuxed, not re-encoded).

Also: a late joiner is asked on arrival (and can agree, then withdraw); a patient on a kiosk
who says No cancels the request, the doctor is told, and REC never shows.

Run inside the loopback-only namespace: tests/isolated.sh .venv/bin/pytest -q tests/e2e
Screenshots: test-artifacts/browser-recording-*.png.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from recordings.catalog import Catalog
from recordings.store import RecordingStore
from recordings.track_writer import vp8_dimensions
from tests.e2e.helpers import (
    ARTIFACTS,
    OUTBOUND_JS,
    RunningServer,
    chromium,
    needs_chromium,
    needs_loopback_namespace,
    token_of,
    wait_for,
    wait_for_media,
    watch_console,
    write_y4m,
)

pytestmark = [needs_chromium, needs_loopback_namespace, pytest.mark.browser]

TALK_S = 10.0
COMPOSE_TIMEOUT_S = 120.0
UI_TIMEOUT_S = 15.0
REC = "window.teleconsult.state.recording"


@pytest.fixture(scope="module")
def camera_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_y4m(tmp_path_factory.mktemp("clip") / "moving.y4m", seconds=3.0)


async def _open(ctx: Any, url: str, console: list[str], query: str = "autojoin=1") -> Any:
    page = await ctx.new_page()
    watch_console(page, console)
    await page.goto(f"{url}?{query}")
    return page


async def _recording(page: Any) -> dict[str, Any]:
    return await page.evaluate(REC)


async def _shows_rec(page: Any) -> bool:
    return await page.locator("#rec-indicator").is_visible()


async def _click_record(doctor: Any, label: str) -> None:
    button = doctor.locator("#record-btn")
    await button.wait_for(state="visible", timeout=UI_TIMEOUT_S * 1000)
    assert await button.text_content() == label
    await button.click()


async def _answer(page: Any, yes: bool) -> None:
    """Wait for the consent dialog and click Yes or No in it, as a person would."""
    await page.locator("#consent-dialog[open]").wait_for(timeout=UI_TIMEOUT_S * 1000)
    await page.locator("#consent-yes" if yes else "#consent-no").click()
    await page.locator("#consent-dialog").wait_for(state="hidden", timeout=5_000)


async def _self_id(page: Any) -> str:
    return str(await page.evaluate("window.teleconsult.state.self.id"))


def _get_json(url: str, token: str, method: str = "GET") -> Any:
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _get_bytes(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Disposition"].startswith("attachment")
        return resp.read()


def _api(server: RunningServer, consultation: str) -> str:
    return f"{server.base_url}/api/consultations/{consultation}/recordings"


# ------------------------------------------------------------------ the whole story


async def test_three_consent_record_compose_and_play(
    server: RunningServer, camera_clip: Path
) -> None:
    consultation = "e2e-recording"
    people = {
        "doctor": ("Dr. Li 李医生", "autojoin=1"),
        "expert": ("Prof. Wang 王专家", "autojoin=1"),
        "patient": ("Zhang Ayi 张阿姨", "autojoin=1&lang=zh-CN"),
    }
    urls = {role: server.invite(role, name, consultation) for role, (name, _) in people.items()}
    doctor_token = token_of(urls["doctor"])
    ARTIFACTS.mkdir(exist_ok=True)
    console: dict[str, list[str]] = {role: [] for role in people}
    timings: dict[str, float] = {}
    t_begin = time.monotonic()

    clip_arg = f"--use-file-for-fake-video-capture={camera_clip}"
    async with chromium([clip_arg]) as ctx:
        pages = {
            role: await _open(ctx, urls[role], console[role], query)
            for role, (_, query) in people.items()
        }
        await wait_for_media(pages, server, console)
        timings["media_flowing_s"] = time.monotonic() - t_begin
        ids = {role: await _self_id(page) for role, page in pages.items()}
        doctor = pages["doctor"]
        # Only the doctor may record; nobody is asked anything yet.
        for role in ("expert", "patient"):
            assert not await pages[role].locator("#record-btn").is_visible(), role
        assert not any([await _shows_rec(page) for page in pages.values()])

        await _click_record(doctor, "Record")
        # Pending: the doctor sees who has not answered yet; no REC anywhere.
        pending = await wait_for(doctor, f"{REC}.state === 'pending' && {REC}.waitingFor", 10)
        assert set(pending) == {ids["expert"], ids["patient"]}
        assert await doctor.locator("#rec-pending").is_visible()
        assert await doctor.text_content("#record-btn") == "Cancel recording"

        # The patient's dialog is in Chinese, says who asks and what it is for.
        patient = pages["patient"]
        await patient.locator("#consent-dialog[open]").wait_for(timeout=UI_TIMEOUT_S * 1000)
        dialog_text = await patient.text_content("#consent-dialog")
        assert "病历" in dialog_text and "Dr. Li 李医生" in dialog_text, dialog_text
        await patient.screenshot(path=str(ARTIFACTS / "browser-recording-consent-zh.png"))
        assert not await doctor.locator("#consent-dialog[open]").count()  # asking = consent

        await _answer(pages["expert"], yes=True)
        await asyncio.sleep(0.5)
        assert (await _recording(doctor))["state"] == "pending"  # one answer still missing
        assert not await _shows_rec(doctor)
        await _answer(patient, yes=True)

        # REC everywhere, in the DOM and in the state.
        for role, page in pages.items():
            await page.locator("#rec-indicator").wait_for(state="visible", timeout=10_000)
            rec = await _recording(page)
            assert rec["state"] == "recording" and rec["excluded"] == [], (role, rec)
        assert await doctor.text_content("#record-btn") == "Stop recording"
        assert await doctor.text_content("#rec-indicator .rec-text") == "REC"
        assert await patient.text_content("#rec-indicator .rec-text") == "录制中"
        for role in ("expert", "patient"):
            assert await pages[role].locator("#withdraw-btn").is_visible(), role
        timings["recording_started_s"] = time.monotonic() - t_begin

        # Talk for 10 s, sampling what each browser sends.
        sent: dict[str, list[list[dict[str, Any]]]] = {role: [] for role in pages}
        talk_end = time.monotonic() + TALK_S
        shot = False
        while time.monotonic() < talk_end:
            for role, page in pages.items():
                sent[role].append(await page.evaluate(OUTBOUND_JS))
            if not shot and time.monotonic() > talk_end - TALK_S / 2:
                await doctor.screenshot(path=str(ARTIFACTS / "browser-recording-doctor-rec.png"))
                shot = True
            await asyncio.sleep(1.0)
        assert (await doctor.text_content("#rec-time")) not in ("", "0:00")

        await _click_record(doctor, "Stop recording")
        for role, page in pages.items():
            await wait_for(page, f"{REC}.state === 'stopped'", 10)
            assert not await _shows_rec(page), role
        for role, page in pages.items():
            sent[role].append(await page.evaluate(OUTBOUND_JS))
        rec = await _recording(doctor)
        recorded_s = (rec["stoppedAt"] - rec["startedAt"]) / 1000.0
        assert TALK_S <= recorded_s < TALK_S + 10, recorded_s
        # A plain stop is an information toast, not an error.
        assert await doctor.locator(".toast", has_text="Recording stopped").count()

        for role in ("expert", "patient", "doctor"):
            await pages[role].click("#leave-btn")
            await pages[role].wait_for_selector("#end-view:not([hidden])", timeout=5_000)
        for role in ("expert", "patient"):
            await pages[role].close()
        assert not await pages["doctor"].locator("#consent-dialog[open]").count()

        # ---------------------------------------------------------- the doctor's panel
        await doctor.click("#end-recordings-btn")
        item = doctor.locator("#recordings-list .rec-item")
        await item.first.wait_for(timeout=10_000)
        assert await item.count() == 1
        recording = await item.first.get_attribute("data-recording")
        assert recording

        # The API agrees with the panel.
        api = _api(server, consultation)
        (info,) = _get_json(api, doctor_token)["recordings"]
        assert info["recording"] == recording and info["state"] == "complete", info
        assert info["tracks"] == 6 and not info["truncated"], info

        t_compose = time.monotonic()
        await item.locator(".rec-compose").click()
        job = _get_json(f"{api}/{recording}/compose", doctor_token, method="POST")
        assert job["state"] in ("running", "done"), job
        seen_percent: set[str] = set()
        progress: list[float] = []
        deadline = time.monotonic() + COMPOSE_TIMEOUT_S
        while True:
            job = _get_json(f"{api}/{recording}/compose", doctor_token)
            progress.append(job["progress"])
            percent = item.locator(".rec-percent")
            if await percent.is_visible():
                seen_percent.add(await percent.text_content() or "")
            if job["state"] != "running":
                break
            assert time.monotonic() < deadline, f"compose still running: {job}"
            await asyncio.sleep(0.5)
        timings["compose_s"] = time.monotonic() - t_compose
        assert job == {"state": "done", "progress": 100.0}, (job, server.log_tail())
        assert progress == sorted(progress)
        assert all(text.startswith("Preparing video… ") and text.endswith("%")
                   for text in seen_percent), seen_percent  # fmt: skip

        # Play it in the panel: the <video> fetches it with ?token= and decodes it.
        await item.locator(".rec-play").wait_for(state="visible", timeout=10_000)
        await item.locator(".rec-play").click()
        played = await wait_for(
            doctor,
            """(() => { const v = document.getElementById("recordings-player");
                 return !v.hidden && v.readyState >= 2 && v.currentTime > 0.5
                   ? {w: v.videoWidth, h: v.videoHeight, d: v.duration} : null; })()""",
            30,
        )
        assert (played["w"], played["h"]) == (1280, 720), played
        await doctor.screenshot(path=str(ARTIFACTS / "browser-recording-panel.png"))
        download_href = await item.locator(".rec-download").get_attribute("href")
        assert download_href and "download=1" in download_href

    # ---------------------------------------------------------- the composed MP4
    body = _get_bytes(f"{api}/{recording}/composed?token={doctor_token}&download=1")
    store = RecordingStore(server.data_dir)
    catalog = Catalog(store)
    manifest = catalog.manifest(consultation, recording)
    assert manifest.composed is not None
    tiles = manifest.composed.tiles
    assert len(tiles) == 3, tiles

    frames = 0
    samples: list[np.ndarray] = []
    with av.open(io.BytesIO(body)) as container:
        vstream = container.streams.video[0]
        assert container.streams.audio, "the composed file has no audio"
        fps = float(vstream.average_rate or 30)
        picks: set[int] = set()
        expected = round(recorded_s * fps)
        picks = {expected // 4, expected // 2, 3 * expected // 4}
        for frame in container.decode(vstream):
            if frames in picks:
                samples.append(frame.to_ndarray(format="gray"))
            frames += 1
    with av.open(io.BytesIO(body)) as container:
        pcm = [f.to_ndarray() for f in container.decode(container.streams.audio[0])]
    duration = frames / fps
    timings.update(recorded_s=recorded_s, composed_s=duration)
    assert abs(duration - recorded_s) / recorded_s < 0.10, timings
    rms = float(np.sqrt(np.mean(np.concatenate([a.reshape(-1) for a in pcm]) ** 2)))
    assert rms > 1e-3, f"the composed audio is silent (rms {rms})"

    assert len(samples) == 3
    means = []
    for tile in tiles:
        x, y, w, h = tile["x"], tile["y"], tile["w"], tile["h"]
        # The middle of the tile: inside the letterboxed picture, clear of the label.
        regions = [s[y + h // 4 : y + 3 * h // 4, x + w // 4 : x + 3 * w // 4] for s in samples]
        for region in regions:
            assert float(region.std()) > 15.0, (tile["label"], float(region.std()))
        means.append([float(r.mean()) for r in regions])
        # The camera moves: the tile's picture changes from sample to sample.
        diffs = [
            float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())
            for a, b in itertools.pairwise(regions)
        ]
        assert min(diffs) > 2.0, (tile["label"], diffs)
    assert {t["label"] for t in tiles} == {"doctor", "expert", "patient"}

    # ---------------------------------------------------------- per-track files
    t0 = min(t.start_s for t in manifest.tracks if t.start_s is not None)
    diagnostics: dict[str, Any] = {"tile_std": [round(float(s.std()), 1) for s in samples]}
    by_participant = {ids[role]: role for role in ids}
    assert set(manifest.participants) == set(by_participant)
    for track in manifest.tracks:
        assert track.file and track.frames > 0, track
        role = by_participant[track.participant]
        outbound = [s for sample in sent[role] if sample for s in sample if s["kind"] == track.kind]
        assert outbound, (role, track.kind)
        mime = {s["mimeType"] for s in outbound}
        assert mime == {"video/VP8" if track.kind == "video" else "audio/opus"}, mime
        with contextlib.closing(catalog.open(consultation, recording, track.file)) as reader:
            with av.open(reader) as container:
                stream = container.streams[0]
                packets = [bytes(p) for p in container.demux(stream) if p.size]
                cc = stream.codec_context
                codec = cc.name
                if track.kind == "video":
                    width, height, rate = cc.width, cc.height, None
                else:
                    width, height, rate = 0, 0, cc.sample_rate
        assert len(packets) == track.frames, (role, track.kind, len(packets), track.frames)
        diagnostics[f"{role}/{track.kind}"] = {
            "start_offset_s": round((track.start_s or t0) - t0, 2),
            "frames": track.frames,
            "size": [width, height] if track.kind == "video" else rate,
        }
        if track.kind == "audio":
            assert codec == "opus" and rate == 48000, (codec, rate)
            continue
        assert codec == "vp8", codec
        sizes = {(s["frameWidth"], s["frameHeight"]) for s in outbound if s["frameWidth"]}
        # The file's picture size, and that of every keyframe in it, is one the browser
        # encoded: the Worker wrote the browser's own VP8 frames.
        assert (width, height) in sizes, (role, (width, height), sizes)
        keyframe_sizes = {vp8_dimensions(p) for p in packets} - {None}
        assert keyframe_sizes and keyframe_sizes <= sizes, (role, keyframe_sizes, sizes)
        assert (track.params.get("width"), track.params.get("height")) == (width, height)
        # As many frames as the browser encoded meanwhile (give or take the keyframe wait
        # at the start and the round trips at both ends).
        encoded = [s["framesEncoded"] for s in outbound if s["framesEncoded"] is not None]
        sent_meanwhile = encoded[-1] - encoded[0]
        diagnostics[f"{role}/video"].update(
            encoded=sent_meanwhile,
            sender_sizes=sorted(sizes),
            limitation=sorted({str(s["limitation"]) for s in outbound}),
            target_kbps=[round((s["targetBitrate"] or 0) / 1000) for s in outbound],
        )
        assert abs(track.frames - sent_meanwhile) <= 0.15 * sent_meanwhile + 15, (
            role,
            track.frames,
            sent_meanwhile,
        )

    # Nothing on disk in plaintext.
    for path in store.root.rglob("*"):
        if path.is_file():
            head = path.read_bytes()[:64]
            assert b"\x1a\x45\xdf\xa3" not in head and b"ftyp" not in head, path

    timings["total_s"] = time.monotonic() - t_begin
    print("recording e2e timings:", json.dumps({k: round(v, 1) for k, v in timings.items()}))
    print("recording e2e media:", json.dumps(diagnostics))
    errors = [line for lines in console.values() for line in lines if "pageerror" in line]
    assert errors == [], errors


# ------------------------------------------------------------------ a late joiner


async def test_late_joiner_is_asked_and_can_agree_then_withdraw(server: RunningServer) -> None:
    consultation = "e2e-recording-late"
    urls = {
        "doctor": server.invite("doctor", "Dr. Li", consultation),
        "patient": server.invite("patient", "Zhang Ayi", consultation),
        "expert": server.invite("expert", "Prof. Wang", consultation),
    }
    console: dict[str, list[str]] = {role: [] for role in urls}
    async with chromium() as ctx:
        doctor = await _open(ctx, urls["doctor"], console["doctor"])
        patient = await _open(ctx, urls["patient"], console["patient"])
        await wait_for_media({"doctor": doctor, "patient": patient}, server, console)
        await _click_record(doctor, "Record")
        await _answer(patient, yes=True)
        for page in (doctor, patient):
            await page.locator("#rec-indicator").wait_for(state="visible", timeout=10_000)

        # The expert arrives while recording: REC at once, the question on arrival, and
        # left out of the recording until they answer.
        expert = await _open(ctx, urls["expert"], console["expert"])
        await expert.locator("#consent-dialog[open]").wait_for(timeout=UI_TIMEOUT_S * 1000)
        expert_id = await _self_id(expert)
        assert await _shows_rec(expert)
        assert await expert.locator("#rec-note").is_visible()  # "you are not recorded"
        assert (await _recording(expert))["excluded"] == [expert_id]
        # (The others are not told of the exclusion until the next change: the server sends
        # the late joiner's `recording` state to the late joiner only.)
        assert "Dr. Li" in (await expert.text_content("#consent-asked") or "")
        assert "already being recorded" in (await expert.text_content("#consent-body") or "")
        await expert.screenshot(path=str(ARTIFACTS / "browser-recording-late-joiner.png"))

        await _answer(expert, yes=True)
        await wait_for(doctor, f"{REC}.excluded.length === 0", 10)
        assert not await expert.locator("#rec-note").is_visible()
        withdraw = expert.locator("#withdraw-btn")
        assert await withdraw.text_content() == "Stop recording me"
        await asyncio.sleep(2.0)

        # Withdrawing: left out again, and the button now offers to agree again.
        await withdraw.click()
        await wait_for(doctor, f"{REC}.excluded.includes({json.dumps(expert_id)})", 10)
        await wait_for(expert, "document.getElementById('withdraw-btn').dataset.action"
                       " === 'include'", 5)  # fmt: skip
        assert await withdraw.text_content() == "Record me too"
        assert await _shows_rec(expert)  # the others are still recorded
        assert (await _recording(expert))["myConsent"] is False

        await _click_record(doctor, "Stop recording")
        await wait_for(doctor, f"{REC}.state === 'stopped'", 10)

    # The stop is announced at once; the server's writer thread then closes the files.
    catalog = Catalog(RecordingStore(server.data_dir))
    for _ in range(100):
        (info,) = catalog.list(consultation)
        if info.state != "recording":
            break
        await asyncio.sleep(0.1)
    manifest = catalog.manifest(consultation, info.recording)
    expert_tracks = [t for t in manifest.tracks if t.participant == expert_id]
    assert expert_tracks, "the expert's tracks were never recorded after consenting"
    assert {t.stop_reason for t in expert_tracks if t.file} == {"consent_withdrawn"}
    assert expert_id in {x.participant for x in manifest.excluded}
    consent = [(c.granted) for c in manifest.consent if c.participant == expert_id]
    assert consent == [True, False], consent


# ------------------------------------------------------------------ a refusal on a kiosk


async def test_patient_on_kiosk_says_no(server: RunningServer) -> None:
    consultation = "e2e-recording-refused"
    doctor_url = server.invite("doctor", "Dr. Li", consultation)
    patient_url = server.invite("patient", "Zhang Ayi", consultation)
    console: dict[str, list[str]] = {"doctor": [], "patient": []}
    async with chromium() as ctx:
        doctor = await _open(ctx, doctor_url, console["doctor"])
        patient = await _open(ctx, patient_url, console["patient"], query="kiosk=1")
        await wait_for_media({"doctor": doctor, "patient": patient}, server, console)
        assert await patient.evaluate("document.body.classList.contains('kiosk')")
        assert await patient.evaluate("window.teleconsult.state.kiosk") is True

        await _click_record(doctor, "Record")
        await wait_for(doctor, f"{REC}.state === 'pending'", 10)
        assert "Zhang Ayi" in (await doctor.text_content("#rec-pending") or "")

        await patient.locator("#consent-dialog[open]").wait_for(timeout=UI_TIMEOUT_S * 1000)
        # Kiosk: the answers are very large touch targets.
        for button in ("#consent-yes", "#consent-no"):
            box = await patient.locator(button).bounding_box()
            assert box and box["height"] >= 150 and box["width"] >= 280, (button, box)
        await patient.screenshot(path=str(ARTIFACTS / "browser-recording-kiosk-consent.png"))
        await _answer(patient, yes=False)

        # The doctor is told who declined, in an error toast; nothing records.
        toast = doctor.locator(".toast-error", has_text="declined")
        await toast.wait_for(timeout=10_000)
        assert "Zhang Ayi" in (await toast.text_content() or "")
        await wait_for(doctor, f"{REC}.state === 'idle'", 10)
        rec = await _recording(doctor)
        assert rec["reason"] == "declined" and rec["startedAt"] is None, rec
        assert await doctor.text_content("#record-btn") == "Record"
        await asyncio.sleep(1.0)
        for page in (doctor, patient):
            assert "recording" not in (await _recording(page))["history"]
            assert not await _shows_rec(page)
            assert not await page.locator("#rec-pending").is_visible()
        await doctor.screenshot(path=str(ARTIFACTS / "browser-recording-refused.png"))

    infos = Catalog(RecordingStore(server.data_dir)).list(consultation)
    assert all(not info.tracks for info in infos), infos


# ------------------------------------------------------------------ a scripted server


class ScriptedSocket:
    """The page's WebSocket, answered by the test instead of a server (Playwright's
    route_web_socket): every server message, including a disk-full stop, on demand."""

    def __init__(self, participant: dict[str, Any], permissions: list[str]) -> None:
        self.participant = participant
        self.permissions = permissions
        self.route: Any = None
        self.received: list[dict[str, Any]] = []

    async def handle(self, route: Any) -> None:
        self.route = route
        route.on_message(self._on_message)

    def _on_message(self, raw: str | bytes) -> None:
        msg = json.loads(raw)
        self.received.append(msg)
        if msg["type"] == "join":
            self.send(
                type="joined",
                v=1,
                participant=self.participant,
                consultation={"id": "e2e-scripted", "kind": "joint"},
                participants=[{"id": "PDOC", "name": "Dr. Li", "role": "doctor"}],
                iceServers=[],
                permissions=self.permissions,
            )

    def send(self, **msg: Any) -> None:
        self.route.send(json.dumps(msg))

    def sent(self, type_: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m["type"] == type_]


async def test_recording_ui_against_a_scripted_server(pages_client: Any) -> None:
    """Every state the server can announce, shown as it should be: the question, REC,
    withdrawing and agreeing again, and a stop because the disk is full."""
    from tests.e2e.helpers import pages_token

    token = pages_token(name="Zhang Ayi", role="patient")
    socket = ScriptedSocket({"id": "PPAT", "name": "Zhang Ayi", "role": "patient"},
                            ["publish", "subscribe"])  # fmt: skip
    async with chromium() as ctx:
        page = await ctx.new_page()
        await page.route_web_socket("**/ws", socket.handle)
        await page.goto(str(pages_client.make_url(f"/join/{token}?autojoin=1")))
        await wait_for(page, "window.teleconsult.state.phase === 'call'", 15)
        assert not await page.locator("#record-btn").is_visible()  # no record permission
        assert not await page.locator("#recordings-btn").is_visible()

        socket.send(type="recording", state="pending", recordingId="R1",
                    waitingFor=["PPAT"], excluded=[])  # fmt: skip
        socket.send(type="consent_request", recordingId="R1", requestedBy="PDOC")
        await _answer(page, yes=True)
        await wait_for(page, "window.teleconsult.state.recording.myConsent === true", 5)
        assert socket.sent("consent") == [{"type": "consent", "granted": True}]
        assert not await _shows_rec(page)  # still pending: no REC yet

        socket.send(type="recording", state="recording", recordingId="R1",
                    waitingFor=[], excluded=[])  # fmt: skip
        await page.locator("#rec-indicator").wait_for(state="visible", timeout=5_000)
        await page.click("#withdraw-btn")
        await wait_for(page, "window.teleconsult.state.recording.myConsent === false", 5)
        assert socket.sent("consent")[-1] == {"type": "consent", "granted": False}
        socket.send(type="recording", state="recording", recordingId="R1",
                    waitingFor=[], excluded=["PPAT"])  # fmt: skip
        await page.locator("#rec-note").wait_for(state="visible", timeout=5_000)
        assert await page.text_content("#withdraw-btn") == "Record me too"
        # Agreeing again goes through the same question.
        await page.click("#withdraw-btn")
        await _answer(page, yes=True)
        assert socket.sent("consent")[-1] == {"type": "consent", "granted": True}
        socket.send(type="recording", state="recording", recordingId="R1",
                    waitingFor=[], excluded=[])  # fmt: skip
        await page.locator("#rec-note").wait_for(state="hidden", timeout=5_000)

        # The disk fills up: REC goes, and everyone is told why (the call goes on).
        socket.send(type="recording", state="stopped", recordingId="R1",
                    waitingFor=[], excluded=[], reason="disk_full")  # fmt: skip
        toast = page.locator(".toast-error", has_text="disk is full")
        await toast.wait_for(timeout=5_000)
        assert not await _shows_rec(page)
        assert not await page.locator("#withdraw-btn").is_visible()
        assert await page.evaluate("window.teleconsult.state.phase") == "call"
        await page.screenshot(path=str(ARTIFACTS / "browser-recording-disk-full.png"))

        # A request that someone else declines closes an unanswered question.
        socket.send(type="consent_request", recordingId="R2", requestedBy="PDOC")
        await page.locator("#consent-dialog[open]").wait_for(timeout=5_000)
        socket.send(type="recording", state="idle", recordingId="R2",
                    waitingFor=[], excluded=[], reason="declined")  # fmt: skip
        await page.locator("#consent-dialog").wait_for(state="hidden", timeout=5_000)
        await page.locator(".toast-error", has_text="a participant declined").wait_for(
            timeout=5_000
        )
        assert len(socket.sent("consent")) == 3  # no answer was made up for R2


async def test_record_button_sends_start_and_cancel(pages_client: Any) -> None:
    from tests.e2e.helpers import pages_token

    token = pages_token(name="Dr. Li", role="doctor")
    socket = ScriptedSocket({"id": "PDOC", "name": "Dr. Li", "role": "doctor"},
                            ["publish", "record", "subscribe", "view_recordings"])  # fmt: skip
    socket_participants = [{"id": "PPAT", "name": "Zhang Ayi", "role": "patient"}]
    async with chromium() as ctx:
        page = await ctx.new_page()
        await page.route_web_socket("**/ws", socket.handle)
        await page.goto(str(pages_client.make_url(f"/join/{token}?autojoin=1")))
        await wait_for(page, "window.teleconsult.state.phase === 'call'", 15)
        socket.send(type="participant_joined", participant=socket_participants[0])
        assert await page.locator("#recordings-btn").is_visible()
        await _click_record(page, "Record")
        await wait_for(page, "document.getElementById('record-btn').disabled", 5)
        assert socket.sent("record") == [{"type": "record", "action": "start"}]
        socket.send(type="recording", state="pending", recordingId="R1",
                    waitingFor=["PPAT"], excluded=[])  # fmt: skip
        await wait_for(page, "!document.getElementById('record-btn').disabled", 5)
        assert await page.text_content("#rec-pending") == "Waiting for consent: Zhang Ayi"
        await _click_record(page, "Cancel recording")
        assert socket.sent("record")[-1] == {"type": "record", "action": "stop"}
        socket.send(type="recording", state="idle", recordingId="R1",
                    waitingFor=[], excluded=[], reason="stopped", by="PDOC")  # fmt: skip
        await wait_for(page, "document.getElementById('record-btn').textContent === 'Record'", 5)
        assert not await page.locator("#rec-pending").is_visible()
        # A refusal arrives as an error naming the participant: the toast names them.
        socket.send(type="error", code="consent_refused",
                    message="participant PPAT declined recording", ref="record",
                    participantId="PPAT")  # fmt: skip
        await page.locator(".toast-error", has_text="Zhang Ayi declined").wait_for(timeout=5_000)
