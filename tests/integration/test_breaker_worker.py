"""The worker under its circuit breaker, step by step on a fake clock (Meta sandbox)."""

from __future__ import annotations

import time
from typing import Any

from conftest import FakeClock, auth, runtime_of

from gateway.store.base import DeliveryState


def purchase(i: int) -> dict[str, Any]:
    return {
        "event": "Purchase",
        "url": f"https://shop.example/thanks/{i}",
        "user": {"email": f"c{i}@example.com", "ip": "203.0.113.7", "user_agent": "UA/1"},
        "data": {"value": 1 + i, "currency": "EUR", "order_id": f"order-{i}"},
    }


DELIVERY = {
    "probe_interval_min_seconds": 5.0,
    "probe_interval_max_seconds": 20.0,
    "probe_batch": 3,
}


async def start(make_config: Any, gateway: Any, base: str, clock: FakeClock, n: int) -> Any:
    client = await gateway(
        make_config(base, meta={"max_batch": 20}, delivery=DELIVERY),
        run_workers=False,
        clock=clock,
    )
    resp = await client.post(
        "/v1/events", json={"events": [purchase(i) for i in range(n)]}, headers=auth()
    )
    assert resp.status == 202
    return client


async def test_open_route_sends_one_small_probe_per_interval_then_full_batches(
    make_config: Any, gateway: Any, meta_sandbox: Any
) -> None:
    sandbox, base = meta_sandbox
    sandbox.faults.down = True
    clock = FakeClock(time.time())
    client = await start(make_config, gateway, base, clock, 47)
    worker = runtime_of(client).workers["shop:meta"]

    await worker.drain()
    assert sandbox.recorder.requests == 1  # one full batch failed: the route opened
    assert len(sandbox.recorder.rejected[0]["event_ids"]) == 20
    assert worker.health()["breaker"] == "open"
    await worker.drain()
    clock.advance(4.9)
    await worker.drain()
    assert sandbox.recorder.requests == 1  # nothing before the probe is due

    clock.advance(0.1)
    await worker.drain()
    assert sandbox.recorder.requests == 2
    assert sandbox.recorder.rejected[1]["event_ids"] == ["order-0", "order-1", "order-2"]
    assert worker.health()["next_probe_seconds"] == 10.0  # doubled

    sandbox.faults.down = False
    clock.advance(10.0)
    await worker.drain()
    assert len({e["event_id"] for e in sandbox.recorder.accepted}) == 47
    assert len(sandbox.recorder.accepted) == 47
    assert sandbox.recorder.requests == 2 + 1 + 3  # probe of 3, then 20 + 20 + 4
    assert worker.health()["breaker"] == "closed"

    rows = {r.event_id: r for r in await runtime_of(client).store.recent(100)}
    assert {r.state for r in rows.values()} == {DeliveryState.DONE}
    assert rows["order-0"].attempts == 2  # in the failed batch and the failed probe
    assert rows["order-5"].attempts == 1  # only in the failed batch
    assert rows["order-30"].attempts == 0  # waited behind the open circuit


async def test_retry_after_pushes_the_probe_later(
    make_config: Any, gateway: Any, meta_sandbox: Any
) -> None:
    sandbox, base = meta_sandbox
    sandbox.faults.burst_429 = 1
    sandbox.faults.retry_after = 60.0
    clock = FakeClock(time.time())
    client = await start(make_config, gateway, base, clock, 5)
    worker = runtime_of(client).workers["shop:meta"]
    await worker.drain()
    health = worker.health()
    assert health["breaker"] == "open"
    assert 59.0 <= health["next_probe_seconds"] <= 60.0
    clock.advance(30.0)
    await worker.drain()
    assert sandbox.recorder.requests == 1
    clock.advance(30.0)
    await worker.drain()
    assert len(sandbox.recorder.accepted) == 5
    assert worker.health()["breaker"] == "closed"


async def test_a_refused_event_is_no_outage(
    make_config: Any, gateway: Any, meta_sandbox: Any
) -> None:
    """A 400 for one bad event is the platform answering: the circuit stays closed."""
    sandbox, base = meta_sandbox
    sandbox.faults.reject_event_ids = {"order-3"}
    clock = FakeClock(time.time())
    client = await start(make_config, gateway, base, clock, 10)
    worker = runtime_of(client).workers["shop:meta"]
    await worker.drain()
    assert len(sandbox.recorder.accepted) == 9
    assert worker.health()["breaker"] == "closed"
    assert worker.breaker.opens == 0
