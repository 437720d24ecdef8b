"""Graceful stop in process: in-flight requests are answered and committed, new connections are
refused, delivery leases are handed back, and serve() returns within the grace period."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import API_KEY, auth

from gateway.config import Config
from gateway.core.orders import OrderEntry
from gateway.lifecycle import serve
from gateway.store.base import NewEvent
from gateway.store.sqlite import SqliteStore

NOW = int(time.time())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def events(tag: str, n: int) -> bytes:
    return json.dumps(
        {
            "events": [
                {
                    "event": "Purchase",
                    "event_id": f"{tag}-{i}",
                    "time": NOW,
                    "url": "https://shop.example/thanks",
                    "user": {"ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (lifecycle)"},
                    "data": {"value": 10.5, "currency": "EUR", "order_id": f"{tag}-{i}"},
                }
                for i in range(n)
            ]
        }
    ).encode()


class SlowStore(SqliteStore):
    """A SqliteStore whose appends wait for `release` (so a request stays in flight)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.waiting = 0

    async def append(self, events: Sequence[NewEvent], now: float) -> Any:
        self.waiting += 1
        self.entered.set()
        await self.release.wait()
        return await super().append(events, now)

    async def append_orders(
        self, events: Sequence[NewEvent], orders: Sequence[OrderEntry], now: float
    ) -> Any:
        self.waiting += 1  # a Purchase with an order id: its ledger rows go in with it
        self.entered.set()
        await self.release.wait()
        return await super().append_orders(events, orders, now)


def stored_ids(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT event_id FROM events")}


async def start(config: Config, store: SqliteStore | None, stop: asyncio.Event) -> Any:
    ready = asyncio.Event()
    task = asyncio.create_task(
        serve(config, delivery=False, on_ready=lambda url: ready.set(), stop=stop, store=store)
    )
    await asyncio.wait_for(ready.wait(), 10)
    return task


async def test_stop_answers_in_flight_requests_and_refuses_new_connections(
    make_config: Any, tmp_path: Path
) -> None:
    port = free_port()
    config = make_config(server={"host": "127.0.0.1", "port": port, "shutdown_grace_seconds": 5})
    store = SlowStore(tmp_path / "slow.db")
    stop = asyncio.Event()
    server = await start(config, store, stop)
    url = f"http://127.0.0.1:{port}/v1/events"
    headers = {**auth(), "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        lane = asyncio.create_task(session.post(url, data=events("lane", 5), headers=headers))
        compressed = asyncio.create_task(  # Content-Encoding: the aiohttp handler's path
            session.post(
                url,
                data=gzip.compress(events("aiohttp", 5)),
                headers={**headers, "Content-Encoding": "gzip"},
            )
        )
        deadline = time.monotonic() + 10
        while store.waiting < 2:  # both requests are inside their handlers, waiting to commit
            assert time.monotonic() < deadline, "the requests never reached the store"
            await asyncio.sleep(0.01)
        stopped_at = time.monotonic()
        stop.set()
        await asyncio.sleep(0.3)
        with pytest.raises(ConnectionRefusedError):  # the listener is closed: no new connection
            await asyncio.open_connection("127.0.0.1", port)
        assert not server.done()  # still draining the two requests
        store.release.set()
        for request in (lane, compressed):
            resp = await asyncio.wait_for(request, 10)
            assert resp.status == 202, await resp.text()
            assert (await resp.json())["accepted"] == 5
        await asyncio.wait_for(server, 10)
        assert time.monotonic() - stopped_at < 5 + 2
    expected = {f"{tag}-{i}" for tag in ("lane", "aiohttp") for i in range(5)}
    assert stored_ids(tmp_path / "slow.db") == expected


async def test_stop_gives_up_on_a_request_stuck_past_the_grace_period(
    make_config: Any, tmp_path: Path
) -> None:
    port = free_port()
    config = make_config(server={"host": "127.0.0.1", "port": port, "shutdown_grace_seconds": 0.5})
    store = SlowStore(tmp_path / "stuck.db")
    stop = asyncio.Event()
    server = await start(config, store, stop)
    async with aiohttp.ClientSession() as session:
        stuck = asyncio.create_task(
            session.post(
                f"http://127.0.0.1:{port}/v1/events",
                data=events("stuck", 1),
                headers={**auth(), "Content-Type": "application/json"},
            )
        )
        await asyncio.wait_for(store.entered.wait(), 10)
        began = time.monotonic()
        stop.set()
        await asyncio.wait_for(server, 10)
        assert time.monotonic() - began < 0.5 + 3
        with pytest.raises(aiohttp.ClientError):  # never a 202: nothing was committed
            await asyncio.wait_for(stuck, 10)
    assert stored_ids(tmp_path / "stuck.db") == set()


async def test_a_request_half_received_at_stop_is_answered_then_closed(
    make_config: Any, tmp_path: Path
) -> None:
    port = free_port()
    config = make_config(server={"host": "127.0.0.1", "port": port, "shutdown_grace_seconds": 5})
    stop = asyncio.Event()
    server = await start(config, None, stop)
    body = events("half", 2)
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body[:10])
    await writer.drain()
    await asyncio.sleep(0.2)
    stop.set()
    assert await asyncio.wait_for(idle_reader.read(), 5) == b""  # an idle connection is closed
    await asyncio.sleep(0.3)
    assert not server.done()  # waiting for the rest of the request
    writer.write(body[10:])
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)  # answered, then closed by the server
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 202 Accepted", answer
    assert b"\r\nConnection: close\r\n" in rest
    await asyncio.wait_for(server, 10)
    writer.close()
    idle_writer.close()
    assert stored_ids(tmp_path / "outbox.db") == {"half-0", "half-1"}


async def test_port_zero_reports_the_bound_port(make_config: Any) -> None:
    config = make_config(server={"host": "127.0.0.1", "port": 0, "shutdown_grace_seconds": 1})
    stop = asyncio.Event()
    urls: list[str] = []
    server = asyncio.create_task(serve(config, delivery=False, on_ready=urls.append, stop=stop))
    deadline = time.monotonic() + 10
    while not urls:
        assert time.monotonic() < deadline
        assert not server.done()
        await asyncio.sleep(0.01)
    (url,) = urls
    assert not url.endswith(":0")
    async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as resp:
        assert resp.status == 200
    stop.set()
    await asyncio.wait_for(server, 10)
