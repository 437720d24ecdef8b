"""Browser-test harness: the demo shop and the gateway on test hostnames, real headless Chromium.

Hostnames `www.shop.test` and `track.shop.test` are mapped to 127.0.0.1 inside Chromium with
--host-resolver-rules; every other host fails to resolve, so nothing leaves the machine (and a
vendor pixel from its real CDN is "blocked"). Servers bind 127.0.0.1 on ephemeral ports.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, BrowserContext, async_playwright

from gateway.app import RUNTIME, Runtime, create_app
from gateway.config import parse
from gateway.sandbox.cdn import FakeCdn
from gateway.sandbox.meta import MetaSandbox
from gateway.sandbox.shop import Shop

CHROMIUM = os.environ.get("SIGNALGATE_CHROMIUM", "/usr/bin/chromium")
SHOP = "www.shop.test"
TRACK = "track.shop.test"
API_KEY = "sg_browser_test_key_0123456789"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--host-resolver-rules=MAP *.shop.test 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE localhost",
]


def chromium_available() -> bool:
    """Return whether the Debian chromium binary is installed."""
    return shutil.which(CHROMIUM) is not None or Path(CHROMIUM).exists()


@dataclass
class Stack:
    """Everything one browser test talks to."""

    shop_url: str
    gateway_url: str
    sandbox: MetaSandbox
    runtime: Runtime
    context: BrowserContext
    console_errors: list[str]

    async def drain(self) -> None:
        """Deliver everything the gateway holds to the sandbox."""
        for worker in self.runtime.workers.values():
            await worker.drain()

    async def cookies(self) -> dict[str, dict[str, Any]]:
        """Return the browser's cookies for the shop, by name."""
        return {c["name"]: dict(c) for c in await self.context.cookies(f"http://{SHOP}/")}

    def accepted(self, name: str | None = None) -> list[dict[str, Any]]:
        """Return the events the sandbox accepted (optionally of one name)."""
        events = self.sandbox.recorder.accepted
        return [e for e in events if name is None or e["event_name"] == name]


@asynccontextmanager
async def fake_cdn() -> AsyncIterator[tuple[FakeCdn, str]]:
    """A fake vendor CDN on 127.0.0.1; yields it and its base URL."""
    cdn = FakeCdn()
    server = TestServer(cdn.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield cdn, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def _serve(app: web.Application) -> TestServer:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@asynccontextmanager
async def stack(
    tmp_path: Path,
    *,
    mode: str = "subdomain",
    consent: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    proxy: dict[str, Any] | None = None,
) -> AsyncIterator[Stack]:
    """Start sandbox, gateway, shop and a fresh browser context; tear all down after."""
    sandbox = MetaSandbox(access_tokens={"browser-token"})
    sandbox_server = await _serve(sandbox.app())
    servers = [sandbox_server]
    # The gateway's port is needed for the shop's origin list and vice versa: bind the shop
    # first with a placeholder loader, then point it at the gateway.
    shop = Shop("")
    shop_server = await _serve(shop.app())
    servers.append(shop_server)
    shop_origin = f"http://{SHOP}:{shop_server.port}"
    site: dict[str, Any] = {
        "id": "shop",
        "api_keys": [API_KEY],
        "default_country": "us",
        "hosts": [TRACK, SHOP],
        "allowed_origins": [shop_origin],
        "consent": consent or {},
        "destinations": {
            "meta": {
                "pixel_id": "1234567890",
                "access_token": "browser-token",
                "api_base": str(sandbox_server.make_url("")).rstrip("/"),
            }
        },
    }
    if proxy is not None:  # the site's [sites.proxy] table (script and hit proxy)
        site["proxy"] = proxy
    doc = {
        "server": {"trusted_proxies": ["127.0.0.1/32"], "cookie_secret": "browser-test-secret"},
        "storage": {"path": str(tmp_path / "gw.db")},
        "delivery": {"merge_seconds": 0.0},
        "sites": [site],
    }
    app = create_app(parse(doc, {}, tmp_path), run_workers=False)
    gateway_server = await _serve(app)
    servers.append(gateway_server)
    gateway_url = f"http://{TRACK}:{gateway_server.port}"
    if mode == "subdomain":
        shop.loader_src = f"{gateway_url}/sg.js"
    else:
        shop.loader_src = "/t/sg.js"
        shop.gateway_url = f"http://127.0.0.1:{gateway_server.port}"
    errors: list[str] = []
    async with async_playwright() as pw:
        browser: Browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = await browser.new_context(extra_http_headers=headers)
        try:
            yield Stack(shop_origin, gateway_url, sandbox, app[RUNTIME], context, errors)
        finally:
            await context.close()
            await browser.close()
            for server in reversed(servers):
                await server.close()


async def open_page(s: Stack, path: str) -> Any:
    """Open a shop page, collecting console errors, and wait until the network is idle."""
    page = await s.context.new_page()
    page.on("console", lambda m: s.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: s.console_errors.append(str(e)))
    await page.goto(s.shop_url + path, wait_until="networkidle")
    return page


def days_ahead(cookie: dict[str, Any]) -> float:
    """Return how many days from now a cookie expires."""
    return (float(cookie["expires"]) - time.time()) / 86400
