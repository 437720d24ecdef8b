"""Fast lane: hot proxy routes answered from the socket exactly as aiohttp answers them."""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import FakeClock
from rawhttp import Answer, LaneClient

from gateway.config import PROXY_VENDORS
from gateway.sandbox.cdn import FakeCdn
from gateway.web.fastlane_front import MAX_HEAD, FrontProtocol
from gateway.web.hits import HITS, MAX_HIT_BODY
from gateway.web.proxy import PROXY

HOST = "www.shop.test"
SCRIPT = "/p/s/e.js"


def get(target: str, **headers: str) -> bytes:
    lines = [f"GET {target} HTTP/1.1", f"Host: {HOST}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class Gateway(LaneClient):
    cdn: FakeCdn

    async def once(self, data: bytes) -> Answer:
        conn = await self.connect()
        try:
            await conn.send(data)
            return await conn.answer()
        finally:
            conn.close()


@pytest.fixture
async def gw(make_config: Any, gateway: Any, cdn: tuple[FakeCdn, str]) -> Gateway:
    fake, url = cdn
    upstreams = {f"{vendor}_upstream": url for vendor in PROXY_VENDORS}
    config = make_config(site={"hosts": [HOST], "proxy": {"enabled": True, **upstreams}})
    client = await gateway(config, clock=FakeClock(), run_workers=False)
    return Gateway(client, fake)


def comparable(answer: Answer) -> tuple[int, dict[str, str], bytes]:
    headers = {k: v for k, v in answer.headers.items() if k != "date"}
    return answer.status, headers, answer.body


async def test_fresh_script_is_answered_by_the_lane_like_aiohttp(gw: Gateway) -> None:
    miss = await gw.once(get(SCRIPT, Accept_Encoding="gzip"))
    assert miss.status == 200
    assert miss.headers["x-cache"] == "MISS"
    assert gw.lane.fast == 0
    assert gw.lane.handed_over == 1
    # aiohttp's own answers for a HIT: a connection already handed over (an unknown path first).
    slow = await gw.connect()
    await slow.send(get("/nope"))
    assert (await slow.answer()).status == 404
    cases = [
        {"Accept_Encoding": "gzip, deflate, br"},
        {"Accept_Encoding": "br;q=1, gzip;q=0"},
        {},
        {"If_None_Match": miss.headers["etag"]},
        {"If_None_Match": '"other", W/"x"', "Accept_Encoding": "gzip"},
    ]
    fast = await gw.connect()
    for headers in cases:
        await slow.send(get(SCRIPT, **headers))
        await fast.send(get(SCRIPT, **headers))
        expected, got = await slow.answer(), await fast.answer()
        assert comparable(got) == comparable(expected)
        assert got.headers["x-cache"] == "HIT"
        assert "date" in got.headers
    assert gw.lane.fast == len(cases)
    assert gw.lane.handed_over == 2
    slow.close()
    fast.close()
    gzipped = await gw.once(get(SCRIPT, Accept_Encoding="gzip"))
    plain = await gw.once(get(SCRIPT))
    assert gzipped.headers["content-encoding"] == "gzip"
    assert gzip.decompress(gzipped.body) == plain.body
    assert "content-encoding" not in plain.headers
    stats = gw.client.app[PROXY].stats
    assert stats.hits == len(cases) * 2 + 2
    assert stats.misses == 1


async def test_pipelined_requests_are_answered_in_order_across_the_hand_over(gw: Gateway) -> None:
    await gw.once(get(SCRIPT))  # cache it
    conn = await gw.connect()
    await conn.send(
        get(SCRIPT, X_Request_Id="req-1")
        + get(SCRIPT, X_Request_Id="bad id!")
        + get("/healthz", X_Request_Id="req-3")
        + get(SCRIPT, X_Request_Id="req-4")
    )
    answers = [await conn.answer() for _ in range(4)]
    assert [a.status for a in answers] == [200, 200, 200, 200]
    assert [a.headers.get("x-request-id") for a in answers] == ["req-1", None, "req-3", "req-4"]
    assert [a.headers.get("x-cache") for a in answers] == ["HIT", "HIT", None, "HIT"]
    assert gw.lane.fast == 2  # the last one came after the hand-over: aiohttp's
    conn.close()


async def test_connection_close_and_split_heads(gw: Gateway) -> None:
    await gw.once(get(SCRIPT))
    conn = await gw.connect()
    data = get(SCRIPT, Connection="close")
    for i in range(0, len(data), 7):  # a head arriving in pieces
        await conn.send(data[i : i + 7])
        await asyncio.sleep(0)
    answer = await conn.answer()
    assert answer.status == 200
    assert answer.headers["connection"] == "close"
    assert await conn.closed()
    conn.close()
    assert gw.lane.fast == 1


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /p/s/e.js HTTP/1.0\r\nHost: www.shop.test\r\n\r\n",
        b"HEAD /p/s/e.js HTTP/1.1\r\nHost: www.shop.test\r\n\r\n",
        b"GET /p/s/e.js HTTP/1.1\r\nHost: www.shop.test\r\nHost: www.shop.test\r\n\r\n",
        b"GET /p/s/e.js HTTP/1.1\r\nHost: www.shop.test\r\n X-Folded: 1\r\n\r\n",
        b"GET /p/s/e.js HTTP/1.1\r\nHost: www.shop.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
        b"GET /p/s/e.js HTTP/1.1\r\nHost: www.shop.test\r\nContent-Length: 1\r\n\r\nx",
        b"GET /p/s/%65.js HTTP/1.1\r\nHost: www.shop.test\r\n\r\n",
        b"GET http://www.shop.test/p/s/e.js HTTP/1.1\r\nHost: www.shop.test\r\n\r\n",
        b"GET /p/s/e.js HTTP/1.1\r\nHost: elsewhere.test\r\n\r\n",
        b"GET /p/s/e.js HTTP/1.1\r\nHost: www.shop.test\r\nX-Big: " + b"a" * MAX_HEAD + b"\r\n\r\n",
    ],
)
async def test_anything_unusual_goes_to_aiohttp(gw: Gateway, request_bytes: bytes) -> None:
    await gw.once(get(SCRIPT))
    handed = gw.lane.handed_over
    conn = await gw.connect()
    await conn.send(request_bytes)
    head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n"), 5)  # HEAD: no body follows
    conn.close()
    assert gw.lane.fast == 0
    assert gw.lane.handed_over == handed + 1
    assert int(head.split(b" ")[1]) in (200, 400, 404, 431)


def post(target: str, body: bytes, **headers: str) -> bytes:
    lines = [f"POST {target} HTTP/1.1", f"Host: {HOST}", f"Content-Length: {len(body)}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


HIT = "/p/m/tr?id=1234567890&ev=PageView&eid={}&dl=https%3A%2F%2Fwww.shop.test%2F"
HIT_HEADERS = {
    "User_Agent": "Mozilla/5.0 (lane test)",
    "Cookie": "_fbp=fb.1.1700000000000.1234567890; _ga=GA1.1.1.2; other=1",
    "Referer": "https://www.shop.test/",
    "Origin": "https://www.shop.test",
}


async def hits_gateway(make_config: Any, gateway: Any, hits_base: str, url: str) -> Gateway:
    upstreams = {f"{vendor}_upstream": url for vendor in PROXY_VENDORS}
    upstreams |= {f"{v}_hits_upstream": hits_base for v in ("meta", "tiktok", "snap", "google")}
    site = {
        "hosts": [HOST],
        "allowed_origins": ["https://www.shop.test"],
        "proxy": {"enabled": True, **upstreams},
    }
    client = await gateway(make_config(site=site), clock=FakeClock(), run_workers=False)
    return Gateway(client, FakeCdn())


@pytest.mark.parametrize("up", [True, False])
async def test_hits_through_the_lane_match_aiohttp(
    make_config: Any, gateway: Any, cdn: tuple[FakeCdn, str], up: bool
) -> None:
    fake, url = cdn
    gw = await hits_gateway(make_config, gateway, url if up else "http://127.0.0.1:9", url)
    slow = await gw.connect()
    await slow.send(get("/nope"))
    assert (await slow.answer()).status == 404
    fast = await gw.connect()
    requests = [
        lambda n: get(HIT.format(n), **HIT_HEADERS),
        lambda n: get(HIT.format(n), **{**HIT_HEADERS, "Origin": "https://evil.test"}),
        lambda n: post("/p/t/api/v2/pixel", b'{"event":"Pageview","event_id":"%d"}' % n),
        lambda n: get('/p/m/tr?a="b'),  # a query byte the hit proxy refuses (400)
        lambda n: get("/p/t/api/v2/pixel"),  # not a hit method: aiohttp answers
    ]
    for i, make in enumerate(requests):
        await slow.send(make(2 * i))
        await fast.send(make(2 * i + 1))
        expected, got = await slow.answer(), await fast.answer()
        assert comparable(got) == comparable(expected), i
    slow.close()
    fast.close()
    hits = gw.client.app[HITS]
    assert gw.lane.fast == 4  # the GET of a POST-only hit path went to aiohttp
    assert hits.stats.by_vendor == {"meta": 4, "tiktok": 2}
    assert hits.stats.mirrored == 6  # upstream down or not, every hit was mirrored first
    assert hits.stats.bad_gateway == (0 if up else 6)
    if up:
        tr = [h for h in fake.hits if h.path == "/tr/"]
        assert len(tr) == 4
        assert {h.headers.get("Cookie") for h in tr} == {"_fbp=fb.1.1700000000000.1234567890"}
        assert {h.headers.get("X-Forwarded-For") for h in tr} == {"127.0.0.1"}


async def test_a_compressed_or_oversized_hit_body_goes_to_aiohttp(
    make_config: Any, gateway: Any, cdn: tuple[FakeCdn, str]
) -> None:
    _, url = cdn
    gw = await hits_gateway(make_config, gateway, url, url)
    body = gzip.compress(b'{"event":"Pageview","event_id":"z1"}')
    answer = await gw.once(post("/p/t/api/v2/pixel", body, Content_Encoding="gzip"))
    assert answer.status == 200
    answer = await gw.once(post("/p/t/api/v2/pixel", b"x" * (MAX_HIT_BODY + 1)))
    assert answer.status == 413
    assert gw.lane.fast == 0
    assert gw.lane.handed_over == 2
    assert gw.client.app[HITS].stats.mirrored == 1


def test_repeated_header_blocks_are_read_once_and_every_request_gets_its_own_headers() -> None:
    server: Any = SimpleNamespace(lane=SimpleNamespace(body_limit=1000))
    proto = FrontProtocol(server)
    head = get("/p/m/tr?id=1", User_Agent="ua", X_Request_Id="r1")
    first = proto._parse(head, len(head) - 2)
    assert first is not None
    first[2]["host"] = "changed by a handler"
    again = get("/p/m/tr?id=2", User_Agent="ua", X_Request_Id="r1")
    second = proto._parse(again, len(again) - 2)
    assert second == (
        "GET",
        "/p/m/tr?id=2",
        {"host": HOST, "user-agent": "ua", "x-request-id": "r1"},
        0,
    )
    repeated = get("/x", User_Agent="a") + b""
    refused = repeated.replace(b"\r\n\r\n", b"\r\nuser-agent: b\r\n\r\n")
    for _ in range(2):  # refused the first time and, from the memo, the second
        assert proto._parse(refused, len(refused) - 2) is None
    bad_line = b"GET /x HTTP/1.0\r\n" + again.partition(b"\r\n")[2]
    assert proto._parse(bad_line, len(bad_line) - 2) is None
