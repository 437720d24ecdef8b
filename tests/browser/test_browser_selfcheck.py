"""The cookie and Safari self-check page in real headless Chromium, after a shop visit."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

from fakedns import FakeResolver
from harness import SHOP, TRACK, Stack, chromium_available, open_page, stack

import gateway.web.selfcheck as selfcheck_module

if not chromium_available():
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the browser tests: .ci/run installs Debian's chromium")
    pytestmark = pytest.mark.skip(reason="Debian chromium is not installed (.ci/run installs it)")

LANDING = "/?fbclid=AbC-123&gclid=Cj0KCQ&ttclid=E.C.P.x"
CNAMED = FakeResolver(
    cnames={TRACK: "edge.gw-vendor.example"},
    addresses={"edge.gw-vendor.example": ["198.51.100.7"], SHOP: ["203.0.113.10"]},
)


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway's self-check resolves through the fake: no DNS query leaves the machine."""
    monkeypatch.setattr(selfcheck_module, "DnsResolver", lambda: CNAMED)


async def row(page: Any, name: str) -> dict[str, str]:
    cells = await page.locator(f'#cookies tr[data-cookie="{name}"] td').all_inner_texts()
    keys = ("cookie", "max_age", "safari", "attributes", "sent", "value", "script")
    return dict(zip(keys, cells, strict=True))


async def visit_then_check(s: Stack, url: str, shot: Path) -> tuple[Any, dict[str, Any]]:
    landing = await open_page(s, LANDING)
    await landing.close()
    cookies = await s.cookies()
    page = await s.context.new_page()
    page.on("console", lambda m: s.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: s.console_errors.append(str(e)))
    response = await page.goto(url, wait_until="load")
    assert response is not None
    assert response.status == 200
    await page.wait_for_selector("body[data-script-check]")
    await page.screenshot(path=str(shot), full_page=True)
    return page, cookies


async def test_subdomain_cname_page_shows_cookies_lifetimes_and_the_safari_cap(
    tmp_path: Path,
) -> None:
    async with stack(tmp_path) as s:
        page, cookies = await visit_then_check(
            s, s.gateway_url + "/selfcheck", tmp_path / "selfcheck-subdomain.png"
        )
        assert await page.get_attribute("body", "data-script-check") == "ok"
        sgv, fbc, fbp = await row(page, "_sgv"), await row(page, "_fbc"), await row(page, "_fbp")
        assert sgv["sent"] == fbc["sent"] == fbp["sent"] == "yes"
        assert sgv["max_age"] == "400 d"
        assert fbc["max_age"] == "90 d"
        assert sgv["safari"] == fbc["safari"] == "7 d"  # CNAME to another site
        assert "HttpOnly" in sgv["attributes"]
        assert "HttpOnly" not in fbc["attributes"]
        assert "Domain=shop.test" in fbc["attributes"]
        assert "SameSite=Lax" in fbc["attributes"]
        assert sgv["script"] == "hidden (HttpOnly)"
        assert fbc["script"] == "visible"
        text = await page.inner_text("body")
        for name in ("_sgv", "_fbc", "_fbp"):
            assert cookies[name]["value"] not in text  # masked to a prefix
        assert cookies["_fbc"]["value"][:6] in fbc["value"]
        assert "Safari caps the cookies of this host to 7 days" in text
        track = page.locator(f'#hosts tr[data-host="{TRACK}"]')
        assert await track.get_attribute("data-capped") == "capped to 7 days"
        assert "edge.gw-vendor.example" in await track.inner_text()
        assert "path mode" in await track.inner_text()
        assert s.console_errors == []


async def test_path_mode_page_keeps_full_lifetimes(tmp_path: Path) -> None:
    async with stack(tmp_path, mode="path") as s:
        page, _ = await visit_then_check(
            s, s.shop_url + "/t/selfcheck", tmp_path / "selfcheck-path.png"
        )
        assert await page.get_attribute("body", "data-capped") == "full lifetime"
        sgv, fbc = await row(page, "_sgv"), await row(page, "_fbc")
        assert sgv["sent"] == "yes"
        assert sgv["safari"] == "400 d"
        assert fbc["safari"] == "90 d"
        assert await page.get_attribute("body", "data-script-check") == "ok"
        text = await page.inner_text("body")
        assert "Reached through a trusted proxy" in text
        assert s.console_errors == []
