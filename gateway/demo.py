"""`signalgate demo`: the gateway on embedded defaults, one local sandbox per platform, a shop.

Every registered platform with a sandbox takes part: the demo starts its emulator on 127.0.0.1
and gives the demo site a destination pointing at it, so one Purchase posted to the gateway can
be watched arriving at every platform. Adding a platform to the demo is one `DemoPlatform` line
in `DEMO_PLATFORMS`. Meta's sandbox listens on `--sandbox-port`; the others on free ports.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shlex
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from gateway.app import create_app
from gateway.config import Config, parse
from gateway.sandbox.ga4 import GA4Sandbox
from gateway.sandbox.google_ads import GoogleAdsSandbox
from gateway.sandbox.linkedin import LinkedInSandbox
from gateway.sandbox.meta import MetaSandbox
from gateway.sandbox.microsoft import MicrosoftSandbox
from gateway.sandbox.pinterest import PinterestSandbox
from gateway.sandbox.reddit import RedditSandbox
from gateway.sandbox.shop import Shop
from gateway.sandbox.snap import SnapSandbox
from gateway.sandbox.tiktok import TikTokSandbox
from gateway.sandbox.x import XSandbox

DEMO_SHOP_HOST = "www.shop.localhost"
DEMO_TRACK_HOST = "track.shop.localhost"
DEMO_PIXEL = "1234567890"


class Served(Protocol):
    """What the demo needs of a sandbox: an aiohttp application to serve."""

    def app(self) -> web.Application:
        """Return the emulator's application."""


@dataclass(frozen=True, slots=True)
class DemoPlatform:
    """One platform in the demo: its sandbox and the destination settings that reach it."""

    name: str
    """Destination name (the key under `[sites.destinations]`)."""
    title: str
    sandbox: Callable[[], Served]
    settings: Callable[[str], dict[str, Any]]
    """Sandbox base URL → the destination's settings (credentials the sandbox accepts)."""


def _token(name: str) -> str:
    return f"demo-{name}-token"


_X_OAUTH: Mapping[str, str] = {
    "consumer_key": "demo-x-consumer-key",
    "consumer_secret": "demo-x-consumer-secret",
    "access_token": "demo-x-access-token",
    "access_token_secret": "demo-x-access-token-secret",
}
"""X signs requests with OAuth 1.0a: the same four values for the destination and its sandbox."""

_GOOGLE_CLIENT = "123456789012-demo.apps.googleusercontent.com"

DEMO_PLATFORMS: tuple[DemoPlatform, ...] = (
    DemoPlatform(
        "meta",
        "Meta",
        MetaSandbox,
        lambda base: {
            "pixel_id": DEMO_PIXEL,
            "access_token": "demo-access-token",
            "api_base": base,
            "test_event_code": "TEST12345",
        },
    ),
    DemoPlatform(
        "tiktok",
        "TikTok",
        lambda: TikTokSandbox(access_tokens={_token("tiktok")}),
        lambda base: {
            "pixel_code": "CDEMO0000000000000AB",
            "access_token": _token("tiktok"),
            "api_base": base,
        },
    ),
    DemoPlatform(
        "snap",
        "Snap",
        lambda: SnapSandbox(access_tokens={_token("snap")}),
        lambda base: {
            "pixel_id": "5bf81ee1-15b1-4dc1-b636-d7dae49b950e",
            "access_token": _token("snap"),
            "api_base": base,
        },
    ),
    DemoPlatform(
        "pinterest",
        "Pinterest",
        lambda: PinterestSandbox(access_tokens={_token("pinterest")}, ad_accounts={"549755885175"}),
        lambda base: {
            "ad_account_id": "549755885175",
            "access_token": _token("pinterest"),
            "api_base": base,
        },
    ),
    DemoPlatform(
        "reddit",
        "Reddit",
        lambda: RedditSandbox(access_tokens={_token("reddit")}, pixel_ids={"a2_demo12345678"}),
        lambda base: {
            "pixel_id": "a2_demo12345678",
            "access_token": _token("reddit"),
            "api_base": base,
        },
    ),
    DemoPlatform(
        "linkedin",
        "LinkedIn",
        lambda: LinkedInSandbox(access_tokens={_token("linkedin")}, rules={"104012"}),
        lambda base: {
            "purchase_rule": "104012",
            "access_token": _token("linkedin"),
            "api_base": base,
        },
    ),
    DemoPlatform(
        "microsoft",
        "Microsoft",
        lambda: MicrosoftSandbox(access_tokens={_token("microsoft")}),
        lambda base: {"tag_id": "343012345", "access_token": _token("microsoft"), "api_base": base},
    ),
    DemoPlatform(
        "ga4",
        "GA4",
        lambda: GA4Sandbox(api_secrets={_token("ga4")}, measurement_ids={"G-DEMO12345"}),
        lambda base: {
            "measurement_id": "G-DEMO12345",
            "api_secret": _token("ga4"),
            "api_base": base,
        },
    ),
    DemoPlatform(
        "google_ads",
        "Google Ads",
        lambda: GoogleAdsSandbox(
            client_id=_GOOGLE_CLIENT,
            client_secret=_token("google-client-secret"),
            refresh_token=_token("google-refresh"),
            developer_token=_token("google-developer"),
            customers={"1234567890"},
            actions={"987654321"},
        ),
        lambda base: {
            "customer_id": "1234567890",
            "purchase_action": "987654321",
            "developer_token": _token("google-developer"),
            "client_id": _GOOGLE_CLIENT,
            "client_secret": _token("google-client-secret"),
            "refresh_token": _token("google-refresh"),
            "token_url": f"{base}/token",
            "api_base": base,
        },
    ),
    DemoPlatform(
        "x",
        "X",
        lambda: XSandbox(
            consumer_key=_X_OAUTH["consumer_key"],
            consumer_secret=_X_OAUTH["consumer_secret"],
            access_token=_X_OAUTH["access_token"],
            access_token_secret=_X_OAUTH["access_token_secret"],
            event_ids={"o87ne"},
            pixel_ids={"o8z6j"},
        ),
        lambda base: {
            "pixel_id": "o8z6j",
            "purchase_event_id": "o87ne",
            **_X_OAUTH,
            "api_base": base,
        },
    ),
)
"""The platforms the demo runs, Meta first (its sandbox is the one on `--sandbox-port`)."""


def demo_config(
    host: str,
    port: int,
    sandbox_urls: Mapping[str, str],
    data_dir: Path,
    api_key: str,
    admin: str,
    shop_origin: str = "",
) -> Config:
    """Return the embedded demo configuration (*.localhost names resolve to loopback).

    `sandbox_urls` maps destination names to sandbox base URLs; the site sends to each.
    """
    by_name = {platform.name: platform for platform in DEMO_PLATFORMS}
    doc: dict[str, Any] = {
        "server": {"host": host, "port": port, "admin_token": admin},
        "storage": {"path": str(data_dir / "signalgate.db")},
        "delivery": {"poll_interval": 0.1, "retry_base_seconds": 0.5, "merge_seconds": 0.3},
        "sites": [
            {
                "id": "demo",
                "api_keys": [api_key],
                "default_country": "us",
                "hosts": [DEMO_TRACK_HOST, "127.0.0.1", "localhost"],
                "allowed_origins": [shop_origin] if shop_origin else [],
                "destinations": {
                    name: by_name[name].settings(url) for name, url in sandbox_urls.items()
                },
            }
        ],
    }
    return parse(doc, {}, data_dir)


DEMO_PURCHASE: dict[str, Any] = {
    "event": "Purchase",
    "url": "https://shop.example/checkout/thank-you",
    "user": {
        "email": "Jane.Doe@Example.com",
        "phone": "(650) 555-1212",
        "ip": "203.0.113.7",
        "user_agent": "Mozilla/5.0 (demo)",
        "click_ids": {"ga": "1234567890.1700000000"},
    },
    "data": {"value": 49.9, "currency": "EUR", "order_id": "ORDER-1001"},
}
"""The Purchase the printed curl posts: identifiers, and the visitor's GA client id (the `_ga`
cookie minus `GA1.1.`, which GA4 requires; the backend reads it from the request)."""


def demo_curl(gateway: str, sandbox: str, api_key: str) -> str:
    """Return a shell one-liner that posts a Purchase and then shows what the sandbox got."""
    body = {"events": [DEMO_PURCHASE]}
    post = (
        f"curl -sS -X POST {gateway}/v1/events -H 'Authorization: Bearer {api_key}' "
        f"-H 'Content-Type: application/json' -d {shlex.quote(json.dumps(body))}"
    )
    return f"{post} && echo && sleep 1 && curl -sS {sandbox}/_sandbox/events"


async def _start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, bound_port(runner)


async def run_demo(
    host: str,
    port: int,
    sandbox_port: int,
    shop_port: int,
    data_dir: str | None,
    *,
    show: Callable[[str], None],
) -> None:
    """Start the sandboxes, the shop and the gateway; `show` the banner; run until cancelled."""
    folder = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="signalgate-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    runners: list[web.AppRunner] = []
    try:
        sandbox_urls: dict[str, str] = {}
        for index, platform in enumerate(DEMO_PLATFORMS):
            runner, bound = await _start(
                platform.sandbox().app(), "127.0.0.1", sandbox_port if index == 0 else 0
            )
            runners.append(runner)
            sandbox_urls[platform.name] = f"http://127.0.0.1:{bound}"
        shop = Shop("")
        shop_runner, shop_bound = await _start(shop.app(), host, shop_port)
        runners.append(shop_runner)
        shop_url = f"http://{DEMO_SHOP_HOST}:{shop_bound}"
        api_key = "sg_demo_" + secrets.token_urlsafe(18)
        admin = secrets.token_urlsafe(18)
        config = demo_config(host, port, sandbox_urls, folder, api_key, admin, shop_url)
        runner, bound = await _start(create_app(config), host, port)
        runners.insert(0, runner)  # the gateway stops first
        gateway = f"http://{host}:{bound}"
        shop.loader_src = f"http://{DEMO_TRACK_HOST}:{bound}/sg.js"
        show(banner(gateway, sandbox_urls, shop_url, folder, api_key, admin))
        await asyncio.Event().wait()
    finally:
        for runner in runners:
            await runner.cleanup()


def banner(
    gateway: str,
    sandbox_urls: Mapping[str, str],
    shop_url: str,
    folder: Path,
    api_key: str,
    admin: str,
) -> str:
    """Return what the demo prints once it runs (the admin curl is its last line)."""
    titles = {platform.name: platform.title for platform in DEMO_PLATFORMS}
    sandboxes = [f"  {titles[name]:<14} {url}/" for name, url in sandbox_urls.items()]
    meta = sandbox_urls["meta"]
    return "\n".join(
        [
            "signalgate demo is running (Ctrl-C to stop)",
            f"  gateway        {gateway}",
            f"  Meta sandbox   {meta}/   (open it to see delivered events)",
            f"  demo shop      {shop_url}/?fbclid=AbC-123   (click through to a purchase;"
            " *.localhost resolves to this machine in Chrome and Firefox)",
            f"  data dir       {folder}",
            f"  API key        {api_key}",
            f"  admin token    {admin}",
            "",
            "Every platform's sandbox (open one to see what it received):",
            *sandboxes,
            "",
            "Post a Purchase and see it delivered to the sandbox:",
            "  " + demo_curl(gateway, meta, api_key),
            "",
            "Delivery state (admin):",
            f"  curl -sS -H 'Authorization: Bearer {admin}' {gateway}/v1/debug/recent",
        ]
    )


def bound_port(runner: web.AppRunner) -> int:
    """Return the TCP port a started runner listens on."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("server has no TCP address")  # pragma: no cover
