"""Deadlines of the HTTP edge: a slow head or a stalled body is answered 408 and closed (one log
line with the reason); idle keep-alive connections are closed, on the lane and on aiohttp."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import auth
from rawhttp import LaneClient

HEAD_S = 0.3
BODY_S = 0.3
KEEPALIVE_S = 0.6
HOST = "www.shop.test"


class Edge(LaneClient):
    """The lane client whose raw connections are closed at the test's end."""

    conns: list[Any]

    async def connect(self) -> Any:
        conn = await super().connect()
        self.conns.append(conn)
        return conn


@pytest.fixture
async def edge(make_config: Any, gateway: Any) -> AsyncIterator[Edge]:
    server = {
        "head_timeout_seconds": HEAD_S,
        "body_timeout_seconds": BODY_S,
        "keepalive_seconds": KEEPALIVE_S,
    }
    client = await gateway(make_config(server=server, site={"hosts": [HOST]}), run_workers=False)
    out = Edge(client)
    out.conns = []
    yield out
    for conn in out.conns:
        conn.close()
        await conn.writer.wait_closed()


async def answer_and_close(conn: Any) -> tuple[int, bytes, float]:
    """Read until the server closes; return the status, body and seconds it took."""
    start = time.monotonic()
    data = await asyncio.wait_for(conn.reader.read(), 10)
    took = time.monotonic() - start
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), data[:80]
    return int(head.split(b" ")[1]), body, took


def refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "status", None) == 408]


async def test_slow_head_is_408_and_closed(edge: Edge, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    conn = await edge.connect()
    await conn.send(b"GET /healthz HTTP/1.1\r\nHost: www.shop.test\r\nX-A: ")
    status, body, took = await answer_and_close(conn)
    assert status == 408
    assert json.loads(body)["error"] == "request_timeout"
    assert HEAD_S * 0.9 < took < HEAD_S + 5
    (record,) = refusals(caplog)
    assert record.reason == "request head timeout"  # type: ignore[attr-defined]
    assert "www.shop.test" not in record.getMessage()


async def test_trickled_head_is_408_within_its_deadline(edge: Edge) -> None:
    conn = await edge.connect()
    head = b"GET /healthz HTTP/1.1\r\nHost: www.shop.test\r\nX-Pad: " + b"a" * 200

    async def trickle() -> None:
        for byte in head:
            await conn.send(bytes([byte]))
            await asyncio.sleep(0.02)  # each byte well within any idle timeout

    sender = asyncio.create_task(trickle())
    try:
        status, _, took = await answer_and_close(conn)
    finally:
        sender.cancel()
    assert status == 408
    assert took < len(head) * 0.02  # long before the head would be complete


@pytest.mark.parametrize("road", ["lane", "aiohttp"])
async def test_stalled_body_is_408_and_closed(
    edge: Edge, caplog: pytest.LogCaptureFixture, road: str
) -> None:
    caplog.set_level(logging.INFO)
    conn = await edge.connect()
    headers = "".join(f"{k}: {v}\r\n" for k, v in auth().items())
    if road == "aiohttp":
        headers += "X-Road: a\r\nX-Road: a\r\n"
    await conn.send(
        b"POST /v1/events HTTP/1.1\r\nHost: www.shop.test\r\nContent-Type: application/json\r\n"
        + headers.encode()
        + b"Content-Length: 100\r\n\r\n"
        + b'{"events": ['
    )
    if road == "lane":
        status, _, took = await answer_and_close(conn)
    else:  # aiohttp answers, then closes after its lingering read (bounded: 10 s)
        start = time.monotonic()
        answer = await conn.answer()
        status, took = answer.status, time.monotonic() - start
    assert status == 408
    assert BODY_S * 0.9 < took < BODY_S + 5
    (record,) = refusals(caplog)
    assert record.reason == "request body timeout"  # type: ignore[attr-defined]


async def test_a_body_that_keeps_coming_is_not_timed_out(edge: Edge) -> None:
    body = json.dumps({"events": []}).encode() + b" " * 40
    conn = await edge.connect()
    head = (
        "POST /v1/events HTTP/1.1\r\nHost: www.shop.test\r\nContent-Type: application/json\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in auth().items())
        + f"Content-Length: {len(body)}\r\n\r\n"
    )
    await conn.send(head.encode())
    for i in range(0, len(body), 8):  # 0.1 s per piece: slower in total than BODY_S
        await asyncio.sleep(0.1)
        await conn.send(body[i : i + 8])
    answer = await conn.answer()
    assert answer.status != 408


@pytest.mark.parametrize("road", ["lane", "aiohttp"])
async def test_idle_keepalive_is_closed_without_an_answer(edge: Edge, road: str) -> None:
    conn = await edge.connect()
    extra = b"X-Road: a\r\nX-Road: a\r\n" if road == "aiohttp" else b""
    before = edge.lane.handed_over
    # /v1/events with no key: the lane answers it (401); with a repeated header aiohttp does.
    answer = await conn.ask(
        b"POST /v1/events HTTP/1.1\r\nHost: www.shop.test\r\nContent-Length: 2\r\n"
        + extra
        + b"\r\n{}"
    )
    assert answer.status == 401
    assert edge.lane.handed_over == before + (road == "aiohttp")
    start = time.monotonic()
    assert await asyncio.wait_for(conn.reader.read(), 10) == b""  # closed, nothing written
    took = time.monotonic() - start
    assert KEEPALIVE_S * 0.5 < took < KEEPALIVE_S + 6


async def test_after_a_hand_over_a_slow_head_is_cut_at_the_keepalive_timeout(edge: Edge) -> None:
    """aiohttp has no head deadline of its own: its keep-alive timer (set to
    server.keepalive_seconds) closes a connection whose next request is not complete."""
    conn = await edge.connect()
    answer = await conn.ask(
        b"POST /v1/events HTTP/1.1\r\nHost: www.shop.test\r\nContent-Length: 2\r\n"
        b"X-Road: a\r\nX-Road: a\r\n\r\n{}"
    )
    assert answer.status == 401
    start = time.monotonic()
    await conn.send(b"GET /healthz HTTP/1.1\r\nHost: www.sh")
    assert await asyncio.wait_for(conn.reader.read(), 10) == b""
    assert time.monotonic() - start < KEEPALIVE_S + 6
