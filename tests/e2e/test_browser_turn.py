"""A browser whose network lets nothing through but its TURN server: the patient's page sends
and receives all media through a real coturn, over UDP and over TCP (the way through a
firewall that allows nothing but TCP, since the Worker has no ICE over TCP), with the
credential minted for it alone in `joined`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import CoturnServer
from tests.e2e.conftest import serve
from tests.e2e.helpers import (
    ARTIFACTS,
    STATS_JS,
    RunningServer,
    chromium,
    media_ok,
    needs_chromium,
    needs_loopback_namespace,
)

# The candidate pair this page's media flows over, and its local candidate.
SELECTED_JS = """
async () => {
  const report = await window.teleconsult.pc.getStats();
  let pair = null;
  report.forEach((r) => {
    const id = r.type === "transport" ? r.selectedCandidatePairId : undefined;
    if (id) pair = report.get(id);
  });
  if (!pair) return null;
  const local = report.get(pair.localCandidateId);
  return {type: local.candidateType, relayProtocol: local.relayProtocol ?? null,
          bytesSent: pair.bytesSent, bytesReceived: pair.bytesReceived};
}
"""


@pytest.fixture(params=["udp", "tcp"])
def turn_server(
    request: pytest.FixtureRequest, coturn: CoturnServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, str]]:
    transport = request.param
    url = coturn.url if transport == "udp" else f"{coturn.url}?transport=tcp"
    running = serve(tmp_path_factory, "--ice-server", url, "--turn-secret", coturn.secret)
    yield next(running), transport
    running.close()


@needs_chromium
@needs_loopback_namespace
@pytest.mark.browser
async def test_a_relay_only_page_talks_through_coturn(
    turn_server: tuple[RunningServer, str],
) -> None:
    server, transport = turn_server
    consultation = f"e2e-turn-{transport}"
    doctor_url = server.invite("doctor", "Dr. Li", consultation)
    patient_url = server.invite("patient", "Zhang Ayi", consultation)
    async with chromium() as ctx:
        doctor = await ctx.new_page()
        await doctor.goto(f"{doctor_url}?autojoin=1&lang=en")
        patient = await ctx.new_page()
        await patient.goto(f"{patient_url}?autojoin=1&relay=1&lang=en")
        deadline = time.monotonic() + 60
        stats: list[Any] = []
        while True:
            stats = [await page.evaluate(STATS_JS) for page in (doctor, patient)]
            if all(media_ok(s, 1) for s in stats):
                break
            assert time.monotonic() < deadline, (stats, server.log_tail())
            await asyncio.sleep(0.5)
        # The patient's media really goes through the relay, over the transport asked for.
        # The pair's byte counters can trail the first decoded frame (read as 0 once in CI):
        # they are read until both pass 100 kB or the deadline.
        deadline = time.monotonic() + 15
        while True:
            selected = await patient.evaluate(SELECTED_JS)
            assert selected is not None
            assert selected["type"] == "relay", selected
            assert selected["relayProtocol"] == transport, selected
            if selected["bytesReceived"] > 100_000 and selected["bytesSent"] > 100_000:
                break
            assert time.monotonic() < deadline, selected
            await asyncio.sleep(0.5)
        # Its credential was its own: the username names its opaque participant id.
        me = await patient.evaluate("window.teleconsult.state.self.id")
        servers = await patient.evaluate("window.teleconsult.state.iceServers")
        assert [s["username"].split(":")[1] for s in servers] == [me]
        await patient.screenshot(path=str(ARTIFACTS / f"browser-turn-{transport}-patient.png"))
