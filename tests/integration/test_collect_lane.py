"""POST /e on the fast lane: the same answers as aiohttp's road, committed before the 204."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import FakeClock, runtime_of
from rawhttp import Answer, Conn, LaneClient

from gateway.web.collect import MAX_BODY

HOST = "track.shop.test"
ORIGIN = "https://www.shop.test"
VID = "1790000000000-0123456789abcdef"
"""A loader candidate id minted at the fake clock's time."""


def post(body: bytes, **headers: str) -> bytes:
    fields = {
        "Host": HOST,
        "Origin": ORIGIN,
        "Content-Type": "text/plain;charset=UTF-8",
        "User-Agent": "Mozilla/5.0 (lane test)",
        "Content-Length": str(len(body)),
        **{name.replace("_", "-"): value for name, value in headers.items()},
    }
    head = "".join(f"{name}: {value}\r\n" for name, value in fields.items() if value)
    return f"POST /e HTTP/1.1\r\n{head}\r\n".encode("latin-1") + body


def page(event_id: str, **extra: Any) -> bytes:
    doc = {
        "event": "PageView",
        "event_id": event_id,
        "url": "https://www.shop.test/p?fbclid=AbC-123&gclid=Cj0xyz",
        "referrer": "https://www.google.com/",
        "vid": VID,
        **extra,
    }
    return json.dumps(doc).encode()


def jar(answer: Answer) -> str:
    return "; ".join(line.split(";", 1)[0] for line in answer.all("set-cookie"))


@dataclass
class Gateway(LaneClient):
    async def aiohttp_conn(self) -> Conn:
        """A connection already handed over to aiohttp (by a request the lane does not take)."""
        conn = await self.connect()
        await conn.send(b"GET /nope HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n")
        assert (await conn.answer()).status == 404
        return conn


@pytest.fixture
async def gw(make_config: Any, gateway: Any) -> Gateway:
    site = {"hosts": [HOST, "www.shop.test"], "allowed_origins": [ORIGIN]}
    client = await gateway(make_config(site=site), clock=FakeClock(), run_workers=False)
    return Gateway(client)


async def test_lane_answers_collect_hits_exactly_like_aiohttp(gw: Gateway) -> None:
    slow, fast = await gw.aiohttp_conn(), await gw.connect()
    handed = gw.lane.handed_over
    first_slow, first_fast = None, None
    denied = {"ad_storage": "denied", "analytics_storage": "denied"}
    identify = json.dumps({"event": "sg:identify", "vid": VID, "user": {"email": "A@b.test"}})
    same = {"Host": "www.shop.test", "Origin": "http://www.shop.test"}
    cases: list[tuple[str, Any]] = [
        ("first hit", lambda n, c: post(page(f"a{n}"))),
        ("returning", lambda n, c: post(page(f"b{n}"), Cookie=c)),
        ("no origin", lambda n, c: post(page(f"c{n}"), Origin="", Cookie=c)),
        ("same origin", lambda n, c: post(page(f"d{n}"), **same)),
        ("gpc", lambda n, c: post(page(f"e{n}"), Sec_GPC="1", Cookie=c)),
        ("denied", lambda n, c: post(page(f"f{n}", consent=denied), Cookie=c)),
        ("identify", lambda n, c: post(identify.encode(), Cookie=c)),
        ("forged cookie", lambda n, c: post(page(f"g{n}"), Cookie=f"_sgv={VID}.{'A' * 22}")),
        ("foreign origin", lambda n, c: post(page(f"h{n}"), Origin="https://evil.test")),
        ("unknown host", lambda n, c: post(page(f"i{n}"), Host="evil.test")),
        ("bad json", lambda n, c: post(b"{nope", Cookie=c)),
        ("not an object", lambda n, c: post(b"[1]")),
        ("bad event", lambda n, c: post(json.dumps({"event": "A\r\nB"}).encode(), Cookie=c)),
    ]
    cookies_slow = cookies_fast = ""
    for i, (name, make) in enumerate(cases):
        await slow.send(make(2 * i, cookies_slow))
        expected = await slow.answer()
        await fast.send(make(2 * i + 1, cookies_fast))
        got = await fast.answer()
        assert got.comparable() == expected.comparable(), name
        if first_slow is None:
            first_slow, first_fast = expected, got
            cookies_slow, cookies_fast = jar(expected), jar(got)
    assert gw.lane.fast == len(cases)
    assert gw.lane.handed_over == handed  # the lane kept every one of them
    assert first_fast is not None
    names = [line.split("=", 1)[0] for line in first_fast.all("set-cookie")]
    assert names == ["_fbc", "_gcl_aw", "_fbp", "_ttp", "_scid", "_ga", "_sgv"]
    assert first_fast.headers["access-control-allow-origin"] == ORIGIN
    # the oversized body: the lane leaves it to aiohttp, which answers 413 on both roads
    big = post(b'{"event":"PageView","x":"' + b"a" * MAX_BODY + b'"}')
    await slow.send(big)
    await fast.send(big)
    expected, got = await slow.answer(), await fast.answer()
    assert expected.status == got.status == 413
    assert got.comparable() == expected.comparable()
    assert gw.lane.handed_over == handed + 1
    slow.close()
    fast.close()
    collect = runtime_of(gw.client).collect
    assert collect is not None
    assert collect.stats.by_tier == {"full": 14, "analytics": 2, "none": 2}


async def test_the_204_comes_after_the_commit(gw: Gateway) -> None:
    path = runtime_of(gw.client).config.storage.path
    fast = await gw.connect()
    for n in range(5):
        await fast.send(post(page(f"durable-{n}"), Connection="close" if n == 4 else ""))
        answer = await fast.answer()
        assert answer.status == 204
        # a separate connection sees only committed rows: the event must be there already
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT count(*) FROM events WHERE event_id = ?", (f"durable-{n}",))
            assert rows.fetchone() == (1,)
            (profiles,) = db.execute("SELECT count(*) FROM profiles").fetchone()
            assert profiles == 1
    fast.close()
    assert gw.lane.fast == 5


async def test_pipelined_hits_are_answered_in_order(gw: Gateway) -> None:
    fast = await gw.connect()
    await fast.send(b"".join(post(page(f"p{n}"), X_Request_Id=f"r{n}") for n in range(4)))
    answers = [await fast.answer() for _ in range(4)]
    assert [a.status for a in answers] == [204] * 4
    assert [dict(a.headers).get("x-request-id") for a in answers] == ["r0", "r1", "r2", "r3"]
    fast.close()
    counts = await runtime_of(gw.client).store.counts()
    assert sum(counts.values()) == 4
