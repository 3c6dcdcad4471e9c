"""One weak link costs only its own quality, with real Chromium: the doctor publishes (VP8
with temporal layers), an expert on the same machine watches unlimited, and the patient's
Chromium runs in a namespace of its own behind a link shaped to 300 kbps (tbf; this kernel
has no netem). The patient still decodes pictures and is told its video is lowered; the
expert keeps full frame rate; the doctor's camera is not driven into a keyframe storm.

    tests/isolated.sh .venv/bin/pytest -q tests/e2e/test_browser_weak_link.py
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests import roaming
from tests.e2e.conftest import far_chromium
from tests.e2e.helpers import (
    ARTIFACTS,
    RunningServer,
    chromium,
    needs_chromium,
    needs_loopback_namespace,
    wait_for,
)

pytestmark = [
    needs_chromium,
    needs_loopback_namespace,
    pytest.mark.browser,
    pytest.mark.skipif(not roaming.available(), reason="needs root, ip, nsenter, tc, unshare"),
]

WATCH_S = 40.0

# Video decoded from each remote publisher, and what this page's camera encoded.
VIDEO_JS = """
async () => {
  const tc = window.teleconsult;
  if (!tc || !tc.pc) return null;
  const report = await tc.pc.getStats();
  const inbound = [], outbound = [];
  report.forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video")
      inbound.push({mid: r.mid, framesDecoded: r.framesDecoded ?? 0,
                    frameWidth: r.frameWidth ?? 0, keyFramesDecoded: r.keyFramesDecoded ?? 0});
    if (r.type === "outbound-rtp" && r.kind === "video")
      outbound.push({keyFramesEncoded: r.keyFramesEncoded ?? 0, framesEncoded: r.framesEncoded ?? 0,
                     pliCount: r.pliCount ?? 0, scalabilityMode: r.scalabilityMode ?? null});
  });
  const slots = tc.state.slots || [];
  return {inbound, outbound, slots};
}
"""


def _from(stats: dict[str, Any], publisher: str) -> dict[str, Any] | None:
    mids = {s["mid"] for s in stats["slots"] if s.get("participantId") == publisher}
    found = [s for s in stats["inbound"] if s["mid"] in mids]
    return max(found, key=lambda s: s["framesDecoded"]) if found else None


async def test_a_throttled_subscriber_costs_nobody_else(
    roaming_server: RunningServer, link: roaming.RoamingLink, tmp_path: Path
) -> None:
    server = roaming_server
    consultation = "e2e-weak-link"
    doctor_url = server.invite("doctor", "Dr. Li", consultation)
    expert_url = server.invite("expert", "Dr. Wang", consultation)
    patient_url = server.invite("patient", "Zhang Ayi", consultation).replace(
        "127.0.0.1", link.here, 1
    )
    async with chromium() as here, far_chromium(tmp_path, link, server) as there:
        doctor = await here.new_page()
        await doctor.goto(f"{doctor_url}?autojoin=1&lang=en")
        expert = await here.new_page()
        await expert.goto(f"{expert_url}?autojoin=1&lang=en")
        patient = await there.new_page()
        await patient.goto(f"{patient_url}?autojoin=1&lang=en")
        doctor_id = await wait_for(doctor, "window.teleconsult.state.self?.id", 30)

        async def decoding(page: Any, frames: int) -> bool:
            stats = await page.evaluate(VIDEO_JS)
            got = stats and _from(stats, doctor_id)
            return bool(got and got["framesDecoded"] >= frames)

        deadline = time.monotonic() + 60
        while not (await decoding(expert, 60) and await decoding(patient, 30)):
            assert time.monotonic() < deadline, server.log_tail(200)
            await asyncio.sleep(0.5)

        link.shape(300)
        before = {
            "doctor": await doctor.evaluate(VIDEO_JS),
            "expert": await expert.evaluate(VIDEO_JS),
            "patient": await patient.evaluate(VIDEO_JS),
        }
        started = time.monotonic()
        await asyncio.sleep(WATCH_S)
        elapsed = time.monotonic() - started
        after = {
            "doctor": await doctor.evaluate(VIDEO_JS),
            "expert": await expert.evaluate(VIDEO_JS),
            "patient": await patient.evaluate(VIDEO_JS),
        }
        notice = await patient.evaluate(
            "({modes: window.teleconsult.videoRate.modes,"
            " text: document.getElementById('video-rate-notice').textContent,"
            " shown: !document.getElementById('video-rate-notice').hidden})"
        )
        await patient.screenshot(path=str(ARTIFACTS / "browser-weak-link-patient.png"))
        await expert.screenshot(path=str(ARTIFACTS / "browser-weak-link-expert.png"))

        def delta(page: str, key: str) -> int:
            a, b = _from(after[page], doctor_id), _from(before[page], doctor_id)
            assert a is not None and b is not None
            return a[key] - b[key]

        expert_fps = delta("expert", "framesDecoded") / elapsed
        patient_frames = delta("patient", "framesDecoded")
        out_a, out_b = after["doctor"]["outbound"][0], before["doctor"]["outbound"][0]
        keyframes = out_a["keyFramesEncoded"] - out_b["keyFramesEncoded"]
        expert_width = _from(after["expert"], doctor_id)["frameWidth"]  # type: ignore[index]
        print(
            f"weak link: expert {expert_fps:.1f} fps at {expert_width} wide; patient decoded "
            f"{patient_frames} frames in {elapsed:.0f} s; doctor encoded {keyframes} keyframes "
            f"(PLIs {out_a['pliCount'] - out_b['pliCount']}, {out_a['scalabilityMode']}); "
            f"patient told {notice}"
        )
        assert expert_fps >= 25, expert_fps
        assert patient_frames > 0
        # Before, the throttled subscriber's PLIs made the camera send ~165 keyframes a
        # minute; now a still frame every 8 s and the odd probe at most.
        assert keyframes <= 12, keyframes
        assert notice["shown"] and doctor_id in notice["modes"], notice


async def test_one_to_one_over_a_weak_link_gets_moving_video(
    roaming_server: RunningServer, link: roaming.RoamingLink, tmp_path: Path
) -> None:
    """Alone with the doctor, the throttled patient's estimate is the most the doctor's
    camera is asked for: it sizes its stream for that link, and the patient gets moving
    video (fewer frames, smaller), not still frames."""
    server = roaming_server
    consultation = "e2e-weak-link-1to1"
    doctor_url = server.invite("doctor", "Dr. Li", consultation)
    patient_url = server.invite("patient", "Zhang Ayi", consultation).replace(
        "127.0.0.1", link.here, 1
    )
    async with chromium() as here, far_chromium(tmp_path, link, server) as there:
        doctor = await here.new_page()
        await doctor.goto(f"{doctor_url}?autojoin=1&lang=en")
        patient = await there.new_page()
        await patient.goto(f"{patient_url}?autojoin=1&lang=en")
        doctor_id = await wait_for(doctor, "window.teleconsult.state.self?.id", 30)
        deadline = time.monotonic() + 60
        while True:
            stats = await patient.evaluate(VIDEO_JS)
            got = stats and _from(stats, doctor_id)
            if got and got["framesDecoded"] >= 30:
                break
            assert time.monotonic() < deadline, server.log_tail(200)
            await asyncio.sleep(0.5)
        link.shape(300)
        await asyncio.sleep(30)  # the estimate falls, the camera follows, layers come back
        before = _from(await patient.evaluate(VIDEO_JS), doctor_id)
        out0 = (await doctor.evaluate(VIDEO_JS))["outbound"][0]
        started = time.monotonic()
        await asyncio.sleep(20)
        elapsed = time.monotonic() - started
        after = _from(await patient.evaluate(VIDEO_JS), doctor_id)
        out1 = (await doctor.evaluate(VIDEO_JS))["outbound"][0]
        modes = await patient.evaluate("window.teleconsult.videoRate.modes")
        await patient.screenshot(path=str(ARTIFACTS / "browser-weak-link-1to1-patient.png"))
        assert before is not None and after is not None
        fps = (after["framesDecoded"] - before["framesDecoded"]) / elapsed
        keyframes = out1["keyFramesEncoded"] - out0["keyFramesEncoded"]
        changes = [x for x in server.log_tail(400).splitlines() if "video now" in x]
        print(
            f"1:1 weak link: patient {fps:.1f} fps at {after['frameWidth']} wide, modes {modes};"
            f" doctor encoded {keyframes} keyframes in {elapsed:.0f} s; " + "\n".join(changes)
        )
        assert fps >= 5, (fps, modes, changes)
        assert keyframes <= 8, keyframes
