"""The front desk in headless Chromium against a real ``teleconsult serve``: the first admin
(printed by serve on first start) logs in, creates two sites, a department, a partnership and
three staff; a second browser logged in as the admin sees the new staff member appear
without reloading. Screenshots of the login page and the admin console in en and zh-CN land
in test-artifacts/frontdesk-*.png.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.e2e.helpers import (
    ARTIFACTS,
    RunningServer,
    chromium,
    needs_chromium,
    needs_loopback_namespace,
    wait_for,
)

pytestmark = [pytest.mark.browser, needs_chromium, needs_loopback_namespace]

_FIRST_ADMIN = re.compile(r"as 'admin' with the password (\S+)")
PASSWORD = "a long enough password"


def _first_admin_password(server: RunningServer) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = _FIRST_ADMIN.search(server.log.read_text(errors="replace"))
        if found:
            return found.group(1)
        time.sleep(0.1)
    pytest.fail(f"serve printed no first admin:\n{server.log_tail()}")


async def _login(page: Any, base: str, username: str, password: str) -> None:
    await page.goto(f"{base}/login")
    await page.fill("#username", username)
    await page.fill("#password", password)
    async with page.expect_navigation():
        await page.click("#login-btn")
    assert "/console" in page.url, page.url


async def _submit(page: Any, form: str, fields: dict[str, str]) -> str:
    """Fill and post one of the console's forms; returns the site id the page shows after."""
    for name, value in fields.items():
        selector = f"{form} [name={name}]"
        if await page.evaluate(f"document.querySelector('{selector}').tagName") == "SELECT":
            await page.select_option(selector, value)
        else:
            await page.fill(selector, value)
    async with page.expect_navigation():
        await page.click(f"{form} button[type=submit]")
    error = await page.evaluate("document.getElementById('error')?.textContent ?? null")
    assert error is None, error
    site: str = await page.evaluate(
        "new URL(document.getElementById('console').dataset.refreshUrl, location.href)"
        ".searchParams.get('site')"
    )
    return site


async def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"frontdesk-{name}.png"), full_page=True)


async def test_first_admin_sets_up_sites_and_staff_and_a_second_console_sees_it_live(
    server: RunningServer,
) -> None:
    password = _first_admin_password(server)
    base = server.base_url
    async with chromium() as ctx_a, chromium() as ctx_b:
        page = await ctx_a.new_page()
        await page.goto(f"{base}/login")
        assert await page.title() == "Staff login · Teleconsult"
        await _shot(page, "login-en")
        await _login(page, base, "admin", password)
        assert page.url.endswith("/console/admin")

        township = {"kind": "township_health_centre", "name": "Hetian Township Health Centre"}
        thc = await _submit(page, "#add-site", township)
        hospital = {"kind": "expert_hospital", "name": "Provincial People's Hospital"}
        hosp = await _submit(page, "#add-site", hospital)
        assert thc != hosp
        assert await _submit(page, "#add-department", {"name": "Cardiology"}) == hosp
        await _submit(page, "#add-partnership", {"requester": thc})
        text = await page.inner_text("[data-live=partnerships]")
        assert "Hetian Township Health Centre may request Cardiology" in text
        await _submit(page, "#add-staff", {"username": "dr-zhang", "display_name": "Dr. Zhang",
                                           "role": "expert", "password": PASSWORD})  # fmt: skip

        # The second console: the same admin in another browser, on the township's page.
        other = await ctx_b.new_page()
        await _login(other, base, "admin", password)
        await other.goto(f"{base}/console/admin?site={thc}")
        await wait_for(other, "document.body.dataset.live === 'on'", 10)
        await other.evaluate("window.__notReloaded = true")

        await page.goto(f"{base}/console/admin?site={thc}")
        await _submit(page, "#add-staff", {"username": "thc-admin", "display_name": "Admin Wu",
                                           "role": "admin", "password": PASSWORD})  # fmt: skip
        await _submit(page, "#add-staff", {"username": "dr-wang", "display_name": "Dr. Wang",
                                           "role": "doctor", "password": PASSWORD})  # fmt: skip
        added_at = time.monotonic()
        await wait_for(other, "!!document.querySelector('[data-username=\"dr-wang\"]')", 5, 0.05)
        seen_after = time.monotonic() - added_at
        assert await other.evaluate("window.__notReloaded === true"), "the page was reloaded"
        assert seen_after < 1.5, f"the second console saw the new staff after {seen_after:.2f}s"
        partnerships = await other.inner_text("[data-live=partnerships]")
        assert "May request Cardiology at Provincial People's Hospital" in partnerships
        await _shot(other, "console-en")

        # The new site admin logs in and manages the township only.
        admin_page = await ctx_b.new_page()
        await ctx_b.clear_cookies()
        await _login(admin_page, base, "thc-admin", PASSWORD)
        assert await admin_page.evaluate("document.getElementById('add-site') === null")
        usernames = await admin_page.eval_on_selector_all(
            "[data-username]", "rows => rows.map(r => r.dataset.username)"
        )
        assert sorted(usernames) == ["dr-wang", "thc-admin"]

    async with chromium(locale="zh-CN") as ctx_zh:
        page = await ctx_zh.new_page()
        await page.goto(f"{base}/login")
        assert await page.evaluate("document.documentElement.lang") == "zh-CN"
        assert "工作人员登录" in await page.inner_text("h1")
        await _shot(page, "login-zh-CN")
        await _login(page, base, "admin", password)
        await page.goto(f"{base}/console/admin?site={hosp}")
        assert "合作关系" in await page.inner_text("#partnerships h2")
        await _shot(page, "console-zh-CN")
