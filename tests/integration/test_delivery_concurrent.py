"""A round's one-user GA4 requests go out several at a time, under the same guarantees.

The GA4 route gets one request per user; the worker keeps up to `CONCURRENT_REQUESTS` of them
in flight while its circuit is closed. A scripted transport answers in place of GA4 (delays and
chosen failures), on a fake clock: a failure among concurrent requests opens the circuit once,
the answers to its siblings already in flight neither close it nor lift a pause, the groups not
yet sent are handed back without an attempt, and after the probe every event is delivered once.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import FakeClock, auth, runtime_of
from platform_harness import platform_config

from gateway.delivery import worker as worker_module
from gateway.delivery.bounded import each_bounded
from gateway.store.base import DeliveryState

ROUTE = "shop:ga4"
USERS = 40


def purchase(i: int) -> dict[str, Any]:
    return {
        "event": "Purchase",
        "url": f"https://shop.example/thanks/{i}",
        "user": {
            "email": f"buyer{i}@example.com",
            "ip": "203.0.113.7",
            "user_agent": "UA/1",
            "click_ids": {"ga": f"GA1.1.{1_000_000 + i}.1700000000"},
        },
        "data": {"value": 10 + i, "currency": "EUR", "order_id": f"order-{i}"},
    }


class Scripted(httpx.AsyncBaseTransport):
    """Answers GA4 requests itself: 204 after `delay`, or `fail[n]` for the n-th request
    (sooner)."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.fail: dict[int, int] = {}
        self.sent: list[str] = []
        self.delivered: list[str] = []
        self.in_flight = 0
        self.most = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        doc = json.loads(await request.aread())
        orders = [e["params"]["transaction_id"] for e in doc["events"]]
        number = len(self.sent)
        self.sent += orders
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            status = self.fail.get(number)
            if status is not None:  # fails while the requests started after it are in flight
                await asyncio.sleep(self.delay / 5)
                return httpx.Response(status, headers={"content-type": "text/plain"})
            await asyncio.sleep(self.delay)
            self.delivered += orders
            return httpx.Response(204)
        finally:
            self.in_flight -= 1


async def start(tmp_path: Path, gateway: Any, transport: Scripted, clock: FakeClock) -> Any:
    settings = {"measurement_id": "G-TEST12345", "api_secret": "s", "api_base": "http://ga4.test"}
    delivery = {
        "probe_interval_min_seconds": 5.0,
        "probe_interval_max_seconds": 20.0,
        "probe_batch": 3,
        "pause_seconds": 60.0,
    }
    config = platform_config(tmp_path, "ga4", settings, delivery=delivery)
    client = await gateway(config, run_workers=False, clock=clock, transport=transport)
    resp = await client.post(
        "/v1/events", json={"events": [purchase(i) for i in range(USERS)]}, headers=auth()
    )
    assert resp.status == 202
    return client


async def states(client: Any) -> dict[str, tuple[DeliveryState, int]]:
    rows = await runtime_of(client).store.recent(1000, ROUTE)
    return {r.event_id: (r.state, r.attempts) for r in rows}


async def test_one_user_requests_overlap_within_the_bound_and_each_event_goes_once(
    tmp_path: Path, gateway: Any
) -> None:
    transport = Scripted()
    clock = FakeClock(time.time())
    client = await start(tmp_path, gateway, transport, clock)
    worker = runtime_of(client).workers[ROUTE]
    await worker.drain()
    assert sorted(transport.delivered) == sorted(f"order-{i}" for i in range(USERS))
    assert len(transport.sent) == USERS
    assert 2 <= transport.most <= worker_module.CONCURRENT_REQUESTS
    assert {s for s, _ in (await states(client)).values()} == {DeliveryState.DONE}
    assert not worker.held


async def test_a_failure_among_concurrent_requests_opens_the_circuit_once(
    tmp_path: Path, gateway: Any
) -> None:
    transport = Scripted(delay=0.05)
    transport.fail = {2: 503}
    clock = FakeClock(time.time())
    client = await start(tmp_path, gateway, transport, clock)
    worker = runtime_of(client).workers[ROUTE]
    lanes = worker_module.CONCURRENT_REQUESTS

    await worker.drain()
    # The first `lanes` requests were in flight together; one failed, the others were answered
    # after the circuit opened: delivered, but the circuit stays open (one failure counted).
    assert len(transport.sent) == lanes
    assert len(transport.delivered) == lanes - 1
    assert worker.breaker.state == "open"
    assert (worker.breaker.opens, worker.breaker.failures) == (1, 1)
    rows = await states(client)
    failed = transport.sent[2]
    assert rows[failed] == (DeliveryState.RETRY, 1)
    for order in transport.delivered:
        assert rows[order] == (DeliveryState.DONE, 0)
    waiting = [o for o in rows if o not in transport.sent]
    assert len(waiting) == USERS - lanes
    # Leased in this round but not sent: handed back without an attempt (the rest of the
    # outbox was beyond the round's lease of max_batch rows).
    assert {rows[o] for o in waiting} == {(DeliveryState.RETRY, 0), (DeliveryState.PENDING, 0)}
    assert not worker.held

    clock.advance(4.9)
    await worker.drain()
    assert len(transport.sent) == lanes  # nothing before the probe is due
    clock.advance(0.1)
    await worker.drain()  # the probe succeeds, the circuit closes, every row is due again
    await worker.drain()
    assert worker.breaker.state == "closed"
    assert sorted(transport.delivered) == sorted(f"order-{i}" for i in range(USERS))
    assert {s for s, _ in (await states(client)).values()} == {DeliveryState.DONE}


async def test_a_pause_among_concurrent_requests_is_not_lifted_by_their_siblings(
    tmp_path: Path, gateway: Any
) -> None:
    transport = Scripted(delay=0.05)
    transport.fail = {1: 401}
    clock = FakeClock(time.time())
    client = await start(tmp_path, gateway, transport, clock)
    worker = runtime_of(client).workers[ROUTE]
    await worker.drain()
    assert worker.paused
    assert worker.paused_reason is not None
    assert "refused" in worker.paused_reason
    assert worker.breaker.state == "closed"
    lanes = worker_module.CONCURRENT_REQUESTS
    assert len(transport.delivered) == lanes - 1
    rows = await states(client)
    assert rows[transport.sent[1]] == (DeliveryState.RETRY, 0)  # a pause counts no attempt
    undelivered = {o: rows[o] for o in rows if o not in transport.delivered}
    assert len(undelivered) == USERS - lanes + 1
    assert set(undelivered.values()) == {(DeliveryState.RETRY, 0), (DeliveryState.PENDING, 0)}

    clock.advance(60.0)
    await worker.drain()
    assert not worker.paused
    assert sorted(transport.delivered) == sorted(f"order-{i}" for i in range(USERS))


async def test_each_bounded_keeps_the_bound_and_raises_the_first_error_after_the_rest() -> None:
    running = 0
    most = 0
    done: list[int] = []

    async def send(i: int) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0.01 * (i % 3))
            if i == 4:
                raise KeyError("boom")
            done.append(i)
        finally:
            running -= 1

    with pytest.raises(KeyError):
        await each_bounded(range(100), send, 3, lambda: False)
    assert most == 3
    assert running == 0  # the lanes in flight finished before the error came out
    assert len(done) < 20  # nothing new started after the failure

    done.clear()
    await each_bounded(range(10, 20), send, 4, lambda: len(done) >= 2)
    assert 2 <= len(done) < 10  # stop() ends the starting of new ones
