"""Stopping delivery: a batch mid-send may finish within the grace period; rows leased and not
sent (or cut off at the deadline) are handed back, due at once, with no attempt counted."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import auth, runtime_of

from gateway.store.availability import StoreUnavailableError
from gateway.store.sqlite import SqliteStore

NOW = int(time.time())
ROUTE = "shop:meta"
LONG_LEASE = 600.0


def body(tag: str, n: int) -> dict[str, Any]:
    return {
        "events": [
            {
                "event": "Purchase",
                "event_id": f"{tag}-{i}",
                "time": NOW,
                "url": "https://shop.example/thanks",
                "user": {"ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (shutdown test)"},
                "data": {"value": 10.5, "currency": "EUR", "order_id": f"{tag}-{i}"},
            }
            for i in range(n)
        ]
    }


class Platform:
    """An httpx transport standing in for Meta: answers 200 once `answer` is set."""

    def __init__(self, delay: float | None) -> None:
        self.delay = delay
        self.sending = asyncio.Event()
        self.requests = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        self.sending.set()
        if self.delay is None:
            await asyncio.Event().wait()  # never answers (cancelled at the deadline)
        await asyncio.sleep(self.delay or 0.0)
        received = len(json.loads(request.content)["data"])
        return httpx.Response(200, json={"events_received": received, "fbtrace_id": "t"})


def states(db: Path) -> dict[str, tuple[str, int, float]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT e.event_id, d.state, d.attempts, d.not_before"
            " FROM deliveries d JOIN events e ON e.id = d.event_ref"
        )
        return {event_id: (state, attempts, at) for event_id, state, attempts, at in rows}


async def leased_again_at_once(db: Path) -> int:
    store = SqliteStore(db)
    await store.open()
    try:
        return len(await store.lease(ROUTE, 100, time.time(), 60.0))
    finally:
        await store.close()


async def start(gateway: Any, make_config: Any, platform: Platform, **kwargs: Any) -> Any:
    config = make_config(delivery={"lease_seconds": LONG_LEASE, "poll_interval": 0.01})
    client = await gateway(config, transport=httpx.MockTransport(platform), **kwargs)
    resp = await client.post("/v1/events", json=body("ev", 3), headers=auth())
    assert resp.status == 202, await resp.text()
    return client


async def test_a_send_cut_off_at_the_deadline_hands_its_rows_back(
    gateway: Any, make_config: Any, tmp_path: Path
) -> None:
    platform = Platform(delay=None)
    client = await start(gateway, make_config, platform)
    await asyncio.wait_for(platform.sending.wait(), 10)
    runtime = runtime_of(client)
    assert states(tmp_path / "outbox.db")["ev-0"][0] == "leased"
    runtime.begin_stop(asyncio.get_running_loop().time() + 0.3)
    began = time.monotonic()
    await client.close()
    assert time.monotonic() - began < 0.3 + 3
    rows = states(tmp_path / "outbox.db")
    assert {state for state, _, _ in rows.values()} == {"retry"}
    assert {attempts for _, attempts, _ in rows.values()} == {0}
    assert all(at <= time.time() for _, _, at in rows.values())
    assert await leased_again_at_once(tmp_path / "outbox.db") == 3  # not after LONG_LEASE


async def test_a_send_in_flight_finishes_within_the_grace_period(
    gateway: Any, make_config: Any, tmp_path: Path
) -> None:
    platform = Platform(delay=0.3)
    client = await start(gateway, make_config, platform)
    await asyncio.wait_for(platform.sending.wait(), 10)
    runtime_of(client).begin_stop(asyncio.get_running_loop().time() + 10)
    began = time.monotonic()
    await client.close()
    assert time.monotonic() - began < 5
    rows = states(tmp_path / "outbox.db")
    assert {state for state, _, _ in rows.values()} == {"done"}, rows
    assert platform.requests == 1


async def test_rows_leased_but_not_sent_when_stop_comes_are_handed_back(
    gateway: Any, make_config: Any, tmp_path: Path
) -> None:
    platform = Platform(delay=0.0)
    client = await start(gateway, make_config, platform, run_workers=False)
    worker = runtime_of(client).workers[ROUTE]
    worker.stop()
    assert await worker.run_once() == 3  # leased, then handed back unsent
    assert platform.requests == 0
    assert worker.held == set()
    rows = states(tmp_path / "outbox.db")
    assert {state for state, _, _ in rows.values()} == {"retry"}
    assert {attempts for _, attempts, _ in rows.values()} == {0}
    await client.close()
    assert await leased_again_at_once(tmp_path / "outbox.db") == 3


async def test_rows_of_a_round_that_failed_to_record_come_back_without_waiting_for_the_lease(
    gateway: Any, make_config: Any, tmp_path: Path
) -> None:
    platform = Platform(delay=0.0)
    client = await start(gateway, make_config, platform, run_workers=False)
    worker = runtime_of(client).workers[ROUTE]
    store = runtime_of(client).store
    assert isinstance(store, SqliteStore)
    writer = store._writer._conn
    assert writer is not None

    async def read_only_after_send(request: httpx.Request) -> httpx.Response:
        writer.execute("PRAGMA query_only = ON")  # the mark after this send fails
        return await Platform(delay=0.0)(request)

    worker.client = httpx.AsyncClient(transport=httpx.MockTransport(read_only_after_send))
    with pytest.raises(StoreUnavailableError):
        await worker.run_once()
    assert len(worker.held) == 3
    assert {state for state, _, _ in states(tmp_path / "outbox.db").values()} == {"leased"}
    writer.execute("PRAGMA query_only = OFF")
    worker.client = httpx.AsyncClient(transport=httpx.MockTransport(Platform(delay=0.0)))
    assert await worker.run_once() == 3  # handed back, leased again and delivered at once
    assert worker.held == set()
    assert {state for state, _, _ in states(tmp_path / "outbox.db").values()} == {"done"}
    await client.close()
