"""Platform outages: the route's circuit breaker probes gently, drains at full speed afterwards and
never delays another route (issue #11, item 8)."""

from __future__ import annotations

import asyncio
import copy
import math
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from conftest import ACCESS_TOKEN, ADMIN_TOKEN, auth, base_doc, runtime_of

from gateway.config import parse
from gateway.sandbox.meta import MetaSandbox

EVENTS = 5000
MAX_BATCH = 1000
PROBE_BATCH = 10
RECOVERY_BUDGET = 30.0
"""Every queued event is delivered within this many seconds of the platform's recovery."""


def purchase(i: int, prefix: str = "order") -> dict[str, Any]:
    return {
        "event": "Purchase",
        "url": f"https://shop.example/thanks/{i}",
        "user": {
            "email": f"customer.{i}@example.com",
            "ip": "203.0.113.7",
            "user_agent": "Mozilla/5.0 (test)",
        },
        "data": {"value": 10 + i, "currency": "EUR", "order_id": f"{prefix}-{i}"},
    }


async def wait_for(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def batches(sandbox: MetaSandbox) -> list[int]:
    """Sizes of the accepted requests, in order (the sandbox stamps one time per request)."""
    sizes: list[int] = []
    last: object = None
    for event in sandbox.recorder.accepted:
        if event["_received_at"] != last:
            sizes.append(0)
            last = event["_received_at"]
        sizes[-1] += 1
    return sizes


def busiest_window(times: list[float], width: float) -> int:
    """The most requests in any window of `width` seconds."""
    ordered = sorted(times)
    return max((sum(1 for t in ordered if s <= t < s + width) for s in ordered), default=0)


async def outage(make_config: Any, gateway: Any, meta_sandbox: Any, *, scale: float) -> None:
    """A 3-minute outage with 5,000 queued events, every duration multiplied by `scale`.

    The probe timing (5 s doubling to 20 s) is scaled with it, so the requests per
    minute-equivalent are the same at any scale. Draining 5,000 events does not get faster with
    the scale, so the recovery budget stays 30 real seconds; the first probe after recovery must
    come within one (scaled) capped probe interval.
    """
    sandbox, base = meta_sandbox
    minute = 60.0 * scale
    probe_min, probe_max = 5.0 * scale, 20.0 * scale
    config = make_config(
        base,
        meta={"max_batch": MAX_BATCH},
        delivery={
            "poll_interval": 0.05,
            "probe_interval_min_seconds": probe_min,
            "probe_interval_max_seconds": probe_max,
            "probe_batch": PROBE_BATCH,
        },
    )
    sandbox.faults.down = True
    down_at = time.time()
    client = await gateway(config)
    sem = asyncio.Semaphore(8)

    async def post(start: int) -> None:
        async with sem:
            events = [purchase(i) for i in range(start, start + 100)]
            resp = await client.post("/v1/events", json={"events": events}, headers=auth())
            assert resp.status == 202, await resp.text()

    await asyncio.gather(*(post(s) for s in range(0, EVENTS, 100)))
    await asyncio.sleep(max(0.0, down_at + 120.0 * scale - time.time()))

    # Mid-outage: the route's circuit is open; collecting still works, so /readyz stays 200.
    ready = await client.get("/readyz")
    body = await ready.json()
    assert ready.status == 200, body
    assert any("shop:meta circuit open" in d for d in body["degraded"]), body
    debug = await client.get("/v1/debug/recent", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    route = (await debug.json())["routes"]["shop:meta"]
    assert route["breaker"] == "open"
    assert route["next_probe_seconds"] <= probe_max

    await asyncio.sleep(max(0.0, down_at + 180.0 * scale - time.time()))
    sandbox.faults.down = False
    up_at = time.time()
    assert sandbox.recorder.accepted == []

    def all_arrived() -> bool:
        return len(sandbox.recorder.accepted) >= EVENTS

    await wait_for(all_arrived, timeout=RECOVERY_BUDGET + 30.0)

    # While down: at most 10 requests a minute(-equivalent), and it was probed all along.
    failed = [r["_received_at"] for r in sandbox.recorder.rejected]
    assert all(down_at <= t < up_at for t in failed)
    assert busiest_window(failed, minute) <= 10, sorted(t - down_at for t in failed)
    assert len(failed) >= 5  # it kept probing (about 11 on an idle machine)
    assert {r["status"] for r in sandbox.recorder.rejected} == {503}

    # After: back within one capped interval, everything within the budget, exactly once.
    received = [e["_received_at"] for e in sandbox.recorder.accepted]
    assert min(received) - up_at <= probe_max + 2.0
    assert max(received) - up_at <= RECOVERY_BUDGET
    keys = Counter(e["event_id"] for e in sandbox.recorder.accepted)
    assert set(keys) == {f"order-{i}" for i in range(EVENTS)}
    assert max(keys.values()) == 1, "an event reached the platform twice"

    # One small probe, then full batches at full speed.
    sizes = batches(sandbox)
    assert sizes[0] <= PROBE_BATCH, sizes
    assert all(s == MAX_BATCH for s in sizes[1:-1]), sizes
    assert len(sizes) <= 1 + math.ceil(EVENTS / MAX_BATCH), sizes

    # Attempts: one per failed request a row was in; rows that waited counted none.
    store = runtime_of(client).store
    rows = [r for r in await store.recent(EVENTS * 2) if r.route == "shop:meta"]
    assert len(rows) == EVENTS
    sent_while_down = sum(len(r["event_ids"]) for r in sandbox.recorder.rejected)
    assert sum(r.attempts for r in rows) == sent_while_down
    assert sum(1 for r in rows if r.attempts == 0) >= EVENTS - sent_while_down


async def test_outage_scaled_to_a_tenth(make_config: Any, gateway: Any, meta_sandbox: Any) -> None:
    await outage(make_config, gateway, meta_sandbox, scale=0.1)


@pytest.mark.slow
@pytest.mark.timeout(330)
async def test_outage_of_three_minutes(make_config: Any, gateway: Any, meta_sandbox: Any) -> None:
    await outage(make_config, gateway, meta_sandbox, scale=1.0)


# ---------------------------------------------------------------- isolation of routes

OTHER_KEY = "sg_test_key_fedcba9876543210"


@asynccontextmanager
async def second_sandbox() -> AsyncIterator[tuple[MetaSandbox, str]]:
    sandbox = MetaSandbox(access_tokens={ACCESS_TOKEN}, seed=99)
    server = TestServer(sandbox.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield sandbox, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def two_site_config(tmp_path: Path, sick_base: str, healthy_base: str) -> Any:
    doc = base_doc(tmp_path, sick_base)
    doc["delivery"].update(
        {
            "timeout_seconds": 1.0,
            "probe_interval_min_seconds": 0.5,
            "probe_interval_max_seconds": 2.0,
        }
    )
    other = copy.deepcopy(doc["sites"][0])
    other["id"] = "other"
    other["api_keys"] = [OTHER_KEY]
    other["destinations"]["meta"]["api_base"] = healthy_base
    doc["sites"].append(other)
    return parse(doc, {}, tmp_path)


async def delays(client: Any, healthy: MetaSandbox, prefix: str, rounds: int = 30) -> list[float]:
    """Post one event to each route every 50 ms; return the healthy route's delivery delays."""
    sent: dict[str, float] = {}
    for i in range(rounds):
        sick_resp = await client.post(
            "/v1/events", json={"events": [purchase(i, f"{prefix}-sick")]}, headers=auth()
        )
        assert sick_resp.status == 202
        sent[f"{prefix}-{i}"] = time.time()
        resp = await client.post(
            "/v1/events", json={"events": [purchase(i, prefix)]}, headers=auth(OTHER_KEY)
        )
        assert resp.status == 202
        await asyncio.sleep(0.05)

    def arrived() -> dict[str, float]:
        return {
            e["event_id"]: e["_received_at"]
            for e in healthy.recorder.accepted
            if e["event_id"] in sent
        }

    await wait_for(lambda: len(arrived()) == rounds, timeout=30.0)
    return sorted(arrived()[k] - sent[k] for k in sent)


def p95(values: list[float]) -> float:
    return values[min(len(values) - 1, math.ceil(0.95 * len(values)) - 1)]


@pytest.mark.parametrize("fault", ["down", "slow"])
async def test_one_route_down_never_delays_another(
    tmp_path: Path, gateway: Any, meta_sandbox: Any, fault: str
) -> None:
    """Site "shop" delivers to a platform that goes down (503) or hangs past the timeout;
    site "other" delivers to a healthy one. The healthy route's p95 delay stays within twice
    its delay before the outage (plus 0.25 s of scheduling noise on a busy 2-core CI; a route
    held up by the other's outage would wait whole timeouts or probe intervals, >= 0.5 s)."""
    sick, sick_base = meta_sandbox
    async with second_sandbox() as (healthy, healthy_base):
        client = await gateway(two_site_config(tmp_path, sick_base, healthy_base))
        before = await delays(client, healthy, "before")
        assert len(sick.recorder.accepted) == 30  # both routes were healthy

        if fault == "down":
            sick.faults.down = True
        else:
            sick.faults.latency = 3.0  # every request times out (timeout_seconds = 1)
        during = await delays(client, healthy, "during")

        health = runtime_of(client).route_health()
        assert health["shop:meta"]["breaker"] == "open"
        assert health["other:meta"]["breaker"] == "closed"
        assert len(sick.recorder.accepted) == 30  # nothing more got through the sick route
        assert p95(during) <= max(2 * p95(before), p95(before) + 0.25), (before, during)

        sick.faults.down = False
        sick.faults.latency = 0.0
        await wait_for(lambda: len(sick.recorder.accepted) == 60, timeout=30.0)
        ids = Counter(e["event_id"] for e in sick.recorder.accepted)
        assert max(ids.values()) == 1
