"""End-to-end delivery to the X Conversion API sandbox (OAuth 1.0a signed).

Faults (5xx, 429, one bad conversion refusing the whole request, expired or wrong keys),
exactly-once, bisection, Retry-After, one X event per request, events without an X event id,
an event id X does not know, twclid from the visitor profile reaching X only, and the four OAuth
values in no log line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from operator import itemgetter
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    X_ACCESS_TOKEN,
    X_ACCESS_TOKEN_SECRET,
    X_CONSUMER_KEY,
    X_CONSUMER_SECRET,
    FakeClock,
    auth,
    runtime_of,
)
from platform_harness import (
    HEX64,
    PROFILE_SITE,
    assert_bad_event_isolated,
    assert_expired_token_pauses,
    assert_only_dead_letter,
    browser_headers,
    dead_reasons,
    drain,
    only_meta_event,
    platform_config,
    post_and_drain,
    post_backend_for_visitor,
    round_trip_with_faults,
    sandbox_fixture,
    visit,
)
from platform_harness import purchase as harness_purchase

from gateway.config import Config
from gateway.sandbox.meta import MetaSandbox
from gateway.sandbox.x import XSandbox

PIXEL = "o8z6j"
PURCHASE = "o87ne"
LEAD = "o87nf"
ROUTE = "shop:x"
UA = "Mozilla/5.0 (x test)"
SECRETS = (X_CONSUMER_KEY, X_CONSUMER_SECRET, X_ACCESS_TOKEN, X_ACCESS_TOKEN_SECRET)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_x_sandbox() -> XSandbox:
    sandbox = XSandbox(
        consumer_key=X_CONSUMER_KEY,
        consumer_secret=X_CONSUMER_SECRET,
        access_token=X_ACCESS_TOKEN,
        access_token_secret=X_ACCESS_TOKEN_SECRET,
        event_ids={PURCHASE, LEAD},
        pixel_ids={PIXEL},
        seed=1729,
    )
    sandbox.faults.retry_after = 0.2
    return sandbox


x_sandbox = sandbox_fixture("x_sandbox", make_x_sandbox)


def x_config(tmp_path: Path, base: str, **kwargs: Any) -> Config:
    """A config with an X destination (and Meta's too when `meta_base` is given)."""
    settings = {
        "pixel_id": PIXEL,
        "purchase_event_id": PURCHASE,
        "consumer_key": X_CONSUMER_KEY,
        "consumer_secret": X_CONSUMER_SECRET,
        "access_token": X_ACCESS_TOKEN,
        "access_token_secret": X_ACCESS_TOKEN_SECRET,
        "api_base": base,
    }
    return platform_config(tmp_path, "x", settings, **kwargs)


def purchase(i: int, **extra: Any) -> dict[str, Any]:
    click_ids = {"twclid": f"twclick{i}", "fbclid": f"fb-click-{i}", "ttclid": f"tt-{i}"}
    return harness_purchase(i, user_agent=UA, click_ids=click_ids, **extra)


async def test_sandbox_round_trip_with_5xx_429_and_one_bad_event(
    tmp_path: Path, gateway: Any, x_sandbox: tuple[XSandbox, str]
) -> None:
    sandbox, base = x_sandbox
    sandbox.faults.error_rate = 0.3
    sandbox.faults.burst_429 = 2
    sandbox.faults.reject_event_ids = {"order-37"}
    client = await gateway(x_config(tmp_path, base, x={"max_batch": 25}))
    events = [purchase(i) for i in range(300)]
    conversion_id = itemgetter("conversion_id")
    statuses = await round_trip_with_faults(
        client, sandbox, ROUTE, events, conversion_id, "order-37"
    )
    assert 400 in statuses
    for conversion in sandbox.recorder.accepted:
        i = int(conversion["conversion_id"][6:])
        assert conversion["event_id"] == PURCHASE
        assert conversion["_pixel_id"] == PIXEL
        assert conversion["conversion_time"].endswith(".000Z")
        assert conversion["value"] == 10 + i
        assert conversion["price_currency"] == "EUR"
        identifiers = conversion["identifiers"]
        assert identifiers[0] == {"twclid": f"twclick{i}"}
        assert identifiers[1] == {"hashed_email": sha(f"customer.{i}@example.com")}
        assert identifiers[2] == {"hashed_phone_number": sha(f"+1650555{i:04d}")}
        assert identifiers[3:] == [{"ip_address": "203.0.113.7"}, {"user_agent": UA}]
        text = json.dumps(conversion)
        assert "fb-click" not in text
        assert "tt-" not in text
        assert all(HEX64.match(next(iter(x.values()))) for x in identifiers[1:3])
    await assert_only_dead_letter(client, ROUTE, "order-37", "invalid_field", "reject list")


async def test_a_bad_conversion_in_a_batch_of_500_is_isolated_by_bisecting(
    tmp_path: Path, gateway: Any, x_sandbox: tuple[XSandbox, str]
) -> None:
    sandbox, base = x_sandbox
    sandbox.faults.reject_event_ids = {"order-137"}
    client = await gateway(x_config(tmp_path, base, x={"max_batch": 500}), run_workers=False)
    events = [purchase(i) for i in range(500)]
    worker = await assert_bad_event_isolated(
        client, sandbox, ROUTE, events, itemgetter("conversion_id"), "order-137", "HTTP 400"
    )
    assert worker.stats.bisections > 0
    assert worker.stats.retried == 0, "the good conversions are resent at once, not retried later"
    assert worker.stats.requests <= 2 * 9 + 2
    assert all(r["status"] == 400 for r in sandbox.recorder.rejected)


async def test_expired_token_pauses_the_route_without_hammering(
    tmp_path: Path, gateway: Any, x_sandbox: tuple[XSandbox, str]
) -> None:
    sandbox, base = x_sandbox
    config = x_config(tmp_path, base, delivery={"pause_seconds": 60})
    await assert_expired_token_pauses(gateway, sandbox, config, ROUTE)


async def test_rate_limit_retry_after_is_honoured(
    tmp_path: Path, gateway: Any, x_sandbox: tuple[XSandbox, str]
) -> None:
    """One 429 with Retry-After: 30 s: no resend after 29 s, delivered (re-signed) after 31 s.

    (platform_harness.assert_retry_after_honoured reads `event_id`, which is X's event id here.)
    """
    sandbox, base = x_sandbox
    sandbox.faults.burst_429 = 1
    sandbox.faults.retry_after = 30
    clock = FakeClock(time.time())
    client = await gateway(x_config(tmp_path, base), run_workers=False, clock=clock)
    await client.post("/v1/events", json={"events": [purchase(1)]}, headers=auth())
    worker = runtime_of(client).workers[ROUTE]
    await worker.drain()
    clock.advance(29)
    await worker.drain()
    assert sandbox.recorder.requests == 1, "resent before Retry-After ran out"
    clock.advance(2)
    await worker.drain()
    assert [c["conversion_id"] for c in sandbox.recorder.accepted] == ["order-1"]


async def test_requests_are_signed_with_the_gateways_clock(
    tmp_path: Path, gateway: Any, x_sandbox: tuple[XSandbox, str]
) -> None:
    """The app hands its clock to the destination: a gateway clock an hour behind the sandbox's
    signs out-of-bounds timestamps (refused, route paused); once it is right again, delivered."""
    sandbox, base = x_sandbox
    clock = FakeClock(time.time() - 3600)
    config = x_config(tmp_path, base, delivery={"pause_seconds": 60})
    client = await gateway(config, run_workers=False, clock=clock)
    await post_and_drain(client, ROUTE, [purchase(1)])
    assert sandbox.recorder.accepted == []
    assert "oauth_timestamp" in sandbox.recorder.rejected[0]["message"]
    clock.now = time.time() + 61  # past the pause, in step with the sandbox
    await drain(client, ROUTE)
    assert [c["conversion_id"] for c in sandbox.recorder.accepted] == ["order-1"]


@pytest.mark.parametrize("key", ["consumer_secret", "access_token_secret", "access_token"])
async def test_a_wrong_key_fails_the_signature_and_pauses_without_dead_letters(
    tmp_path: Path, gateway: Any, x_sandbox: tuple[XSandbox, str], key: str
) -> None:
    sandbox, base = x_sandbox
    client = await gateway(x_config(tmp_path, base, x={key: "not-the-right-value"}))
    resp = await client.post("/v1/events", json={"events": [purchase(1)]}, headers=auth())
    assert resp.status == 202
    worker = runtime_of(client).workers[ROUTE]
    for _ in range(100):
        if worker.paused_reason is not None:
            break
        await _sleep()
    assert worker.paused_reason is not None
    assert "UNAUTHORIZED_ACCESS" in worker.paused_reason
    assert sandbox.recorder.accepted == []
    assert sandbox.recorder.requests == 1
    assert await runtime_of(client).store.dead_letters(ROUTE, 10) == []


async def test_one_x_event_per_request_and_events_without_an_id_are_dead_lettered(
    tmp_path: Path, gateway: Any, x_sandbox: tuple[XSandbox, str]
) -> None:
    sandbox, base = x_sandbox
    config = x_config(tmp_path, base, x={"event_ids": {"Lead": LEAD}})
    client = await gateway(config, run_workers=False)
    lead = {**purchase(1), "event": "Lead"}
    cart = {**purchase(2), "event": "AddToCart"}
    resp = await client.post(
        "/v1/events", json={"events": [lead, cart, purchase(3), purchase(4)]}, headers=auth()
    )
    body = await resp.json()
    assert resp.status == 202, body
    assert any("has no X event id" in w["reason"] for w in body.get("warnings", [])), body
    await drain(client, ROUTE)
    by_id = {c["conversion_id"]: c["event_id"] for c in sandbox.recorder.accepted}
    assert by_id == {"order-1": LEAD, "order-3": PURCHASE, "order-4": PURCHASE}
    assert sandbox.recorder.requests == 2, "one request per X event id"
    await assert_only_dead_letter(client, ROUTE, "order-2", "invalid_field", "has no X event id")


async def test_an_event_id_x_does_not_know_dead_letters_its_events_without_bisecting(
    tmp_path: Path, gateway: Any, x_sandbox: tuple[XSandbox, str]
) -> None:
    sandbox, base = x_sandbox
    config = x_config(tmp_path, base, x={"event_ids": {"Lead": "o99zz"}})
    client = await gateway(config, run_workers=False)
    leads = [{**purchase(i), "event": "Lead"} for i in range(1, 5)]
    await post_and_drain(client, ROUTE, [*leads, purchase(9)])
    assert [c["conversion_id"] for c in sandbox.recorder.accepted] == ["order-9"]
    assert sandbox.recorder.requests == 2, "the unknown event id cost one request, no bisection"
    dead = await dead_reasons(client, ROUTE)
    assert set(dead) == {f"order-{i}" for i in range(1, 5)}
    assert all("is not a single event tag (SET)" in reason for reason in dead.values())


async def test_twclid_from_the_visitor_profile_reaches_x_only(
    tmp_path: Path,
    gateway: Any,
    meta_sandbox: tuple[MetaSandbox, str],
    x_sandbox: tuple[XSandbox, str],
) -> None:
    meta, meta_base = meta_sandbox
    sandbox, base = x_sandbox
    config = x_config(tmp_path, base, meta_base=meta_base, site=PROFILE_SITE)
    client = await gateway(config, run_workers=False)
    vid = await visit(client, "https://www.shop.test/?twclid=twfromad42", browser_headers(UA))
    await post_backend_for_visitor(client, purchase(9), vid)
    await drain(client, ROUTE, "shop:meta")
    by_id = {c["conversion_id"]: c for c in sandbox.recorder.accepted}
    identifiers = by_id["order-9"]["identifiers"]
    assert identifiers[0] == {"twclid": "twfromad42"}
    assert identifiers[1] == {"hashed_email": sha("jane@example.com")}
    text = only_meta_event(meta.recorder.accepted, "order-9")
    assert "twfromad42" not in text
    assert all("twfromad42" not in json.dumps(e["user_data"]) for e in meta.recorder.accepted)


async def test_the_oauth_values_reach_no_log_line(
    tmp_path: Path,
    gateway: Any,
    x_sandbox: tuple[XSandbox, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Deliveries that pass, retry, pause and dead-letter: no record carries a key or token."""
    sandbox, base = x_sandbox
    sandbox.faults.burst_429 = 1
    sandbox.faults.reject_event_ids = {"order-3"}
    clock = FakeClock(time.time())
    config = x_config(tmp_path, base, delivery={"pause_seconds": 60})
    with caplog.at_level(logging.DEBUG):
        client = await gateway(config, run_workers=False, clock=clock)
        await post_and_drain(client, ROUTE, [purchase(i) for i in range(1, 5)])
        clock.advance(1)
        await drain(client, ROUTE)
        sandbox.faults.token_expired = True
        await post_and_drain(client, ROUTE, [purchase(7)])
    counts = Counter(c["conversion_id"] for c in sandbox.recorder.accepted)
    assert counts == Counter({"order-1": 1, "order-2": 1, "order-4": 1})
    assert runtime_of(client).workers[ROUTE].paused_reason is not None
    assert caplog.records, "the scenario logs something"
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        for secret in SECRETS:
            assert secret not in text, f"an X credential in a log record of {record.name}"


async def _sleep() -> None:
    import asyncio

    await asyncio.sleep(0.05)
