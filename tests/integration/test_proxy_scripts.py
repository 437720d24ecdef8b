"""Script proxy: vendor scripts from the site's host via a fixed route table, cached, never open."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import FakeClock

from gateway.config import PROXY_VENDORS, ConfigError, parse
from gateway.sandbox.cdn import FakeCdn
from gateway.web.proxy import PROXY
from gateway.web.script_cache import MAX_BODY_BYTES
from gateway.web.script_routes import ROUTES

HOST = "www.shop.test"
META = "/p/m/en_US/e.js"
META_UPSTREAM = "/en_US/fbevents.js"


@dataclass
class Harness:
    client: Any
    cdn: FakeCdn
    clock: FakeClock

    async def get(self, path: str, **headers: str) -> aiohttp.ClientResponse:
        return await self.client.get(path, headers={"Host": HOST, **headers})


def proxy_site(base: str, **proxy: Any) -> dict[str, Any]:
    upstreams = {f"{vendor}_upstream": base for vendor in PROXY_VENDORS}
    return {"hosts": [HOST], "proxy": {"enabled": True, **upstreams, **proxy}}


Start = Callable[..., Awaitable[Harness]]


@pytest.fixture
def start(make_config: Any, gateway: Any, cdn: tuple[FakeCdn, str]) -> Start:
    async def factory(*, base: str | None = None, **proxy: Any) -> Harness:
        fake, url = cdn
        clock = FakeClock()
        config = make_config(site=proxy_site(base or url, **proxy))
        client = await gateway(config, clock=clock, run_workers=False)
        return Harness(client, fake, clock)

    return factory


async def raw_get(client: Any, target: str, host: str = HOST) -> int:
    """Send a request line exactly as written (no client-side URL normalisation)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return int(data.split(b" ", 2)[1])


# --- the route table ------------------------------------------------------------------------


def test_every_vendor_has_routes_and_aliases_avoid_blocklist_words() -> None:
    assert {r.vendor for r in ROUTES} == set(PROXY_VENDORS)
    words = ("track", "pixel", "analytics", "collect", "gtag", "gtm", "fbevents", "ads", "tag")
    for route in ROUTES:
        alias = "/".join(s for s in route.alias if not s.startswith("{")).lower()
        assert not any(word in alias for word in words), alias
        assert not {"tr", "t.gif", "p.gif"} & set(route.alias), alias


@pytest.mark.parametrize(
    ("path", "upstream_path", "upstream_query"),
    [
        (META, META_UPSTREAM, ""),
        ("/p/m/de_DE/e.js?cb=123", "/de_DE/fbevents.js", ""),
        (
            "/p/m/c/1234567890?r=stable&v=2.9.170&domain=x",
            "/signals/config/1234567890",
            "v=2.9.170&r=stable",
        ),
        ("/p/t/e.js?lib=ttq&sdkid=C4ABCDEF12", "/i18n/pixel/events.js", "sdkid=C4ABCDEF12&lib=ttq"),
        ("/p/g/js?l=dataLayer&id=G-ABC123XYZ&x=1", "/gtag/js", "id=G-ABC123XYZ&l=dataLayer"),
        ("/p/g/m.js?id=GTM-ABCD123", "/gtm.js", "id=GTM-ABCD123"),
        ("/p/s/e.js", "/scevent.min.js", ""),
        ("/p/i/c.js", "/ct/core.js", ""),
        ("/p/b/u.js", "/bat.js", ""),
        ("/p/r/e.js?pixel_id=1", "/ads/pixel.js", ""),
    ],
)  # fmt: skip
async def test_route_table_maps_alias_to_upstream(
    start: Start, path: str, upstream_path: str, upstream_query: str
) -> None:
    h = await start()
    resp = await h.get(path)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/javascript; charset=utf-8"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert [(s.path, s.query) for s in h.cdn.seen] == [(upstream_path, upstream_query)]
    assert await resp.read() == h.cdn.body_for(upstream_path, upstream_query)


# --- caching --------------------------------------------------------------------------------


async def test_second_request_is_served_from_cache(start: Start) -> None:
    h = await start()
    first = await h.get(META)
    second = await h.get(META)
    assert (first.status, second.status) == (200, 200)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert await first.read() == await second.read()
    assert first.headers["Cache-Control"] == "public, max-age=300"
    assert first.headers["ETag"] == second.headers["ETag"]
    assert first.headers["ETag"].startswith('W/"')
    assert h.cdn.counts[META_UPSTREAM] == 1


async def test_browser_revalidation_gets_304(start: Start) -> None:
    h = await start()
    etag = (await h.get(META)).headers["ETag"]
    resp = await h.get(META, **{"If-None-Match": etag})
    assert resp.status == 304
    assert resp.headers["ETag"] == etag
    assert await resp.read() == b""
    assert h.cdn.counts[META_UPSTREAM] == 1


async def test_etag_revalidation_after_ttl_keeps_body_and_refreshes(start: Start) -> None:
    h = await start(cache_seconds=60)
    first = await h.get(META)
    body = await first.read()
    h.clock.advance(61)
    again = await h.get(META)
    assert again.headers["X-Cache"] == "REVALIDATED"
    assert await again.read() == body
    assert again.headers["ETag"] == first.headers["ETag"]
    assert h.cdn.not_modified[META_UPSTREAM] == 1
    assert h.cdn.seen[-1].headers["If-None-Match"].startswith('"v1-')
    assert (await h.get(META)).headers["X-Cache"] == "HIT"
    assert h.cdn.counts[META_UPSTREAM] == 2
    # A new upstream version replaces the copy (and our ETag) at the next revalidation.
    h.cdn.version = 2
    h.clock.advance(61)
    changed = await h.get(META)
    assert changed.headers["X-Cache"] == "MISS"
    assert b"v2" in await changed.read()
    assert changed.headers["ETag"] != first.headers["ETag"]


# --- upstream failures ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 500},
        {"status": 404},
        {"redirect_to": "/elsewhere.js"},
        {"content_type": "text/html; charset=utf-8", "etags": False},
        {"latency": 0.5},
    ],
)
async def test_stale_copy_is_served_when_upstream_fails(
    start: Start, fault: dict[str, Any]
) -> None:
    h = await start(cache_seconds=60, max_stale_seconds=1000, timeout_seconds=0.1)
    body = await (await h.get(META)).read()
    h.clock.advance(61)
    h.cdn.faults.update(fault)
    stale = await h.get(META)
    assert stale.status == 200
    assert stale.headers["X-Cache"] == "STALE"
    assert await stale.read() == body
    assert h.cdn.counts["/elsewhere.js"] == 0  # a redirect is never followed
    asked = h.cdn.total
    assert (await h.get(META)).headers["X-Cache"] == "STALE"
    assert h.cdn.total == asked  # backing off: upstream is not asked again at once
    h.clock.advance(11)
    assert (await h.get(META)).headers["X-Cache"] == "STALE"
    assert h.cdn.total == asked + 1
    h.clock.advance(1000)  # now more than max_stale past freshness
    gone = await h.get(META)
    assert gone.status == 502
    assert gone.headers["Cache-Control"] == "no-store"
    h.cdn.faults.reset()
    h.clock.advance(11)
    back = await h.get(META)
    assert back.status == 200
    assert await back.read() == body


@pytest.mark.parametrize("fault", [{"status": 503}, {"redirect_to": "http://127.0.0.1:9/x.js"}])
async def test_no_copy_and_failing_upstream_is_502(start: Start, fault: dict[str, Any]) -> None:
    h = await start()
    h.cdn.faults.update(fault)
    resp = await h.get(META)
    assert resp.status == 502
    assert (await resp.json())["error"] == "bad_gateway"
    assert "Location" not in resp.headers
    assert h.cdn.counts["/elsewhere.js"] == 0


async def test_unreachable_upstream_is_502(start: Start) -> None:
    h = await start(base="http://127.0.0.1:9")
    assert (await h.get(META)).status == 502


@pytest.mark.parametrize(
    "fault",
    [
        {"oversized": MAX_BODY_BYTES + 1},  # gzip on the wire: small, too big once decompressed
        {"oversized": MAX_BODY_BYTES + 1, "gzip": False},  # Content-Length over the limit
        {"oversized": MAX_BODY_BYTES + 1, "gzip": False, "chunked": True},  # read past the limit
    ],
)
async def test_oversized_upstream_body_is_502(start: Start, fault: dict[str, Any]) -> None:
    h = await start()
    h.cdn.faults.update(fault)
    assert (await h.get(META)).status == 502
    h.cdn.faults.reset()
    h.clock.advance(11)
    assert (await h.get(META)).status == 200


async def test_concurrent_misses_share_one_upstream_fetch(start: Start) -> None:
    h = await start()
    h.cdn.faults.latency = 0.2
    responses = await asyncio.gather(*(h.get(META) for _ in range(20)))
    assert [r.status for r in responses] == [200] * 20
    assert len({await r.read() for r in responses}) == 1
    assert h.cdn.counts[META_UPSTREAM] == 1
    assert h.client.app[PROXY].stats.fetches == 1


async def test_concurrent_misses_share_one_failing_fetch(start: Start) -> None:
    h = await start()
    h.cdn.faults.update({"latency": 0.1, "status": 500})
    responses = await asyncio.gather(*(h.get(META) for _ in range(20)))
    assert [r.status for r in responses] == [502] * 20
    assert h.cdn.counts[META_UPSTREAM] == 1


# --- headers in and out ---------------------------------------------------------------------


async def test_upstream_cookies_and_headers_are_never_passed_on(start: Start) -> None:
    h = await start(cache_seconds=60)
    h.cdn.faults.set_cookie = True
    visitor = {"Cookie": "_fbp=fb.1.1.1; session=secret", "Authorization": "Bearer secret",
               "User-Agent": "Visitor/1.0", "X-Forwarded-For": "203.0.113.9"}  # fmt: skip
    resp = await h.get(META, **visitor)
    assert resp.status == 200
    assert "Set-Cookie" not in resp.headers
    assert "X-Fake-Cdn" not in resp.headers
    h.clock.advance(61)
    assert (await h.get(META, **visitor)).headers["X-Cache"] == "REVALIDATED"
    for seen in h.cdn.seen:
        assert "Cookie" not in seen.headers  # neither the visitor's nor the upstream's own
        assert "Authorization" not in seen.headers
        assert "X-Forwarded-For" not in seen.headers
        assert seen.headers["User-Agent"] == "signalgate-script-proxy"


async def test_host_header_games_never_change_the_upstream(start: Start) -> None:
    h = await start()
    assert (await h.client.get(META, headers={"Host": "evil.example"})).status == 404
    assert h.cdn.total == 0
    tricks = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "gopher",
              "Forwarded": "host=evil.example;proto=http", "X-Original-URL": "/admin"}  # fmt: skip
    resp = await h.client.get(META, headers={"Host": f"{HOST}:8443", **tricks})
    assert resp.status == 200
    cdn_host = h.cdn.seen[-1].headers["Host"]
    assert cdn_host.startswith("127.0.0.1:")
    assert h.cdn.seen[-1].path == META_UPSTREAM
    # An absolute-form request target names another host: refused before anything else.
    assert await raw_get(h.client, f"http://evil.example{META}") == 400
    assert h.cdn.total == 1


async def test_gzip_is_passed_through_or_decompressed(start: Start) -> None:
    h = await start()
    url = h.client.make_url(META)
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        zipped = await session.get(url, headers={"Host": HOST, "Accept-Encoding": "gzip, br"})
        raw = await zipped.read()
        plain = await session.get(url, headers={"Host": HOST, "Accept-Encoding": "identity"})
        refused = await session.get(url, headers={"Host": HOST, "Accept-Encoding": "gzip;q=0"})
        text = await plain.read()
        assert zipped.headers["Content-Encoding"] == "gzip"
        assert "Content-Encoding" not in plain.headers
        assert "Content-Encoding" not in refused.headers
        assert zipped.headers["Vary"] == "Accept-Encoding"
        assert raw == gzip.compress(h.cdn.body_for(META_UPSTREAM, ""), mtime=0)  # upstream bytes
        assert gzip.decompress(raw) == text == await refused.read()
        assert zipped.headers["ETag"] == plain.headers["ETag"]
    assert h.cdn.counts[META_UPSTREAM] == 1


async def test_identity_upstream_is_served_identity(start: Start) -> None:
    h = await start()
    h.cdn.faults.gzip = False
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        resp = await session.get(
            h.client.make_url(META), headers={"Host": HOST, "Accept-Encoding": "gzip"}
        )
        assert "Content-Encoding" not in resp.headers
        assert await resp.read() == h.cdn.body_for(META_UPSTREAM, "")


# --- what is refused ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/p/",
        "/p/m/xx_XX/e.js",  # unknown locale
        "/p/m/en_US/fbevents.js",  # only the alias exists
        "/p/m/en_US/e.jsx",
        "/p/m/c/abc",  # pixel ids are digits
        "/p/nope.js",
        "/p/g/js/extra",
        "/p/x/e.js",
        "/p/gtag/js?id=G-ABC123",
    ],
)
async def test_unknown_paths_are_404(start: Start, path: str) -> None:
    h = await start()
    resp = await h.get(path)
    assert resp.status == 404
    assert resp.headers["Cache-Control"] == "no-store"
    assert h.cdn.total == 0


@pytest.mark.parametrize(
    "target",
    [
        "/p/../admin",
        "/p/m/../../etc/passwd",
        "/p/./m/en_US/e.js",
        "/p/m/%2e%2e/x",
        "/p//m/en_US/e.js",
        "/p/m/en_US/e.js/",
        "/p/m%2fen_US%2fe.js",
        "/p/m%2Fen_US/e.js",
        "/p/m%5cen_US/e.js",
        "/p/m\\en_US\\e.js",
        "/%70/m/en_US/e.js",
        "/p/https://evil.example/x.js",
        "/p/http:%2F%2Fevil.example%2Fx.js",
        "/p/m/en_US/e.js%3Fid=1",
        "http://evil.example/p/m/en_US/e.js",
        "/p/g/js",  # id is required
        "/p/g/js?id=../../x",
        "/p/g/js?id=https://evil.example/",
        "/p/g/js?id=G-ABC123&id=G-DEF456",
        "/p/t/e.js?sdkid=x%0d%0aSet-Cookie:a=b",
        "/p/m/c/123?v=../x",
    ],
)
async def test_traversal_encoded_slashes_and_absolute_urls_are_400(
    start: Start, target: str
) -> None:
    h = await start()
    assert await raw_get(h.client, target) == 400
    assert h.cdn.total == 0


async def test_disabled_proxy_is_404(make_config: Any, gateway: Any) -> None:
    client = await gateway(make_config(site={"hosts": [HOST]}), run_workers=False)
    assert (await client.get(META, headers={"Host": HOST})).status == 404
    assert PROXY not in client.app


async def test_only_enabled_vendors_are_served(start: Start) -> None:
    h = await start(vendors=["google"])
    assert (await h.get(META)).status == 404
    assert (await h.get("/p/g/js?id=G-ABC123")).status == 200
    assert h.cdn.total == 1


async def test_prefix_is_renamable(start: Start) -> None:
    h = await start(prefix="/assets/v7/", cache_seconds=120)
    resp = await h.get("/assets/v7/m/en_US/e.js")
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "public, max-age=120"
    assert (await h.get(META)).status == 404


def test_proxy_config_errors_name_the_key(tmp_path: Path) -> None:
    bad = {"prefix": "/", "vendors": ["meta", "myspace"], "meta_upstream": "file:///etc/passwd",
           "cache_seconds": -1, "colour": 1}  # fmt: skip
    with pytest.raises(ConfigError) as info:
        parse({"sites": [{"id": "s", "proxy": bad}]}, {}, tmp_path)
    assert set(dict(info.value.errors)) == {
        "sites[0].proxy.prefix",
        "sites[0].proxy.vendors[1]",
        "sites[0].proxy.meta_upstream",
        "sites[0].proxy.cache_seconds",
        "sites[0].proxy.colour",
    }
