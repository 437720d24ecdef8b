"""The demo shop in real headless Chromium: click-id cookies, loader events, server delivery."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import (
    API_KEY,
    Stack,
    chromium_available,
    days_ahead,
    open_page,
    stack,
)

if not chromium_available():
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the browser tests: .ci/run installs Debian's chromium")
    pytestmark = pytest.mark.skip(reason="Debian chromium is not installed (.ci/run installs it)")

LANDING = "/?fbclid=AbC-123&gclid=Cj0KCQ&ttclid=E.C.P.x"


async def checkout(s: Stack, query: str = "") -> str:
    """Land from an ad, add to cart, check out, pay; return the order id."""
    page = await open_page(s, LANDING + (f"&{query}" if query else ""))
    await page.click("#add")
    await page.wait_for_url(re.compile(r"/cart"))
    await page.click("#go")
    await page.wait_for_url(re.compile(r"/checkout"))
    await page.click("button")
    await page.wait_for_url(re.compile(r"/thank-you"))
    await page.wait_for_load_state("networkidle")
    order = page.url.split("order=")[1].split("&")[0]
    await page.close()
    return order


def assert_click_cookies(cookies: dict[str, dict[str, Any]]) -> None:
    for name in ("_fbc", "_gcl_aw", "ttclid"):
        assert cookies[name]["domain"] == ".shop.test", cookies[name]
        assert days_ahead(cookies[name]) >= 89
    for name in ("_fbp", "_sgv"):
        assert cookies[name]["domain"] == ".shop.test"
        assert days_ahead(cookies[name]) >= 395
    assert re.fullmatch(r"fb\.1\.\d{13}\.AbC-123", cookies["_fbc"]["value"])
    assert cookies["_gcl_aw"]["value"].endswith(".Cj0KCQ")
    assert cookies["ttclid"]["value"] == "E.C.P.x"
    assert cookies["_sgv"]["httpOnly"] is True
    assert cookies["_fbc"]["httpOnly"] is False


@pytest.mark.parametrize("mode", ["subdomain", "path"])
async def test_ad_click_to_purchase_reaches_meta_with_cookies_and_order_event_id(
    tmp_path: Path, mode: str
) -> None:
    async with stack(tmp_path, mode=mode) as s:
        order = await checkout(s)
        cookies = await s.cookies()
        assert_click_cookies(cookies)
        await s.drain()
        (purchase,) = s.accepted("Purchase")
        assert purchase["event_id"] == order
        user = purchase["user_data"]
        assert user["fbc"] == cookies["_fbc"]["value"]
        assert user["fbp"] == cookies["_fbp"]["value"]
        assert user["client_ip_address"] == "127.0.0.1"
        assert (
            "HeadlessChrome" in user["client_user_agent"] or "Chrome" in user["client_user_agent"]
        )
        assert re.fullmatch(r"[0-9a-f]{64}", user["em"])
        assert purchase["event_source_url"].startswith(s.shop_url + "/thank-you")
        assert s.console_errors == []


async def test_backend_purchase_is_enriched_from_the_browser_profile(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        order = await checkout(s)
        cookies = await s.cookies()
        await s.drain()
        client_events = [
            {"event": "Purchase", "source": "website", "url": f"{s.shop_url}/thank-you",
             "user": {"email": "Jane.Doe@example.com", "user_agent": "backend"},
             "data": {"value": 19.5, "currency": "EUR", "order_id": order}},
            {"event": "Purchase", "source": "phone_call",
             "user": {"email": "jane.doe@example.com"},
             "data": {"value": 5, "currency": "EUR", "order_id": "PHONE-1"}},
        ]  # fmt: skip
        from aiohttp import ClientSession

        async with ClientSession() as http:
            resp = await http.post(
                s.gateway_url.replace("track.shop.test", "127.0.0.1") + "/v1/events",
                json={"events": client_events},
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
            answer = await resp.json()
        assert resp.status == 202, answer
        # The same order: same event id, so the gateway does not send it a second time.
        assert answer["deduplicated"] == 1
        await s.drain()
        (phone,) = [e for e in s.accepted("Purchase") if e["event_id"] == "PHONE-1"]
        assert phone["user_data"]["fbc"] == cookies["_fbc"]["value"]
        assert phone["user_data"]["fbp"] == cookies["_fbp"]["value"]
        assert [e["event_id"] for e in s.accepted("Purchase")].count(order) == 1


async def test_blocked_vendor_pixel_still_delivers_server_event(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        order = await checkout(s, "pixel=blocked")
        await s.drain()
        assert [e["event_id"] for e in s.accepted("Purchase")] == [order]


async def test_loader_forwards_to_vendor_pixel_with_same_event_id(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        page = await open_page(s, "/thank-you?order=ORDER-77&pixel=stub")
        calls = await page.evaluate("window.__fbq_calls")
        purchase = [c for c in calls if c[0] == "track" and c[1] == "Purchase"]
        assert purchase, calls
        assert purchase[0][3]["eventID"] == "ORDER-77"
        await s.drain()
        assert [e["event_id"] for e in s.accepted("Purchase")] == ["ORDER-77"]
