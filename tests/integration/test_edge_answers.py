"""HTTP edge answers on both roads (fast lane and aiohttp): a non-ASCII Authorization is a 401,
CORS compares scheme, host and port, and a hit answer is never gzip for a client that did not
accept gzip."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from rawhttp import Answer, LaneClient

from gateway.config import PROXY_VENDORS
from gateway.sandbox.cdn import GIF, FakeCdn

HOST = "www.shop.test"
SHOP = "https://www.shop.test"
PORTED = "https://app.shop.test:8443"
TRACK = "track.shop.test"
ROADS = ("lane", "aiohttp")
AIOHTTP_ONLY = b"X-Road: aiohttp\r\nX-Road: aiohttp\r\n"
"""A repeated header: the lane leaves the request to aiohttp (which joins repeats)."""


def head(road: str, line: str, *lines: str | bytes) -> bytes:
    out = [line.encode("latin-1") + b"\r\n", f"Host: {HOST}\r\n".encode()]
    for item in lines:
        out.append((item.encode("latin-1") if isinstance(item, str) else item) + b"\r\n")
    if road == "aiohttp":
        out.append(AIOHTTP_ONLY)
    return b"".join(out) + b"\r\n"


@pytest.fixture
async def edge(make_config: Any, gateway: Any, cdn: tuple[FakeCdn, str]) -> tuple[Any, FakeCdn]:
    fake, url = cdn
    upstreams = {f"{v}_upstream": url for v in PROXY_VENDORS}
    upstreams |= {f"{v}_hits_upstream": url for v in ("meta", "tiktok", "snap", "google")}
    site = {
        "hosts": [HOST, TRACK],
        "allowed_origins": [SHOP, PORTED],
        "proxy": {"enabled": True, **upstreams},
    }
    client = await gateway(make_config(site=site), run_workers=False)
    return LaneClient(client), fake


async def ask(edge: Any, data: bytes) -> Answer:
    conn = await edge.connect()
    try:
        return await conn.ask(data)
    finally:
        conn.close()


# --- 5. non-ASCII Authorization -> 401 ---------------------------------------------------------

AUTH_VALUES = (
    b"Authorization: Bearer \xff\xfe\x80",
    b"Authorization: Bearer caf\xc3\xa9",
    b"Authorization: \xe2\x82\xac \xe2\x82\xac",
)
AUTH_ROUTES = (
    ("POST /v1/events HTTP/1.1", b'{"events": []}'),
    ("GET /v1/debug/recent HTTP/1.1", b""),
    ("GET /v1/debug/dead HTTP/1.1", b""),
    ("POST /v1/erase HTTP/1.1", b'{"email": "a@b.test"}'),
    ("DELETE /v1/visitors/abc HTTP/1.1", b""),
)


@pytest.mark.parametrize("road", ROADS)
@pytest.mark.parametrize("value", AUTH_VALUES)
@pytest.mark.parametrize(("line", "body"), AUTH_ROUTES)
async def test_non_ascii_authorization_is_401_json_never_500(
    edge: tuple[Any, FakeCdn], road: str, value: bytes, line: str, body: bytes
) -> None:
    lane, _ = edge
    fields: list[str | bytes] = [value, "Content-Type: application/json"]
    if body:
        fields.append(f"Content-Length: {len(body)}")
    answer = await ask(lane, head(road, line, *fields) + body)
    assert answer.status == 401, (answer.status, answer.body)
    assert answer.headers["content-type"].startswith("application/json")
    assert json.loads(answer.body)["error"] == "unauthorized"


# --- 6. CORS on /e: scheme, host and port ------------------------------------------------------


def collect_post(road: str, origin: str, host: str = HOST) -> bytes:
    body = json.dumps({"event": "PageView", "url": "https://www.shop.test/"}).encode()
    lines = [
        "POST /e HTTP/1.1",
        f"Host: {host}",
        f"Origin: {origin}",
        "Content-Type: text/plain",
        f"Content-Length: {len(body)}",
    ]
    data = "\r\n".join(lines).encode() + b"\r\n"
    if road == "aiohttp":
        data += AIOHTTP_ONLY
    return data + b"\r\n" + body


@pytest.mark.parametrize("road", ROADS)
@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (SHOP, TRACK, True),
        ("https://www.shop.test:443", TRACK, True),  # the default port is no port
        ("HTTPS://WWW.Shop.Test", TRACK, True),  # scheme and host are case-insensitive
        ("http://www.shop.test", TRACK, False),  # other scheme
        ("https://www.shop.test:8443", TRACK, False),  # other port
        ("https://www.shop.test:80", TRACK, False),
        (PORTED, TRACK, True),
        ("https://app.shop.test", TRACK, False),  # the allowed one has a port
        ("https://app.shop.test:9443", TRACK, False),
        ("http://app.shop.test:8443", TRACK, False),
        ("https://evil.example", TRACK, False),
        ("https://www.shop.test.evil.example", TRACK, False),
        ("https://www.shop.test@evil.example", TRACK, False),
        ("null", TRACK, False),
        ("https://track.shop.test.", TRACK, True),
        ("evil://track.shop.test", TRACK, False),  # same host, not a web origin
        # Same origin (path mode): host and port of Host, a Host without port = default port.
        ("https://track.shop.test:8443", "track.shop.test:8443", True),
        ("http://track.shop.test:8080", "track.shop.test:8080", True),
        ("http://track.shop.test", "track.shop.test", True),
        ("https://track.shop.test:8443", "track.shop.test", False),
        ("https://track.shop.test", "track.shop.test:8443", False),
        ("http://track.shop.test", "track.shop.test:8080", False),
    ],
)
async def test_collect_cors_compares_scheme_host_and_port(
    edge: tuple[Any, FakeCdn], road: str, origin: str, host: str, allowed: bool
) -> None:
    lane, _ = edge
    answer = await ask(lane, collect_post(road, origin, host))
    if allowed:
        assert answer.status == 204, answer.body
        assert answer.headers["access-control-allow-origin"] == origin
    else:
        assert answer.status == 403, answer.body
        assert "access-control-allow-origin" not in answer.headers


async def test_preflight_compares_scheme_host_and_port(edge: tuple[Any, FakeCdn]) -> None:
    lane, _ = edge
    for origin, status in ((SHOP, 204), ("http://www.shop.test", 403), (PORTED, 204)):
        data = f"OPTIONS /e HTTP/1.1\r\nHost: {TRACK}\r\nOrigin: {origin}\r\n\r\n".encode()
        answer = await ask(lane, data)
        assert answer.status == status, origin


# --- 7. hit answers are not gzip for a client that did not accept gzip ------------------------

META_HIT = "GET /p/m/tr/?id=1234567890&ev=PageView&dl=https%3A%2F%2Fwww.shop.test%2F HTTP/1.1"


@pytest.mark.parametrize("road", ROADS)
@pytest.mark.parametrize(
    ("accept", "coded"),
    [
        (None, False),
        ("identity", False),
        ("br", False),
        ("gzip;q=0, deflate", False),
        ("gzip, deflate, br", True),
        ("*", True),
    ],
)
async def test_gzip_hit_answer_is_decoded_for_a_client_without_gzip(
    edge: tuple[Any, FakeCdn], road: str, accept: str | None, coded: bool
) -> None:
    lane, cdn = edge
    cdn.faults.update({"hit_gzip": True})
    fields = [f"Accept-Encoding: {accept}"] if accept is not None else []
    answer = await ask(lane, head(road, META_HIT, *fields))
    assert answer.status == 200, answer.body
    assert cdn.hits, "the hit reached the upstream"
    if coded:
        assert answer.headers["content-encoding"] == "gzip"
        assert gzip.decompress(answer.body) == GIF
    else:
        assert "content-encoding" not in answer.headers
        assert answer.body == GIF
    assert answer.headers["content-type"] == "image/gif"


@pytest.mark.parametrize("road", ROADS)
async def test_corrupt_gzip_hit_answer_is_502_for_a_client_without_gzip(
    edge: tuple[Any, FakeCdn], road: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lane, cdn = edge
    cdn.faults.update({"hit_gzip": True})
    monkeypatch.setattr(gzip, "compress", lambda data, mtime=0: b"\x1f\x8b not gzip")
    answer = await ask(lane, head(road, META_HIT))
    assert answer.status == 502
    assert "content-encoding" not in answer.headers
