"""X-Forwarded-Proto is believed only from `server.trusted_proxies`, like X-Forwarded-For.

Its one effect is the `Secure` attribute of the cookies the gateway sets (or deletes): a client
connecting directly cannot choose it, a trusted proxy in front (nginx terminating TLS) can.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from gateway.web.middleware import proxied_https

ORIGIN = "https://www.shop.test"
HOST = "track.shop.test"
SITE = {"hosts": [HOST, "www.shop.test"], "allowed_origins": [ORIGIN]}
HIT = json.dumps({"event": "PageView", "url": "https://www.shop.test/?fbclid=AbC-123"})


def _headers(gzipped: bool, **extra: str) -> dict[str, str]:
    out = {"Host": HOST, "Origin": ORIGIN, "Content-Type": "text/plain",
           "User-Agent": "Mozilla/5.0 (test)", **extra}  # fmt: skip
    if gzipped:  # a Content-Encoding sends the request to aiohttp instead of the fast lane
        out["Content-Encoding"] = "gzip"
    return out


async def _cookie_lines(client: Any, gzipped: bool, **extra: str) -> list[str]:
    body = gzip.compress(HIT.encode()) if gzipped else HIT
    resp = await client.post("/e", data=body, headers=_headers(gzipped, **extra))
    assert resp.status == 204
    lines: list[str] = resp.headers.getall("Set-Cookie")
    assert {line.split("=", 1)[0] for line in lines} >= {"_fbc", "_fbp", "_sgv"}
    return lines


@pytest.mark.parametrize("gzipped", [False, True], ids=["lane", "aiohttp"])
async def test_forwarded_proto_from_an_untrusted_peer_is_ignored(
    make_config: Any, gateway: Any, gzipped: bool
) -> None:
    client = await gateway(make_config(site=SITE), run_workers=False)
    lines = await _cookie_lines(client, gzipped, **{"X-Forwarded-Proto": "https"})
    assert not any("Secure" in line for line in lines)


@pytest.mark.parametrize("gzipped", [False, True], ids=["lane", "aiohttp"])
async def test_forwarded_proto_from_a_trusted_proxy_marks_cookies_secure(
    make_config: Any, gateway: Any, gzipped: bool
) -> None:
    config = make_config(site=SITE, server={"trusted_proxies": ["127.0.0.1/32"]})
    client = await gateway(config, run_workers=False)
    lines = await _cookie_lines(client, gzipped, **{"X-Forwarded-Proto": "https"})
    assert all("; Secure" in line for line in lines)
    plain = await _cookie_lines(client, gzipped, **{"X-Forwarded-Proto": "http"})
    assert not any("Secure" in line for line in plain)


def test_proxied_https_rules() -> None:
    import ipaddress

    nets = [ipaddress.ip_network("10.0.0.0/8")]
    assert proxied_https("10.1.2.3", "https", nets)
    assert proxied_https("10.1.2.3", "HTTPS, http", nets)  # the first entry counts
    assert not proxied_https("10.1.2.3", "http, https", nets)
    assert not proxied_https("192.0.2.1", "https", nets)
    assert not proxied_https("10.1.2.3", "https", [])
    assert not proxied_https(None, "https", nets)
    assert not proxied_https("not-an-ip", "https", nets)
    assert not proxied_https("10.1.2.3", None, nets)
