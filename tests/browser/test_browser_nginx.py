"""Real Chromium through a real nginx running the shipped nginx.conf, in both modes.

One nginx serves both server blocks of the shipped file on one random high HTTPS port (so this
is also the non-443 check: Host and Origin carry the port): mode A, the shop's own server block
`www.shop.test` serving the shop page (a static file) and the gateway under `/t/`; mode B, the
subdomain `track.shop.test`. nginx reaches the gateway from 127.0.0.2 (`proxy_bind`) while
Chromium connects from 127.0.0.1, so the client IP the gateway forwards to Meta shows whether it
believed nginx's X-Forwarded-For (only because 127.0.0.2 is in `server.trusted_proxies`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import BaseRunner, TestServer
from playwright.async_api import async_playwright

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

from binaries import require_binary
from harness import CHROMIUM, FLAGS, SHOP, TRACK, chromium_available, days_ahead
from nginxrun import Placeholders, free_port, make_certs, render_shipped, running_nginx
from nginxrun import write_main_conf as main_conf

from gateway.app import RUNTIME, Runtime, create_app, make_runner
from gateway.config import parse
from gateway.sandbox.meta import MetaSandbox

if not chromium_available():
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the browser tests: .ci/run installs Debian's chromium")
    pytestmark = pytest.mark.skip(reason="Debian chromium is not installed (.ci/run installs it)")

NGINX_ADDRESS = "127.0.0.2"
CLICK_DAYS = 30.0
ID_DAYS = 200.0
LANDING = "?fbclid=AbC-123&gclid=Cj0KCQ&ttclid=E.C.P.x"
SNIPPET = (
    "<script>window.sg=window.sg||function(){(sg.q=sg.q||[]).push(arguments)};</script>"
    '<script async src="SRC"></script>'
)


class _GatewayServer(TestServer):
    """The runner `signalgate run` uses (fast lane included)."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return make_runner(self.app, **kwargs)


@dataclass
class Front:
    """Chromium, nginx and the gateway behind it."""

    port: int
    sandbox: MetaSandbox
    runtime: Runtime
    context: Any
    console_errors: list[str]

    @property
    def shop_origin(self) -> str:
        return f"https://{SHOP}:{self.port}"

    async def visit(self, target: str) -> None:
        """Open a shop page and wait until the network is quiet."""
        page = await self.context.new_page()
        page.on(
            "console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None
        )
        page.on("pageerror", lambda e: self.console_errors.append(str(e)))
        await page.goto(f"{self.shop_origin}/{target}", wait_until="networkidle")
        await page.close()

    async def cookies(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: dict(c) for c in await self.context.cookies(self.shop_origin + "/")}

    async def purchase(self, order: str) -> dict[str, Any]:
        """Deliver what the gateway holds; return the Purchase Meta accepted for `order`."""
        for worker in self.runtime.workers.values():
            await worker.drain()
        found = [
            e
            for e in self.sandbox.recorder.accepted
            if e["event_name"] == "Purchase" and e["event_id"] == order
        ]
        assert len(found) == 1, self.sandbox.recorder.accepted
        return found[0]


def _write_site(root: Path, port: int) -> None:
    """The shop's static pages: one loading the loader same-origin, one from the subdomain."""
    root.mkdir(parents=True, exist_ok=True)
    track = (
        "var o=new URLSearchParams(location.search).get('order');"
        "if(o)sg('track','Purchase',{value:19.5,currency:'EUR',order_id:o});"
    )
    for name, src in (("path.html", "/t/sg.js"), ("sub.html", f"https://{TRACK}:{port}/sg.js")):
        (root / name).write_text(
            "<!doctype html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
            f"<title>shop</title>{SNIPPET.replace('SRC', src)}</head>"
            f"<body><h1>Shop</h1><script>{track}</script></body></html>"
        )


@asynccontextmanager
async def front(tmp_path: Path, *, trusted: bool = True) -> AsyncIterator[Front]:
    nginx = require_binary("nginx")
    port = free_port()
    sandbox = MetaSandbox(access_tokens={"browser-token"})
    servers: list[TestServer] = [TestServer(sandbox.app(), host="127.0.0.1")]
    await servers[0].start_server()
    site = {
        "id": "shop",
        "api_keys": ["sg_browser_nginx_key_0123456789"],
        "default_country": "us",
        "hosts": [SHOP, TRACK],
        "allowed_origins": [f"https://{SHOP}:{port}"],  # mode B; mode A is same-origin
        "click_cookie_days": CLICK_DAYS,
        "id_cookie_days": ID_DAYS,
        "destinations": {
            "meta": {
                "pixel_id": "1234567890",
                "access_token": "browser-token",
                "api_base": str(servers[0].make_url("")).rstrip("/"),
            }
        },
    }
    doc = {
        "server": {
            "trusted_proxies": [f"{NGINX_ADDRESS}/32"] if trusted else [],
            "cookie_secret": "browser-nginx-secret",
        },
        "storage": {"path": str(tmp_path / "gw.db")},
        "delivery": {"merge_seconds": 0.0},
        "sites": [site],
    }
    app = create_app(parse(doc, {}, tmp_path), run_workers=False)
    gateway = _GatewayServer(app, host="127.0.0.1")
    await gateway.start_server()
    servers.append(gateway)
    root = tmp_path / "site"
    _write_site(root, port)
    certs = tmp_path / "certs"
    make_certs(certs, [SHOP, TRACK])
    include = tmp_path / "signalgate-nginx.conf"
    values = Placeholders(
        upstream=f"127.0.0.1:{gateway.port}", port=port, certs=certs, shop_root=root
    )
    include.write_text(render_shipped(values))
    conf = main_conf(tmp_path / "nginx", include, extra_http=f"proxy_bind {NGINX_ADDRESS};")
    errors: list[str] = []
    try:
        async with running_nginx(nginx, conf, port), async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM, args=[*FLAGS, "--ignore-certificate-errors"]
            )
            context = await browser.new_context()
            try:
                yield Front(port, sandbox, app[RUNTIME], context, errors)
            finally:
                await context.close()
                await browser.close()
    finally:
        for server in reversed(servers):
            await server.close()


@pytest.mark.parametrize("page", ["path.html", "sub.html"])
async def test_chromium_gets_first_party_cookies_through_nginx_on_a_non_443_port(
    tmp_path: Path, page: str
) -> None:
    async with front(tmp_path) as f:
        order = f"ORDER-NGINX-{page.split('.')[0].upper()}"
        await f.visit(page + LANDING)  # from an ad click
        await f.visit(f"{page}?order={order}")  # later, the purchase
        cookies = await f.cookies()
        for name in ("_fbc", "_gcl_aw", "ttclid"):
            assert cookies[name]["domain"] == ".shop.test", cookies[name]
            assert CLICK_DAYS - 0.1 < days_ahead(cookies[name]) < CLICK_DAYS + 0.1
            assert cookies[name]["secure"] is True
        for name in ("_fbp", "_sgv"):
            assert cookies[name]["domain"] == ".shop.test", cookies[name]
            assert ID_DAYS - 0.1 < days_ahead(cookies[name]) < ID_DAYS + 0.1
            assert cookies[name]["secure"] is True
        assert cookies["_fbc"]["value"].endswith(".AbC-123")
        assert cookies["_gcl_aw"]["value"].endswith(".Cj0KCQ")
        assert cookies["ttclid"]["value"] == "E.C.P.x"
        assert cookies["_sgv"]["httpOnly"] is True
        purchase = await f.purchase(order)
        user = purchase["user_data"]
        assert user["fbc"] == cookies["_fbc"]["value"]
        assert user["fbp"] == cookies["_fbp"]["value"]
        # Chromium's address, from nginx's X-Forwarded-For, not nginx's own 127.0.0.2 (a forged
        # X-Forwarded-For is ignored too: tests/integration/test_nginx.py).
        assert user["client_ip_address"] == "127.0.0.1"
        assert purchase["event_source_url"].startswith(f"{f.shop_origin}/{page}")
        assert f.console_errors == []


async def test_without_nginx_in_trusted_proxies_the_gateway_sees_nginx_as_the_client(
    tmp_path: Path,
) -> None:
    async with front(tmp_path, trusted=False) as f:
        await f.visit("path.html?order=ORDER-UNTRUSTED")
        purchase = await f.purchase("ORDER-UNTRUSTED")
        assert purchase["user_data"]["client_ip_address"] == NGINX_ADDRESS
