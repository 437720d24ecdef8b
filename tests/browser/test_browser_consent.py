"""Consent in real Chromium: GPC and a denied consent state stop cookies and forwarding."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import chromium_available, fake_cdn, open_page, stack

if not chromium_available():
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the browser tests: .ci/run installs Debian's chromium")
    pytestmark = pytest.mark.skip(reason="Debian chromium is not installed (.ci/run installs it)")

LANDING = "/?fbclid=AbC-123&gclid=Cj0KCQ&ttclid=E.C.P.x"
CLICK_COOKIES = {"_fbc", "_gcl_aw", "ttclid", "_fbp", "_sgv"}


async def test_gpc_sets_no_click_cookie_and_forwards_no_identifiers(tmp_path: Path) -> None:
    async with stack(tmp_path, headers={"Sec-GPC": "1"}) as s:
        page = await open_page(s, LANDING)
        await page.close()
        assert CLICK_COOKIES & set(await s.cookies()) == set()
        await s.drain()
        for event in s.accepted():
            user = event["user_data"]
            assert not {"fbc", "fbp", "em", "client_ip_address"} & set(user), user
        assert s.runtime.collect is not None
        assert s.runtime.collect.stats.by_tier.get("analytics", 0) >= 1
        assert s.console_errors == []


async def test_denied_consent_sends_nothing_until_granted(tmp_path: Path) -> None:
    async with stack(tmp_path, consent={"default": "none"}) as s:
        page = await open_page(s, LANDING + "&consent=denied")
        assert CLICK_COOKIES & set(await s.cookies()) == set()
        await s.drain()
        assert s.accepted() == []
        await page.click("#accept")
        await page.wait_for_load_state("networkidle")
        await page.wait_for_timeout(300)
        cookies = await s.cookies()
        assert {"_fbc", "_gcl_aw", "ttclid", "_fbp", "_sgv"} <= set(cookies)
        assert cookies["_fbc"]["value"].endswith(".AbC-123")
        # The next page (the CMP now says granted; the loader remembers it) is delivered.
        await page.goto(s.shop_url + "/cart", wait_until="networkidle")
        await s.drain()
        assert s.accepted(), "granting consent must start capture"
        assert all("fbc" in e["user_data"] for e in s.accepted())
        assert s.console_errors == []


TRACKING = {
    "_fbc", "_fbp", "_gcl_aw", "ttclid", "_ttp", "_scid", "_scclid", "_uetmsclkid", "_sgv",
}  # fmt: skip
ALL_CLICKS = LANDING + "&sccid=snapclick123&msclkid=0123456789abcdef0123456789abcdef"
DENY = "{ad_storage:'denied',analytics_storage:'denied',ad_user_data:'denied'}"


async def test_a_denial_deletes_every_tracking_cookie_the_gateway_set(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        page = await open_page(s, ALL_CLICKS)
        cookies = await s.cookies()
        assert set(cookies) >= TRACKING, sorted(cookies)
        assert all(cookies[name]["domain"] == ".shop.test" for name in TRACKING)
        await s.drain()
        before = len(s.accepted())
        assert before >= 1
        async with page.expect_response(lambda r: r.url.startswith(s.gateway_url + "/e")) as r:
            await page.evaluate(f"sg('consent',{DENY})")
        assert (await r.value).status == 204
        await page.wait_for_timeout(200)
        left = await s.cookies()
        assert TRACKING & set(left) == set(), sorted(left)
        assert "_sgc" in left, "the consent choice itself is remembered"
        # The next page sets nothing again and forwards nothing.
        await page.goto(s.shop_url + "/cart", wait_until="networkidle")
        assert TRACKING & set(await s.cookies()) == set()
        await s.drain()
        assert len(s.accepted()) == before
        assert s.console_errors == []


async def test_a_denial_seen_on_a_proxied_pixel_hit_deletes_them_too(tmp_path: Path) -> None:
    consent = {"cmp_cookie": "cmp", "cmp_mapping": {"reject": "none"}}
    async with fake_cdn() as (cdn, cdn_url):
        proxy = {"enabled": True, "vendors": ["meta"], "meta_upstream": cdn_url,
                 "meta_hits_upstream": cdn_url}  # fmt: skip
        async with stack(tmp_path, consent=consent, proxy=proxy) as s:
            page = await open_page(s, ALL_CLICKS)
            assert set(await s.cookies()) >= TRACKING
            # The CMP records the rejection in its own cookie; the next pixel hit carries it.
            await page.evaluate("document.cookie='cmp=reject; domain=shop.test; path=/'")
            query = "id=1234567890&ev=PageView&dl=https%3A%2F%2Fwww.shop.test%2F"
            hit = f"{s.gateway_url}/p/m/tr/?{query}"
            async with page.expect_response(lambda r: r.url.startswith(hit)) as r:
                await page.evaluate(f"(new Image()).src={hit!r}")
            assert (await r.value).status == 200
            await page.wait_for_timeout(200)
            left = await s.cookies()
            assert TRACKING & set(left) == set(), sorted(left)
            assert any(h.path.startswith("/tr") for h in cdn.hits), "the hit still went upstream"
