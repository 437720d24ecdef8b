"""GA4 gtag through the gateway in real Chromium: script proxy, `/g/collect` pass-through, mirror.

A page on www.shop.test loads gtag.js from the gateway (`/p/g/js?id=G-…`) and configures it with
`server_container_url` = the gateway origin; the fake CDN's gtag.js sends each event as a
`navigator.sendBeacon` POST to `<server>/g/collect` (shared params in the query, the event line
in the body, platforms.md §4.2). The gateway forwards the hit unchanged to the fake upstream and
mirrors the purchase to the Meta sandbox (`mirror_to_all`) with event id = the transaction id.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

sys.path.insert(0, str(Path(__file__).parent))

from harness import SHOP, Stack, chromium_available, fake_cdn, stack

from gateway.config import PROXY_VENDORS
from gateway.sandbox.cdn import FakeCdn, SeenHit

if not chromium_available():
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the browser tests: .ci/run installs Debian's chromium")
    pytestmark = pytest.mark.skip(reason="Debian chromium is not installed (.ci/run installs it)")

MEASUREMENT_ID = "G-TEST123"
HIT_VENDORS = ("meta", "tiktok", "snap", "google")
# Records every beacon the page sends (before gtag.js loads), so the test compares the upstream's
# copy with what the browser really sent.
RECORD = """window.__sent=[];(function(b){navigator.sendBeacon=function(u,d){
window.__sent.push({url:String(u),body:d==null?'':String(d)});return b(u,d)}})(
navigator.sendBeacon.bind(navigator));"""
# Google's standard gtag snippet with the tag's src swapped to the gateway.
SNIPPET = """window.dataLayer=window.dataLayer||[];function gtag(){dataLayer.push(arguments);}
gtag('js',new Date());gtag('config','G-TEST123',{server_container_url:'GATEWAY'});
gtag('event','purchase',{transaction_id:'T-77',value:42.5,currency:'EUR',
items:[{item_id:'SKU-1',quantity:2,price:21.25}]});"""


@asynccontextmanager
async def pages(gateway_url: str) -> AsyncIterator[str]:
    """Serve the gtag page on 127.0.0.1; return its www.shop.test origin."""

    async def page(request: web.Request) -> web.Response:
        src = f"{gateway_url}/p/g/js?id={MEASUREMENT_ID}"
        html = (
            "<!doctype html><html><head><meta charset='utf-8'><title>gtag</title>"
            f"<script>{RECORD}</script><script async src='{src}'></script>"
            f"<script>{SNIPPET.replace('GATEWAY', gateway_url)}</script>"
            "</head><body>ok</body></html>"
        )
        return web.Response(text=html, content_type="text/html")

    async def no_icon(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/favicon.ico", no_icon)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://{SHOP}:{server.port}"
    finally:
        await server.close()


async def visit(s: Stack, url: str) -> Any:
    page = await s.context.new_page()
    page.on("console", lambda m: s.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: s.console_errors.append(str(e)))
    await page.goto(url, wait_until="networkidle")
    return page


async def collect_hits(cdn: FakeCdn, count: int) -> list[SeenHit]:
    """Wait (bounded) until the fake upstream holds `count` `/g/collect` hits; return them."""
    for _ in range(100):
        hits = [h for h in cdn.hits if h.path == "/g/collect"]
        if len(hits) >= count:
            return hits
        await asyncio.sleep(0.05)
    return [h for h in cdn.hits if h.path == "/g/collect"]


async def test_gtag_purchase_through_gateway_is_forwarded_unchanged_and_mirrored(
    tmp_path: Path,
) -> None:
    async with fake_cdn() as (cdn, cdn_url):
        proxy: dict[str, Any] = {"enabled": True, "vendors": ["google"], "mirror_to_all": True}
        proxy |= {f"{v}_upstream": cdn_url for v in PROXY_VENDORS}
        proxy |= {f"{v}_hits_upstream": cdn_url for v in HIT_VENDORS}
        async with stack(tmp_path, proxy=proxy) as s, pages(s.gateway_url) as origin:
            page = await visit(s, origin + "/")
            # the script came through the gateway's alias
            assert cdn.counts["/gtag/js"] == 1
            assert [r.query for r in cdn.seen if r.path == "/gtag/js"] == [f"id={MEASUREMENT_ID}"]
            hits = await collect_hits(cdn, 2)
            sent: list[dict[str, str]] = await page.evaluate("window.__sent")
            assert len(sent) == 2, sent
            assert all(b["url"].startswith(s.gateway_url + "/g/collect?") for b in sent)
            # forwarded unchanged: same method, raw query and body, in the order sent
            assert [(h.method, h.query, h.body) for h in hits] == [
                ("POST", b["url"].partition("?")[2], b["body"].encode()) for b in sent
            ]
            purchase_hit = hits[1]
            query = dict(parse_qsl(purchase_hit.query))
            assert (query["v"], query["tid"], query["cid"]) == ("2", MEASUREMENT_ID, "123.456")
            assert query["dl"] == origin + "/"
            line = dict(parse_qsl(purchase_hit.body.decode()))
            assert line == {
                "en": "purchase",
                "ep.transaction_id": "T-77",
                "epn.value": "42.5",
                "cu": "EUR",
                "pr1": "idSKU-1~pr21.25~qt2",
            }
            assert purchase_hit.headers["Content-Type"].startswith("text/plain")
            assert "Chrome" in purchase_hit.headers["User-Agent"]
            assert purchase_hit.headers["X-Forwarded-For"] == "127.0.0.1"
            await s.drain()
            (purchase,) = s.accepted("Purchase")
            assert purchase["event_id"] == "T-77"
            assert purchase["event_source_url"] == origin + "/"
            assert purchase["custom_data"]["value"] == 42.5
            assert purchase["custom_data"]["currency"] == "EUR"
            user = purchase["user_data"]
            assert user["client_ip_address"] == "127.0.0.1"
            assert "Chrome" in user["client_user_agent"]
            assert s.console_errors == []
