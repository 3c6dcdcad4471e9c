"""The reconnect ladder on a real network change: the patient's Chromium runs in a namespace
of its own (tests/roaming.py) and, mid-call, its address changes as a phone's does moving
from Wi-Fi to 4G, or its UDP is cut for 40 s while signaling stays up. The call comes back by
itself each time; the gap in decoded frames is measured on both pages.

    tests/isolated.sh .venv/bin/pytest -q tests/e2e/test_browser_network_switch.py
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from tests import roaming
from tests.e2e.conftest import far_chromium
from tests.e2e.helpers import (
    ARTIFACTS,
    STATS_JS,
    RunningServer,
    chromium,
    media_ok,
    needs_chromium,
    needs_loopback_namespace,
)

pytestmark = [
    needs_chromium,
    needs_loopback_namespace,
    pytest.mark.browser,
    pytest.mark.skipif(not roaming.available(), reason="needs root, ip, nsenter and unshare"),
]

# The bound for a network switch, and how long we watch after each event.
SWITCH_GAP_S = 3.0
WATCH_S = 15.0

# In the page: every 100 ms, whether video frames were decoded since the last look (over
# whichever RTCPeerConnection the page has now: a media restart makes a new one).
SAMPLER_JS = """
() => {
  if (window.__frames) return;
  window.__frames = [];
  let lastPc = null, last = 0;
  setInterval(async () => {
    const pc = window.teleconsult && window.teleconsult.pc;
    if (!pc) return;
    let decoded = 0;
    (await pc.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") decoded += r.framesDecoded ?? 0;
    });
    if (pc !== lastPc) { lastPc = pc; last = 0; }
    if (decoded > last) window.__frames.push(Date.now());
    last = decoded;
  }, 100);
}
"""


def _longest_gap(times_ms: list[int], since_ms: int, until_ms: int) -> float:
    """The longest stretch without a decoded frame between ``since`` and ``until`` (s)."""
    marks = [since_ms, *[t for t in times_ms if since_ms < t <= until_ms]]
    if marks[-1] < until_ms:
        marks.append(until_ms)
    return max(b - a for a, b in itertools.pairwise(marks)) / 1000


async def _both_decode(pages: list[Any], server: RunningServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        stats = [await page.evaluate(STATS_JS) for page in pages]
        if all(media_ok(s, 1) for s in stats):
            return
        assert time.monotonic() < deadline, (stats, server.log_tail(200))
        await asyncio.sleep(0.5)


async def _now_ms(page: Any) -> int:
    return int(await page.evaluate("Date.now()"))


async def test_a_network_switch_costs_at_most_three_seconds_of_media(
    roaming_server: RunningServer, link: roaming.RoamingLink, tmp_path: Path
) -> None:
    server = roaming_server
    consultation = "e2e-network-switch"
    doctor_url = server.invite("doctor", "Dr. Li", consultation)
    patient_url = server.invite("patient", "Zhang Ayi", consultation).replace(
        "127.0.0.1", link.here, 1
    )
    async with chromium() as here, far_chromium(tmp_path, link, server) as there:
        doctor = await here.new_page()
        await doctor.goto(f"{doctor_url}?autojoin=1&lang=en")
        patient = await there.new_page()
        await patient.goto(f"{patient_url}?autojoin=1&lang=en")
        await _both_decode([doctor, patient], server, 60)
        me = await patient.evaluate("window.teleconsult.state.self.id")
        for page in (doctor, patient):
            await page.evaluate(SAMPLER_JS)
        await asyncio.sleep(3)

        # Wi-Fi to 4G: the patient's address changes; its old one is gone.
        t_doctor, t_patient = await _now_ms(doctor), await _now_ms(patient)
        new_address = link.move()
        await asyncio.sleep(WATCH_S)
        await _both_decode([doctor, patient], server, 30)
        gaps = {
            "doctor sees patient": _longest_gap(
                await doctor.evaluate("window.__frames"), t_doctor, t_doctor + 12_000
            ),
            "patient sees doctor": _longest_gap(
                await patient.evaluate("window.__frames"), t_patient, t_patient + 12_000
            ),
        }
        state = await patient.evaluate(
            "({resumes: window.teleconsult.state.resumes ?? 0,"
            " restarts: window.teleconsult.state.mediaRestarts ?? 0,"
            " abandoned: window.teleconsult.state.abandoned,"
            f" ladder: window.teleconsult.state.ladder.map(([t, s]) => [t - {t_patient}, s]),"
            " id: window.teleconsult.state.self.id, phase: window.teleconsult.state.phase})"
        )
        print(f"network switch to {new_address}: gaps {gaps}, patient {state}")
        await patient.screenshot(path=str(ARTIFACTS / "browser-network-switch-patient.png"))
        # The same session went on (resumed, not a new participant) and nobody left.
        assert state["id"] == me and state["phase"] == "call", state
        assert await doctor.evaluate(f"!!window.teleconsult.participants['{me}']")
        assert max(gaps.values()) <= SWITCH_GAP_S, (gaps, state, server.log_tail())


async def test_forty_seconds_without_udp_and_the_call_comes_back_by_itself(
    roaming_server: RunningServer, link: roaming.RoamingLink, tmp_path: Path
) -> None:
    server = roaming_server
    consultation = "e2e-udp-blackhole"
    doctor_url = server.invite("doctor", "Dr. Li", consultation)
    patient_url = server.invite("patient", "Zhang Ayi", consultation).replace(
        "127.0.0.1", link.here, 1
    )
    async with chromium() as here, far_chromium(tmp_path, link, server) as there:
        doctor = await here.new_page()
        await doctor.goto(f"{doctor_url}?autojoin=1&lang=en")
        patient = await there.new_page()
        await patient.goto(f"{patient_url}?autojoin=1&lang=en")
        await _both_decode([doctor, patient], server, 60)
        me = await patient.evaluate("window.teleconsult.state.self.id")
        for page in (doctor, patient):
            await page.evaluate(SAMPLER_JS)

        link.block_udp()
        await asyncio.sleep(40)
        # Signaling stayed up the whole time: the patient was never dropped.
        assert await patient.evaluate("window.teleconsult.state.phase") == "call"
        assert await doctor.evaluate(f"!!window.teleconsult.participants['{me}']")
        t_doctor, t_patient = await _now_ms(doctor), await _now_ms(patient)
        link.block_udp(False)
        restored = time.monotonic()
        await _both_decode([doctor, patient], server, 40)
        back_s = time.monotonic() - restored
        first = {
            "doctor": min(t for t in await doctor.evaluate("window.__frames") if t > t_doctor),
            "patient": min(t for t in await patient.evaluate("window.__frames") if t > t_patient),
        }
        print(
            f"UDP back after 40 s: frames again after {first['doctor'] - t_doctor} ms (doctor),"
            f" {first['patient'] - t_patient} ms (patient); both decoding after {back_s:.1f} s"
        )
        await doctor.screenshot(path=str(ARTIFACTS / "browser-udp-blackhole-doctor.png"))
        assert await patient.evaluate("window.teleconsult.state.self.id") == me
        # The same session, and it came back quickly: nobody had to rejoin.
        assert max(first["doctor"] - t_doctor, first["patient"] - t_patient) <= 5000, first
