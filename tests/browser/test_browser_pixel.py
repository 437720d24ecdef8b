"""The Meta pixel through the gateway in real Chromium: script proxy, hit proxy, server mirror.

A page on www.shop.test uses the standard Meta base code with its script src swapped to the
gateway (`/p/m/en_US/e.js`); the fake CDN's fbevents.js sends its `/tr` hits next to it
(`/p/m/tr`), the gateway forwards them to the fake upstream and mirrors each event to the Meta
sandbox with the hit's event id.
"""

from __future__ import annotations

import os
import re
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

from gateway.sandbox.cdn import FakeCdn

if not chromium_available():
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the browser tests: .ci/run installs Debian's chromium")
    pytestmark = pytest.mark.skip(reason="Debian chromium is not installed (.ci/run installs it)")

SHIM = Path(__file__).resolve().parents[2] / "static_js" / "shim.js"
PIXEL_ID = "1234567890"
# Meta's standard base code, script src swapped to the gateway.
BASE_CODE = """!function(f,b,e,v,n,t,s){if(f.fbq)return;n=f.fbq=function(){n.callMethod?
n.callMethod.apply(n,arguments):n.queue.push(arguments)};if(!f._fbq)f._fbq=n;n.push=n;
n.loaded=!0;n.version='2.0';n.queue=[];t=b.createElement(e);t.async=!0;t.src=v;
s=b.getElementsByTagName(e)[0];s.parentNode.insertBefore(t,s)}(window,document,'script',
'GATEWAY/p/m/en_US/e.js');"""
PAGES = {
    "/": "fbq('init','1234567890');fbq('track','PageView');"
    "fbq('track','Purchase',{value:19.5,currency:'EUR'},{eventID:'ORDER-9'});",
    # the shim loads first; the page passes no event id, only its order id
    "/shim": "fbq('init','1234567890');fbq('track','PageView');"
    "fbq('track','Purchase',{value:5,currency:'EUR',order_id:'ORD-5'});",
    # fbevents.js runs before DOMContentLoaded and drains the queue at once (a fast or cached
    # script): the shim must have fixed the Purchase by then, not on its next check
    "/shim-early": "fbq('init','1234567890');fbq('track','PageView');"
    "fbq('track','Purchase',{value:5,currency:'EUR',order_id:'ORD-7'});",
}
SYNC_PIXEL = '<script src="GATEWAY/p/m/en_US/e.js"></script>'
"""/shim-early loads fbevents.js synchronously right after the base code."""


@asynccontextmanager
async def pages(gateway_url: str) -> AsyncIterator[str]:
    """Serve the test pages on 127.0.0.1; return their www.shop.test origin."""

    async def page(request: web.Request) -> web.Response:
        shim = '<script src="/shim.js"></script>' if request.path.startswith("/shim") else ""
        script = BASE_CODE.replace("GATEWAY", gateway_url) + PAGES[request.path]
        sync = SYNC_PIXEL.replace("GATEWAY", gateway_url) if request.path == "/shim-early" else ""
        html = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>pixel</title>{shim}"
            f"<script>{script}</script>{sync}</head><body>ok</body></html>"
        )
        return web.Response(text=html, content_type="text/html")

    async def no_icon(request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def shim_js(request: web.Request) -> web.Response:
        return web.Response(text=SHIM.read_text(), content_type="application/javascript")

    app = web.Application()
    for path in PAGES:
        app.router.add_get(path, page)
    app.router.add_get("/shim.js", shim_js)
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


def tr_hits(cdn: FakeCdn) -> list[dict[str, str]]:
    return [dict(parse_qsl(h.query)) for h in cdn.hits if h.path.startswith("/tr")]


@pytest.mark.parametrize(
    ("path", "event_id"), [("/", "ORDER-9"), ("/shim", "ORD-5"), ("/shim-early", "ORD-7")]
)
async def test_meta_base_code_through_gateway_reaches_upstream_and_sandbox(
    tmp_path: Path, path: str, event_id: str
) -> None:
    async with fake_cdn() as (cdn, cdn_url):
        proxy = {
            "enabled": True,
            "vendors": ["meta"],
            "meta_upstream": cdn_url,
            "meta_hits_upstream": cdn_url,
        }
        async with stack(tmp_path, proxy=proxy) as s, pages(s.gateway_url) as origin:
            page = await visit(s, origin + path)
            fbp = (await page.evaluate("document.cookie")).split("_fbp=")[1].split(";")[0]
            assert re.fullmatch(r"fb\.1\.\d{13}\.\d+", fbp)
            # the script came through the gateway's alias, the hits went next to it
            assert cdn.counts["/en_US/fbevents.js"] == 1
            hits = tr_hits(cdn)
            assert [h["ev"] for h in hits] == ["PageView", "Purchase"], hits
            purchase_hit = hits[1]
            assert purchase_hit["id"] == PIXEL_ID
            assert purchase_hit["eid"] == event_id
            assert purchase_hit["fbp"] == fbp
            assert purchase_hit["dl"] == origin + path
            await s.drain()
            (purchase,) = s.accepted("Purchase")
            assert purchase["event_id"] == event_id
            assert purchase["event_source_url"] == origin + path
            assert purchase["custom_data"]["currency"] == "EUR"
            user = purchase["user_data"]
            assert user["fbp"] == fbp
            assert user["client_ip_address"] == "127.0.0.1"
            assert "Chrome" in user["client_user_agent"]
            assert len(s.accepted("PageView")) == 1
            assert s.console_errors == []
