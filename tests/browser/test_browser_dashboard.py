"""The admin dashboard in real headless Chromium, after the scripted run (tests/dashboard_run.py):
log in, every page renders its figures without a console error (a screenshot of each, on a laptop
and a phone viewport, under tests/output/dashboard/), replay and resume through the forms; pages
refuse a browser without a session; the login form is rate-limited."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from conftest import ADMIN_TOKEN, PLANTED_EMAIL
from dashboard_run import META_REJECTS, Run, dashboard_run
from harness import CHROMIUM, FLAGS, chromium_available
from playwright.async_api import BrowserContext, Page, async_playwright

from gateway.web.dashboard import DASHBOARD
from gateway.web.dashboard.layout import NAV

if not chromium_available():
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the browser tests: .ci/run installs Debian's chromium")
    pytestmark = pytest.mark.skip(reason="Debian chromium is not installed (.ci/run installs it)")

SHOTS = Path(__file__).resolve().parents[1] / "output" / "dashboard"
"""Screenshots of every page (git-ignored; CI may keep them as artifacts)."""
LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def url(run: Run) -> str:
    """The gateway's base URL as Chromium reaches it (FLAGS map *.shop.test to 127.0.0.1 and
    resolve nothing else, IP literals included)."""
    return f"http://admin.shop.test:{run.client.port}"


@asynccontextmanager
async def chromium(viewport: dict[str, int]) -> AsyncIterator[BrowserContext]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = await browser.new_context(viewport=viewport)  # type: ignore[arg-type]
        try:
            yield context
        finally:
            await context.close()
            await browser.close()


async def new_page(context: BrowserContext, errors: list[str]) -> Page:
    page = await context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page


async def log_in(page: Page, run: Run, path: str = "/admin/") -> None:
    await page.goto(url(run) + path)
    assert "/admin/login" in page.url, "a page without a session goes to the login form"
    await page.fill("#token", ADMIN_TOKEN)
    async with page.expect_navigation():
        await page.click("button[type=submit]")
    assert page.url == url(run) + path


async def shoot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    target = SHOTS / f"{name}.png"
    await page.screenshot(path=str(target), full_page=True)
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", name
    assert len(data) > 5000, name


async def test_every_dashboard_page_renders_the_scripted_run(tmp_path: Path) -> None:
    errors: list[str] = []
    async with dashboard_run(tmp_path) as run, chromium(LAPTOP) as context:
        await run.play()
        await run.deliver()
        run.client.app[DASHBOARD].providers = run.providers()
        page = await new_page(context, errors)
        await log_in(page, run, "/admin/signal")
        cookie = next(c for c in await context.cookies() if c["name"] == "sg_admin")
        assert cookie["httpOnly"]
        assert cookie["sameSite"] == "Strict"
        assert cookie["path"] == "/admin"
        for href, name in NAV:
            response = await page.goto(url(run) + "/admin/" + href)
            assert response is not None, href
            assert response.status == 200, href
            assert (await page.inner_text("h1")) == name
            text = await page.inner_text("main")
            assert PLANTED_EMAIL not in text
            await shoot(page, "laptop-" + (href.strip("./") or "overview"))
        # Figures of the scripted run, as the operator reads them.
        await page.goto(url(run) + "/admin")  # → /admin/
        assert page.url == url(run) + "/admin/"
        assert await page.locator(".pill.bad", has_text="paused").count() == 1
        assert await page.locator("svg.chart").count() >= 1
        await page.goto(url(run) + "/admin/dead?route=shop:meta")
        body = await page.inner_text("main")
        assert all(order in body for order in META_REJECTS)
        await page.goto(url(run) + "/admin/signal")
        assert "/ 10" in await page.inner_text("main")
        await page.goto(url(run) + "/admin/gap")
        gap = await page.inner_text("main")
        assert all(order in gap for order in (*META_REJECTS, "order-11"))
        assert "dead_letter" in gap
        await page.goto(url(run) + "/admin/events")
        assert "order-1" in await page.inner_text("main")
        await page.goto(url(run) + "/admin/?range=1h")
        assert await page.locator("polyline").count() == 3
        assert errors == [], errors


async def test_replay_and_resume_through_the_forms(tmp_path: Path) -> None:
    errors: list[str] = []
    async with dashboard_run(tmp_path) as run, chromium(LAPTOP) as context:
        await run.play()
        await run.deliver()
        run.meta.faults.reject_event_ids = set()
        run.tiktok.faults.token_expired = False
        page = await new_page(context, errors)
        await log_in(page, run, "/admin/dead?route=shop:meta")
        boxes = page.locator('input[name="pick"]')
        assert await boxes.count() == 2
        await boxes.nth(0).check()
        await boxes.nth(1).check()
        async with page.expect_navigation():
            await page.click("text=Replay selected")
        assert "replayed 2, skipped 0" in await page.inner_text(".flash")
        await run.deliver()
        ids = [e["event_id"] for e in run.meta.recorder.accepted]
        assert all(ids.count(order) == 1 for order in META_REJECTS)
        await page.click("text=Overview")
        async with page.expect_navigation():
            await page.click("text=Resume shop:tiktok")
        assert "shop:tiktok resumed" in await page.inner_text(".flash")
        assert not run.runtime.workers["shop:tiktok"].paused
        await shoot(page, "laptop-after-resume")
        assert errors == [], errors


async def test_pages_fit_a_phone(tmp_path: Path) -> None:
    errors: list[str] = []
    async with dashboard_run(tmp_path) as run, chromium(PHONE) as context:
        await run.play()
        await run.deliver()
        page = await new_page(context, errors)
        await log_in(page, run)
        for href, _ in NAV:
            await page.goto(url(run) + "/admin/" + href)
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], (href, width)  # wide tables scroll in their box
            await shoot(page, "phone-" + (href.strip("./") or "overview"))
        assert errors == [], errors


async def test_pages_refuse_a_browser_without_a_session(tmp_path: Path) -> None:
    async with dashboard_run(tmp_path) as run, chromium(LAPTOP) as context:
        page = await context.new_page()
        for href, _ in NAV:
            await page.goto(url(run) + "/admin/" + href)
            assert "/admin/login" in page.url, href
        for action in ("/admin/replay", "/admin/resume", "/admin/logout"):
            await page.set_content(
                f'<form method="post" action="{url(run)}{action}">'
                '<input type="hidden" name="route" value="shop:meta">'
                '<input type="hidden" name="csrf" value="x"><button>go</button></form>'
            )
            async with page.expect_response(lambda r, a=action: r.url.endswith(a)) as answer:
                await page.click("button")
            assert (await answer.value).status == 401, action


async def test_the_login_form_is_rate_limited(tmp_path: Path) -> None:
    async with dashboard_run(tmp_path) as run, chromium(LAPTOP) as context:
        page = await context.new_page()
        await page.goto(url(run) + "/admin/login")
        statuses = []
        for _ in range(6):
            await page.fill("#token", "wrong-token")
            async with page.expect_response(
                lambda r: r.url.endswith("/admin/login") and r.request.method == "POST"
            ) as answer:
                await page.click("button[type=submit]")
            response = await answer.value
            statuses.append(response.status)
            await page.wait_for_load_state()
        assert statuses == [401] * 5 + [429]
        assert int((await answer.value).headers["retry-after"]) >= 1
        assert "Too many failed attempts" in await page.inner_text("main")
        await page.fill("#token", ADMIN_TOKEN)  # the right token waits too
        async with page.expect_navigation():
            await page.click("button[type=submit]")
        assert "/admin/login" in page.url
        await shoot(page, "login-rate-limited")
