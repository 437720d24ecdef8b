"""End-to-end delivery to the Pinterest sandbox (API for Conversions v5).

Faults (5xx, 429 with Retry-After, one failed event in a batch, expired token), exactly-once,
the seven-day window, test mode, and the epik click id reaching Pinterest only.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from conftest import FakeClock, auth, base_doc, runtime_of

from gateway.config import Config, parse
from gateway.sandbox.meta import MetaSandbox
from gateway.sandbox.pinterest import PinterestSandbox
from gateway.store.base import DeliveryState

ACCOUNT = "549755885175"
TOKEN = "pinterest-test-token"
ROUTE = "shop:pinterest"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
UA = "Mozilla/5.0 (pinterest test)"


@pytest.fixture
async def pinterest_sandbox() -> AsyncIterator[tuple[PinterestSandbox, str]]:
    """Start the Pinterest sandbox on 127.0.0.1:<ephemeral>; yield it and its base URL."""
    sandbox = PinterestSandbox(access_tokens={TOKEN}, ad_accounts={ACCOUNT}, seed=4321)
    server = TestServer(sandbox.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield sandbox, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def pinterest_config(
    tmp_path: Path,
    base: str,
    *,
    meta_base: str | None = None,
    pinterest: dict[str, Any] | None = None,
    site: dict[str, Any] | None = None,
    **sections: dict[str, Any],
) -> Config:
    """A config with a Pinterest destination (and Meta's too when `meta_base` is given)."""
    doc = copy.deepcopy(base_doc(tmp_path, meta_base or "http://127.0.0.1:9"))
    destinations = doc["sites"][0]["destinations"]
    if meta_base is None:
        destinations.clear()
    destinations["pinterest"] = {
        "ad_account_id": ACCOUNT,
        "access_token": TOKEN,
        "api_base": base,
        **(pinterest or {}),
    }
    doc["sites"][0].update(site or {})
    for name, values in sections.items():
        doc.setdefault(name, {}).update(values)
    return parse(doc, {}, tmp_path)


def purchase(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "event": "Purchase",
        "url": f"https://shop.example/thanks/{i}",
        "user": {
            "email": f"Customer.{i}@Example.com",
            "phone": f"+1 650 555 {i % 10000:04d}",
            "ip": "203.0.113.7",
            "user_agent": UA,
            "click_ids": {"epik": f"epik-{i}", "fbclid": f"fb-click-{i}"},
        },
        "data": {"value": 10 + i, "currency": "EUR", "order_id": f"order-{i}"},
        **extra,
    }


async def wait_for(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_sandbox_round_trip_with_5xx_429_and_one_bad_event(
    tmp_path: Path, gateway: Any, pinterest_sandbox: tuple[PinterestSandbox, str]
) -> None:
    sandbox, base = pinterest_sandbox
    sandbox.faults.error_rate = 0.15
    sandbox.faults.burst_429 = 2
    sandbox.faults.retry_after = 0.2
    sandbox.faults.reject_event_ids = {"order-37"}
    client = await gateway(pinterest_config(tmp_path, base, pinterest={"max_batch": 50}))
    events = [purchase(i) for i in range(300)]
    for start in range(0, 300, 100):
        resp = await client.post(
            "/v1/events", json={"events": events[start : start + 100]}, headers=auth()
        )
        body = await resp.json()
        assert resp.status == 202, body
        assert body["rejected"] == []

    def all_arrived() -> bool:
        return len({e["event_id"] for e in sandbox.recorder.accepted}) >= 299

    await wait_for(all_arrived, timeout=90)
    keys = Counter(e["event_id"] for e in sandbox.recorder.accepted)
    assert max(keys.values()) == 1, "an event reached the sandbox twice"
    assert set(keys) == {f"order-{i}" for i in range(300)} - {"order-37"}
    for event in sandbox.recorder.accepted:
        i = int(event["event_id"][6:])
        assert event["event_name"] == "checkout"
        assert event["action_source"] == "web"
        assert event["custom_data"]["value"] == f"{10 + i}.00"
        assert all(HEX64.match(v) for v in event["user_data"]["em"] + event["user_data"]["ph"])
        assert event["user_data"]["click_id"] == f"epik-{i}"
    statuses = [r["status"] for r in sandbox.recorder.rejected]
    assert 429 in statuses
    assert any(s >= 500 for s in statuses)
    assert 422 in statuses
    store = runtime_of(client).store
    for _ in range(200):
        counts = await store.counts()
        if counts.get((ROUTE, DeliveryState.DONE), 0) == 299:
            break
        await asyncio.sleep(0.05)
    assert counts.get((ROUTE, DeliveryState.DONE), 0) == 299, counts
    dead = await store.dead_letters(ROUTE, 10)
    assert [d.event_id for d in dead] == ["order-37"]
    assert (dead[0].reason or "").startswith("invalid_field")
    assert "rejected by the sandbox" in (dead[0].reason or "")


async def test_a_failed_event_in_a_batch_of_500_costs_one_request(
    tmp_path: Path, gateway: Any, pinterest_sandbox: tuple[PinterestSandbox, str]
) -> None:
    sandbox, base = pinterest_sandbox
    sandbox.faults.reject_event_ids = {"order-137"}
    config = pinterest_config(tmp_path, base, pinterest={"max_batch": 500})
    client = await gateway(config, run_workers=False)
    resp = await client.post(
        "/v1/events", json={"events": [purchase(i) for i in range(500)]}, headers=auth()
    )
    assert resp.status == 202
    worker = runtime_of(client).workers[ROUTE]
    await worker.drain()
    delivered = {e["event_id"] for e in sandbox.recorder.accepted}
    assert delivered == {f"order-{i}" for i in range(500)} - {"order-137"}
    assert worker.stats.requests == 1, "Pinterest answers per event: no bisection, no resend"
    assert worker.stats.retried == 0
    dead = await runtime_of(client).store.dead_letters(ROUTE, 10)
    assert [d.event_id for d in dead] == ["order-137"]
    assert (dead[0].reason or "").startswith("invalid_field")


async def test_expired_token_pauses_the_route_without_hammering(
    tmp_path: Path, gateway: Any, pinterest_sandbox: tuple[PinterestSandbox, str]
) -> None:
    sandbox, base = pinterest_sandbox
    sandbox.faults.token_expired = True
    clock = FakeClock(time.time())
    config = pinterest_config(tmp_path, base, delivery={"pause_seconds": 60})
    client = await gateway(config, run_workers=False, clock=clock)
    await client.post("/v1/events", json={"events": [purchase(1), purchase(2)]}, headers=auth())
    worker = runtime_of(client).workers[ROUTE]
    await worker.drain()
    await worker.drain()
    assert sandbox.recorder.requests == 1
    assert (await client.get("/readyz")).status == 503
    sandbox.faults.token_expired = False
    clock.advance(61)
    await worker.drain()
    assert len(sandbox.recorder.accepted) == 2
    assert (await client.get("/readyz")).status == 200


async def test_stale_and_app_events_are_dead_lettered_before_sending(
    tmp_path: Path, gateway: Any, pinterest_sandbox: tuple[PinterestSandbox, str]
) -> None:
    sandbox, base = pinterest_sandbox
    clock = FakeClock(time.time())
    client = await gateway(pinterest_config(tmp_path, base), run_workers=False, clock=clock)
    app_event = purchase(1, source="app")
    app_event.pop("url")
    resp = await client.post(
        "/v1/events", json={"events": [app_event, purchase(2)]}, headers=auth()
    )
    assert resp.status == 202, await resp.text()
    worker = runtime_of(client).workers[ROUTE]
    await worker.drain()
    assert [e["event_id"] for e in sandbox.recorder.accepted] == ["order-2"]
    await client.post("/v1/events", json={"events": [purchase(3)]}, headers=auth())
    clock.advance(7 * 86400)
    await worker.drain()
    dead = {
        d.event_id: d.reason or "" for d in await runtime_of(client).store.dead_letters(ROUTE, 10)
    }
    assert "app_android" in dead["order-1"]
    assert dead["order-3"].startswith("too_old")
    assert sandbox.recorder.requests == 1


async def test_test_mode_sends_test_true(
    tmp_path: Path, gateway: Any, pinterest_sandbox: tuple[PinterestSandbox, str]
) -> None:
    sandbox, base = pinterest_sandbox
    config = pinterest_config(tmp_path, base, pinterest={"test_mode": True})
    client = await gateway(config, run_workers=False)
    await client.post("/v1/events", json={"events": [purchase(1)]}, headers=auth())
    await runtime_of(client).workers[ROUTE].drain()
    [event] = sandbox.recorder.accepted
    assert event["_test"] is True


async def test_epik_from_the_visitor_profile_reaches_pinterest_only(
    tmp_path: Path,
    gateway: Any,
    meta_sandbox: tuple[MetaSandbox, str],
    pinterest_sandbox: tuple[PinterestSandbox, str],
) -> None:
    meta, meta_base = meta_sandbox
    pinterest, base = pinterest_sandbox
    origin = "https://www.shop.test"
    site = {"hosts": ["track.shop.test"], "allowed_origins": [origin]}
    client = await gateway(
        pinterest_config(tmp_path, base, meta_base=meta_base, site=site), run_workers=False
    )
    headers = {"Host": "track.shop.test", "Origin": origin, "Content-Type": "text/plain",
               "User-Agent": UA}  # fmt: skip
    visit = {"event": "PageView", "url": "https://www.shop.test/?epik=epik-from-ad"}
    resp = await client.post("/e", data=json.dumps(visit), headers=headers)
    assert resp.status == 204
    cookie = next(c for c in resp.headers.getall("Set-Cookie") if c.startswith("_sgv="))
    vid = cookie.split("=", 1)[1].split(";")[0].rsplit(".", 1)[0]
    backend = purchase(9)
    backend["user"] = {"email": "jane@example.com", "visitor_id": vid}
    resp = await client.post("/v1/events", json={"events": [backend]}, headers=auth())
    assert resp.status == 202, await resp.text()
    workers = runtime_of(client).workers
    await workers[ROUTE].drain()
    await workers["shop:meta"].drain()
    by_id = {e["event_id"]: e for e in pinterest.recorder.accepted}
    user = by_id["order-9"]["user_data"]
    assert user["click_id"] == "epik-from-ad"
    assert user["client_user_agent"] == UA, "filled from the profile"
    meta_events = [e for e in meta.recorder.accepted if e["event_id"] == "order-9"]
    assert len(meta_events) == 1
    assert "epik-from-ad" not in json.dumps(meta_events[0])
