"""End-to-end delivery to the GA4 Measurement Protocol sandbox.

Faults and rate limits (each event once), request-level batching per user, the validation
server's messages as per-event dead letters, the 72-hour window, a refused secret pausing the
route, and GA4's client id reaching GA4 only; browser events (a proxied `/g/collect` hit, a
loader event) never reach GA4 (Measurement Protocol counts them twice).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock, auth, runtime_of
from platform_harness import (
    HEX64,
    PROFILE_SITE,
    assert_only_dead_letter,
    browser_headers,
    dead_after_ageing,
    drain,
    platform_config,
    post_accepted,
    proxy_upstreams,
    round_trip_with_faults,
    sandbox_fixture,
    visit,
    wait_done,
)

from gateway.config import Config
from gateway.sandbox.cdn import FakeCdn
from gateway.sandbox.ga4 import GA4Sandbox
from gateway.sandbox.meta import MetaSandbox
from gateway.store.base import DeliveryState

SECRET = "ga4-test-secret"
MID = "G-TEST12345"
ROUTE = "shop:ga4"
HOST = "www.shop.test"
UA = "Mozilla/5.0 (ga4 test)"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def client_id(visitor: int) -> str:
    return f"{1_000_000 + visitor}.1700000000"


def purchase(i: int, visitor: int | None = None, **extra: Any) -> dict[str, Any]:
    """Purchase `i` by visitor `visitor` (default: its own); one e-mail and phone per visitor."""
    who = i if visitor is None else visitor
    user = {
        "email": f"Buyer.{who}@GMail.com",
        "phone": f"+1 650 555 {who % 10000:04d}",
        "ip": "203.0.113.7",
        "user_agent": UA,
        "click_ids": {"ga": f"GA1.1.{client_id(who)}", "fbclid": f"fb-click-{i}"},
    }
    return {
        "event": "Purchase",
        "url": f"https://shop.example/thanks/{i}",
        "user": user,
        "data": {"value": 10 + i, "currency": "EUR", "order_id": f"order-{i}"},
        **extra,
    }


def transaction(event: dict[str, Any]) -> str:
    value = event["params"]["transaction_id"]
    assert isinstance(value, str)
    return value


ga4_sandbox = sandbox_fixture(
    "ga4_sandbox", lambda: GA4Sandbox(api_secrets={SECRET}, measurement_ids={MID}, seed=77)
)
meta_sandbox_any = sandbox_fixture("meta_sandbox_any", lambda: MetaSandbox(seed=98))


def config(tmp_path: Path, ga4_base: str, meta_base: str | None = None, **kwargs: Any) -> Config:
    settings = {"measurement_id": MID, "api_secret": SECRET, "api_base": ga4_base}
    return platform_config(tmp_path, "ga4", settings, meta_base=meta_base, **kwargs)


async def test_events_with_5xx_and_rate_limits_arrive_once_and_no_client_id_is_dead(
    tmp_path: Path, gateway: Any, ga4_sandbox: Any
) -> None:
    sandbox, base = ga4_sandbox
    sandbox.faults.error_rate = 0.2
    sandbox.faults.burst_429 = 3
    sandbox.faults.retry_after = 0.2
    client = await gateway(config(tmp_path, base))
    events = [purchase(i, visitor=i % 12) for i in range(300)]
    events[41]["user"]["click_ids"] = {"fbclid": "fb-only"}  # no _ga: GA4 cannot take it
    await round_trip_with_faults(client, sandbox, ROUTE, events, transaction, "order-41")
    await assert_only_dead_letter(client, ROUTE, "order-41", "invalid_field", "no GA client id")
    assert sandbox.dropped == [], "GA4 would have dropped something silently"
    seven = next(e for e in sandbox.recorder.accepted if transaction(e) == "order-7")
    assert seven["name"] == "purchase"
    assert seven["_client_id"] == client_id(7)
    assert seven["_user_data"]["sha256_email_address"] == [sha("buyer7@gmail.com")]
    assert seven["_user_data"]["sha256_phone_number"] == [sha("+16505550007")]
    assert seven["params"]["value"] == 17
    assert seven["params"]["currency"] == "EUR"
    assert "fb-click-7" not in json.dumps(seven)
    for event in sandbox.recorder.accepted:
        assert all(HEX64.match(d) for d in event["_user_data"]["sha256_email_address"])
        assert event["_measurement_id"] == MID


async def test_an_event_without_client_id_is_warned_about_at_202(
    tmp_path: Path, gateway: Any, ga4_sandbox: Any
) -> None:
    _, base = ga4_sandbox
    client = await gateway(config(tmp_path, base), run_workers=False)
    without = purchase(1)
    without["user"]["click_ids"] = {"fbclid": "fb-1"}
    resp = await client.post("/v1/events", json={"events": [purchase(0), without]}, headers=auth())
    assert resp.status == 202
    warnings = (await resp.json())["warnings"]
    assert [w["path"] for w in warnings] == ["events[1].user.click_ids.ga"]
    assert warnings[0]["reason"].startswith("ga4 would refuse this event (no GA client id")


async def test_one_request_carries_one_users_events_in_batches_of_25(
    tmp_path: Path, gateway: Any, ga4_sandbox: Any
) -> None:
    sandbox, base = ga4_sandbox
    client = await gateway(config(tmp_path, base), run_workers=False)
    events = [purchase(i, visitor=i // 30) for i in range(60)]
    await post_accepted(client, events)
    await drain(client, ROUTE)
    assert len(sandbox.recorder.accepted) == 60
    # Leases of 25 rows: [25 of user 0], [5 of user 0, 20 of user 1], [10 of user 1]; a
    # request never mixes users (client_id, user_data and consent are request-level).
    assert sandbox.recorder.requests == 4
    by_client = Counter(e["_client_id"] for e in sandbox.recorder.accepted)
    assert by_client == {client_id(0): 30, client_id(1): 30}
    await wait_done(client, ROUTE, 60)


async def test_validation_messages_dead_letter_only_the_event_they_name(
    tmp_path: Path, gateway: Any, ga4_sandbox: Any
) -> None:
    sandbox, base = ga4_sandbox
    sandbox.faults.reject_event_ids = {"order-3"}
    cfg = config(tmp_path, base, ga4={"test_mode": True})
    client = await gateway(cfg, run_workers=False)
    await post_accepted(client, [purchase(i, visitor=0) for i in range(6)])
    await drain(client, ROUTE)
    assert sandbox.recorder.accepted == [], "the validation server records nothing"
    [seen] = sandbox.validated
    assert [e["params"]["transaction_id"] for e in seen["body"]["events"]] == [
        f"order-{i}" for i in range(6)
    ]
    assert seen["body"]["validation_behavior"] == "ENFORCE_RECOMMENDATIONS"
    await assert_only_dead_letter(
        client, ROUTE, "order-3", "invalid_field", "GA4 validation", "VALUE_INVALID", "events[3]"
    )
    counts = await runtime_of(client).store.counts()
    assert counts.get((ROUTE, DeliveryState.DONE), 0) == 5


async def test_production_endpoint_cannot_tell_a_silent_drop(
    tmp_path: Path, gateway: Any, ga4_sandbox: Any
) -> None:
    """GA4 answers 204 also for a dropped event: it counts as delivered (why `validate` runs
    every documented rule before sending, and why test_mode exists)."""
    sandbox, base = ga4_sandbox
    sandbox.faults.reject_event_ids = {"order-2"}
    client = await gateway(config(tmp_path, base), run_workers=False)
    await post_accepted(client, [purchase(1, visitor=0), purchase(2, visitor=0)])
    await drain(client, ROUTE)
    assert [transaction(e) for e in sandbox.recorder.accepted] == ["order-1"]
    assert [d["transaction_id"] for d in sandbox.dropped] == ["order-2"]
    await wait_done(client, ROUTE, 2)


async def test_events_older_than_72_hours_are_dead_letters(
    tmp_path: Path, gateway: Any, ga4_sandbox: Any
) -> None:
    sandbox, base = ga4_sandbox
    clock = FakeClock(time.time())
    client = await gateway(config(tmp_path, base), run_workers=False, clock=clock)
    dead = await dead_after_ageing(client, clock, ROUTE, purchase(5), 3)
    assert dead["order-5"].startswith("too_old")
    assert sandbox.recorder.requests == 0


async def test_refused_secret_pauses_the_route_then_it_resumes(
    tmp_path: Path, gateway: Any, ga4_sandbox: Any
) -> None:
    sandbox, base = ga4_sandbox
    sandbox.faults.token_expired = True
    clock = FakeClock(time.time())
    cfg = config(tmp_path, base, delivery={"pause_seconds": 60})
    client = await gateway(cfg, run_workers=False, clock=clock)
    await post_accepted(client, [purchase(1, visitor=0), purchase(2, visitor=0)])
    worker = runtime_of(client).workers[ROUTE]
    await worker.drain()
    await worker.drain()
    assert sandbox.recorder.requests == 1, "a paused route does not resend"
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert "paused" in json.dumps(await ready.json())
    sandbox.faults.token_expired = False
    clock.advance(61)
    await worker.drain()
    assert sorted(transaction(e) for e in sandbox.recorder.accepted) == ["order-1", "order-2"]
    assert await runtime_of(client).store.dead_letters(ROUTE, 10) == []


async def test_rate_limit_retry_after_is_honoured(
    tmp_path: Path, gateway: Any, ga4_sandbox: Any
) -> None:
    sandbox, base = ga4_sandbox
    sandbox.faults.burst_429 = 1
    sandbox.faults.retry_after = 30
    clock = FakeClock(time.time())
    client = await gateway(config(tmp_path, base), run_workers=False, clock=clock)
    await post_accepted(client, [purchase(1)])
    worker = runtime_of(client).workers[ROUTE]
    await worker.drain()
    clock.advance(29)
    await worker.drain()
    assert sandbox.recorder.requests == 1, "resent before Retry-After ran out"
    clock.advance(2)
    await worker.drain()
    assert [transaction(e) for e in sandbox.recorder.accepted] == ["order-1"]


async def test_the_ga_client_id_reaches_ga4_only(
    tmp_path: Path, gateway: Any, ga4_sandbox: Any, meta_sandbox_any: Any
) -> None:
    sandbox, base = ga4_sandbox
    meta, meta_base = meta_sandbox_any
    client = await gateway(config(tmp_path, base, meta_base), run_workers=False)
    await post_accepted(client, [purchase(9)])
    await drain(client, ROUTE, "shop:meta")
    [at_ga4] = sandbox.recorder.accepted
    assert at_ga4["_client_id"] == client_id(9)
    assert "fb-click-9" not in json.dumps(at_ga4)
    [at_meta] = meta.recorder.accepted
    text = json.dumps(at_meta)
    assert client_id(9) not in text
    assert "GA1.1." not in text
    assert at_meta["user_data"]["em"] != at_ga4["_user_data"]["sha256_email_address"][0], (
        "Meta keeps the gmail dots, Google drops them: different digests"
    )


async def test_a_loader_event_is_not_sent_to_ga4(
    tmp_path: Path, gateway: Any, ga4_sandbox: Any
) -> None:
    sandbox, base = ga4_sandbox
    client = await gateway(config(tmp_path, base, site=PROFILE_SITE), run_workers=False)
    await visit(client, "https://www.shop.test/product", browser_headers(UA))
    await drain(client, ROUTE)
    assert sandbox.recorder.requests == 0
    store = runtime_of(client).store
    assert await store.dead_letters(ROUTE, 10) == []
    queued = {route for route, _state in (await store.counts())}
    assert ROUTE not in queued, "GA4 takes backend events only (its default sources)"
    assert runtime_of(client).pipeline.routed_away == {ROUTE: 1}


async def test_a_proxied_g_collect_hit_is_not_mirrored_to_ga4(
    tmp_path: Path, gateway: Any, ga4_sandbox: Any, cdn: tuple[FakeCdn, str]
) -> None:
    sandbox, base = ga4_sandbox
    _fake, url = cdn
    site = {"hosts": [HOST], "proxy": {"enabled": True, **proxy_upstreams(url)}}
    cfg = config(tmp_path, base, site=site, server={"trusted_proxies": ["127.0.0.1/32"]})
    client = await gateway(cfg, run_workers=False)
    query = (
        f"v=2&tid={MID}&cid={client_id(3)}&en=purchase&ep.transaction_id=T-77"
        "&epn.value=12&cu=EUR&dl=https%3A%2F%2Fwww.shop.test%2Fthanks"
    )
    headers = {"Host": HOST, "User-Agent": UA, "X-Forwarded-For": "203.0.113.7"}
    resp = await client.get(f"/g/collect?{query}", headers=headers)
    assert resp.status == 204, "the browser's hit itself reached Google (the fake CDN)"
    await drain(client, ROUTE)
    assert sandbox.recorder.requests == 0, "GA4 already counted the hit: no server copy"
    store = runtime_of(client).store
    assert await store.dead_letters(ROUTE, 10) == []
    queued = {route for route, _state in (await store.counts())}
    assert ROUTE not in queued, "a GA4 hit mirrors to google_ads only: never queued for ga4"


async def test_the_secret_in_the_query_reaches_no_log_line(
    tmp_path: Path, gateway: Any, ga4_sandbox: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox, base = ga4_sandbox
    sandbox.faults.burst_429 = 1
    sandbox.faults.retry_after = 0
    caplog.set_level(logging.DEBUG)
    clock = FakeClock(time.time())
    client = await gateway(config(tmp_path, base), run_workers=False, clock=clock)
    await post_accepted(client, [purchase(1)])
    await drain(client, ROUTE)
    clock.advance(5)
    await drain(client, ROUTE)
    assert [transaction(e) for e in sandbox.recorder.accepted] == ["order-1"]
    assert "/mp/collect" in caplog.text, "the request lines were logged (without their query)"
    assert SECRET not in caplog.text
    assert "Buyer.1@GMail.com" not in caplog.text
