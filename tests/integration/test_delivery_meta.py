"""End-to-end delivery to the Meta sandbox: faults, bisection, pauses, windows, exactly-once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from operator import itemgetter
from typing import Any

from conftest import ACCESS_TOKEN, ADMIN_TOKEN, FakeClock, auth, runtime_of
from platform_harness import (
    HEX64,
    assert_bad_event_isolated,
    assert_expired_token_pauses,
    assert_retry_after_honoured,
    dead_after_ageing,
    purchase,
    wait_done,
    wait_for,
)

from gateway.store.base import DeliveryState


async def test_5000_events_with_5xx_and_429_burst_arrive_exactly_once(
    make_config: Any, gateway: Any, meta_sandbox: Any
) -> None:
    sandbox, base = meta_sandbox
    sandbox.faults.error_rate = 0.10
    sandbox.faults.burst_429 = 3
    sandbox.faults.retry_after = 0.2
    client = await gateway(make_config(base, meta={"max_batch": 500}))
    sem = asyncio.Semaphore(16)

    async def post(events: list[dict[str, Any]]) -> int:
        async with sem:
            resp = await client.post("/v1/events", json={"events": events}, headers=auth())
            body = await resp.json()
            assert resp.status == 202, body
            assert body["rejected"] == []
            return int(body["accepted"])

    batched = [
        post([purchase(i) for i in range(start, start + 100)]) for start in range(0, 4000, 100)
    ]
    single = [post([purchase(i)]) for i in range(4000, 5000)]
    accepted = sum(await asyncio.gather(*batched, *single))
    assert accepted == 5000

    def all_arrived() -> bool:
        return len({e["event_id"] for e in sandbox.recorder.accepted}) >= 5000

    await wait_for(all_arrived, timeout=90)
    keys = Counter((e["event_name"], e["event_id"]) for e in sandbox.recorder.accepted)
    assert len(keys) == 5000
    assert max(keys.values()) == 1, "an event reached the sandbox twice"
    assert set(keys) == {("Purchase", f"order-{i}") for i in range(5000)}
    for event in sandbox.recorder.accepted:
        assert HEX64.match(event["user_data"]["em"])
        assert HEX64.match(event["user_data"]["ph"])
    assert any(r["status"] == 429 for r in sandbox.recorder.rejected)
    assert sum(1 for r in sandbox.recorder.rejected if r["status"] >= 500) > 0
    # The sandbox records a batch before it answers; the worker marks it done after the answer.
    counts = await wait_done(client, "shop:meta", 5000)
    assert counts.get(("shop:meta", DeliveryState.DEAD), 0) == 0


async def test_bad_event_in_batch_of_500_does_not_sink_the_other_499(
    make_config: Any, gateway: Any, meta_sandbox: Any
) -> None:
    sandbox, base = meta_sandbox
    sandbox.faults.reject_event_ids = {"order-137"}
    client = await gateway(make_config(base, meta={"max_batch": 500}), run_workers=False)
    events = [purchase(i) for i in range(500)]
    worker = await assert_bad_event_isolated(
        client, sandbox, "shop:meta", events, itemgetter("event_id"), "order-137"
    )
    assert worker.stats.bisections > 0
    assert worker.stats.requests <= 2 * 9 + 2  # log2(500) levels, two requests each at most


async def test_invalid_event_is_dead_lettered_before_sending(
    make_config: Any, gateway: Any, meta_sandbox: Any
) -> None:
    sandbox, base = meta_sandbox
    client = await gateway(make_config(base), run_workers=False)
    no_ua = purchase(1)
    del no_ua["user"]["user_agent"]
    resp = await client.post("/v1/events", json={"events": [no_ua, purchase(2)]}, headers=auth())
    assert resp.status == 202
    await runtime_of(client).workers["shop:meta"].drain()
    assert [e["event_id"] for e in sandbox.recorder.accepted] == ["order-2"]
    assert sandbox.recorder.rejected == []
    dead = await runtime_of(client).store.dead_letters("shop:meta", 10)
    assert dead[0].event_id == "order-1"
    assert "user_agent" in (dead[0].reason or "")


async def test_expired_token_pauses_route_without_hammering(
    make_config: Any, gateway: Any, meta_sandbox: Any
) -> None:
    sandbox, base = meta_sandbox
    config = make_config(base, delivery={"pause_seconds": 60})
    await assert_expired_token_pauses(gateway, sandbox, config, "shop:meta")


async def test_retry_after_is_honoured(make_config: Any, gateway: Any, meta_sandbox: Any) -> None:
    sandbox, base = meta_sandbox
    await assert_retry_after_honoured(gateway, sandbox, make_config(base), "shop:meta")


async def test_event_that_ages_out_is_dead_lettered_not_sent(
    make_config: Any, gateway: Any, meta_sandbox: Any
) -> None:
    sandbox, base = meta_sandbox
    clock = FakeClock(time.time())
    client = await gateway(make_config(base), run_workers=False, clock=clock)
    dead = await dead_after_ageing(client, clock, "shop:meta", purchase(1), days=7)
    assert sandbox.recorder.requests == 0
    assert dead["order-1"].startswith("too_old")


async def test_duplicate_event_id_is_sent_once(
    make_config: Any, gateway: Any, meta_sandbox: Any
) -> None:
    sandbox, base = meta_sandbox
    client = await gateway(make_config(base), run_workers=False)
    first = await client.post("/v1/events", json={"events": [purchase(1)]}, headers=auth())
    again = await client.post("/v1/events", json={"events": [purchase(1)]}, headers=auth())
    assert (await first.json())["deduplicated"] == 0
    assert (await again.json())["deduplicated"] == 1
    await runtime_of(client).workers["shop:meta"].drain()
    assert len(sandbox.recorder.accepted) == 1


async def test_debug_recent_requires_admin_token(
    make_config: Any, gateway: Any, meta_sandbox: Any
) -> None:
    _, base = meta_sandbox
    client = await gateway(make_config(base), run_workers=False)
    await client.post("/v1/events", json={"events": [purchase(1)]}, headers=auth())
    await runtime_of(client).workers["shop:meta"].drain()
    assert (await client.get("/v1/debug/recent")).status == 401
    resp = await client.get("/v1/debug/recent", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    body = await resp.json()
    assert body["deliveries"][0]["state"] == "done"
    assert body["totals"]["shop:meta"]["done"] == 1
    assert ACCESS_TOKEN not in await resp.text()
