"""Real Chromium loads the loader from the gateway over HTTPS and gets Secure cookies.

The gateway terminates TLS itself ([tls] enabled, a `signalgate certs dev` pair); Chromium
trusts only that pair's CA key (`--ignore-certificate-errors-spki-list`), so the handshake,
the chain the gateway sends and the ALPN choice are Chromium's own. The shop page is
https://www.shop.test; the gateway is https://track.shop.test (same site).
"""

from __future__ import annotations

import base64
import hashlib
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.async_api import async_playwright

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

from binaries import require_binary
from harness import API_KEY, FLAGS, SHOP, TRACK

from gateway.app import RUNTIME, create_app, make_runner
from gateway.config import parse
from gateway.devcerts import write_dev_certs
from gateway.sandbox.shop import Shop
from gateway.web.fastlane import LANE
from gateway.web.tls import CertReloader, TlsServing


def spki_hash(pem: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)): what --ignore-certificate-errors-spki-list takes."""
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


async def test_chromium_loads_the_loader_over_https_and_gets_secure_cookies(
    tmp_path: Path,
) -> None:
    chromium = require_binary("chromium")
    certs = write_dev_certs(tmp_path / "certs", [TRACK, SHOP], datetime.now(UTC))
    # The shop is HTTPS too: Chromium's same-site is schemeful, and an http page's request to
    # an https gateway would be cross-site (its SameSite=Lax cookies refused).
    shop = Shop("")
    shop_server = TestServer(shop.app(), host="127.0.0.1")
    await shop_server.start_server(ssl=CertReloader.open(certs.cert, certs.key).context)
    shop_origin = f"https://{SHOP}:{shop_server.port}"
    doc: dict[str, Any] = {
        "server": {"cookie_secret": "browser-tls-secret"},
        "storage": {"path": str(tmp_path / "gw.db")},
        "tls": {"enabled": True, "cert_file": str(certs.cert), "key_file": str(certs.key)},
        "sites": [
            {
                "id": "shop",
                "api_keys": [API_KEY],
                "hosts": [TRACK, SHOP],
                "allowed_origins": [shop_origin],
                "destinations": {
                    "meta": {
                        "pixel_id": "1234567890",
                        "access_token": "t",
                        "api_base": "http://127.0.0.1:9",
                    }
                },
            }
        ],
    }
    config = parse(doc, {}, tmp_path)
    app = create_app(config, run_workers=False)
    runner = make_runner(app, access_log=None)
    await runner.setup()
    tls = TlsServing.open(config.tls)
    await tls.start(runner, "127.0.0.1", 0)
    gateway = f"https://{TRACK}:{tls.https_port}"
    shop.loader_src = f"{gateway}/sg.js"
    loads: list[tuple[str, int]] = []
    responses: list[Any] = []
    errors: list[str] = []
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=chromium,
                args=[*FLAGS, f"--ignore-certificate-errors-spki-list={spki_hash(certs.ca)}"],
            )
            try:
                context = await browser.new_context()
                page = await context.new_page()
                page.on("response", lambda r: responses.append(r))
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("requestfailed", lambda r: errors.append(f"{r.url} {r.failure}"))
                await page.goto(f"{shop_origin}/?fbclid=AbC-123", wait_until="networkidle")
                loads = [(r.url, r.status) for r in responses]
                (loader,) = [r for r in responses if r.url == f"{gateway}/sg.js"]
                security = await loader.security_details()
                cookies = {c["name"]: c for c in await context.cookies(f"{gateway}/")}
                await context.close()
            finally:
                await browser.close()
    finally:
        await tls.stop()
        await runner.cleanup()
        await shop_server.close()
    assert errors == []
    assert (f"{gateway}/sg.js", 200) in loads
    assert security is not None
    assert security["protocol"] in ("TLS 1.2", "TLS 1.3")
    assert security["subjectName"] == TRACK  # the dev leaf, checked by Chromium itself
    assert security["issuer"].startswith("signalgate dev CA")
    assert any(url.startswith(f"{gateway}/e") and status == 204 for url, status in loads), loads
    for name in ("_sgv", "_fbp", "_fbc"):
        assert cookies[name]["secure"] is True, cookies[name]
        assert cookies[name]["domain"] == ".shop.test"
    assert cookies["_fbc"]["value"].endswith(".AbC-123")
    stats = app[RUNTIME].browser_stats()
    assert stats["hits"] >= 1
    lane = app[LANE]
    assert lane.fast + lane.handed_over >= 1  # every connection started on the lane
