"""The page tells the server which video codecs it can use, and says so when video is out.

Against a scripted WebSocket (Playwright's route_web_socket): the join carries the codecs
Chromium can send and receive, and a `video_unavailable` notice stays on screen, in the
page's language, instead of passing as an error toast.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.helpers import (
    ARTIFACTS,
    chromium,
    needs_chromium,
    needs_loopback_namespace,
    pages_token,
    wait_for,
)
from web.i18n import messages

pytestmark = [needs_chromium, needs_loopback_namespace, pytest.mark.browser]


class JoinOnlySocket:
    """Answers join with joined, then sends what the test says."""

    def __init__(self) -> None:
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
                participant={"id": "PPAT", "name": "Zhang Ayi", "role": "patient"},
                consultation={"id": "e2e-scripted", "kind": "joint"},
                participants=[{"id": "PDOC", "name": "Dr. Li", "role": "doctor"}],
                iceServers=[],
                permissions=["publish", "subscribe"],
            )

    def send(self, **msg: Any) -> None:
        self.route.send(json.dumps(msg))


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
async def test_video_unavailable_is_shown_and_the_join_names_its_codecs(
    pages_client: Any, lang: str
) -> None:
    token = pages_token(name="Zhang Ayi", role="patient")
    socket = JoinOnlySocket()
    async with chromium() as ctx:
        page = await ctx.new_page()
        await page.route_web_socket("**/ws", socket.handle)
        await page.goto(str(pages_client.make_url(f"/join/{token}?autojoin=1&lang={lang}")))
        await wait_for(page, "window.teleconsult.state.phase === 'call'", 15)
        join = socket.received[0]
        assert join["type"] == "join"
        # Chromium can do VP8 both ways; H.264 depends on the build. Nothing else is sent.
        assert "VP8" in join["videoCodecs"] and set(join["videoCodecs"]) <= {"VP8", "H264"}
        assert not await page.locator("#media-notice").is_visible()

        socket.send(
            type="error",
            code="video_unavailable",
            message="this consultation's video codec is H264, which this client cannot use",
        )
        notice = page.locator("#media-notice")
        await notice.wait_for(state="visible", timeout=5_000)
        assert await notice.text_content() == messages(lang)["error.video_unavailable"]
        assert await page.locator(".toast-error").count() == 0
        assert await page.evaluate("window.teleconsult.state.phase") == "call"
        await page.screenshot(path=str(ARTIFACTS / f"browser-video-unavailable-{lang}.png"))
