"""End-to-end delivery to the Google Ads sandbox: OAuth2 tokens, faults, partial failures."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from operator import itemgetter
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    GOOGLE_ADS_CLIENT_SECRET,
    GOOGLE_ADS_DEVELOPER_TOKEN,
    GOOGLE_ADS_REFRESH_TOKEN,
    FakeClock,
    runtime_of,
)
from platform_harness import (
    HEX64,
    PROFILE_SITE,
    assert_only_dead_letter,
    browser_headers,
    dead_reasons,
    drain,
    only_meta_event,
    platform_config,
    post_accepted,
    post_backend_for_visitor,
    round_trip_with_faults,
    sandbox_fixture,
    serve,
    visit,
)
from platform_harness import purchase as harness_purchase

from gateway.config import Config
from gateway.sandbox.google_ads import GoogleAdsSandbox
from gateway.sandbox.meta import MetaSandbox
from gateway.store.base import DeliveryState

ROUTE = "shop:google_ads"
CID = "1234567890"
ACTION = "987654321"
CLIENT_ID = "1234-gads.apps.googleusercontent.com"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def purchase(i: int, **extra: Any) -> dict[str, Any]:
    click_ids = {"gclid": f"Cj0KCQ-click-{i}_wcB", "fbclid": f"fb-click-{i}"}
    return harness_purchase(i, click_ids=click_ids, **extra)


def make_sandbox(clock: Any = time.time) -> GoogleAdsSandbox:
    return GoogleAdsSandbox(
        client_id=CLIENT_ID,
        client_secret=GOOGLE_ADS_CLIENT_SECRET,
        refresh_token=GOOGLE_ADS_REFRESH_TOKEN,
        developer_token=GOOGLE_ADS_DEVELOPER_TOKEN,
        customers={CID},
        actions={ACTION, "111"},
        clock=clock,
        seed=2468,
    )


google_sandbox = sandbox_fixture("google_sandbox", make_sandbox)
meta_sandbox_any = sandbox_fixture("meta_sandbox_any", lambda: MetaSandbox(seed=99))


def config(tmp_path: Path, base: str, meta_base: str | None = None, **kwargs: Any) -> Config:
    settings = {
        "customer_id": CID,
        "purchase_action": ACTION,
        "developer_token": GOOGLE_ADS_DEVELOPER_TOKEN,
        "client_id": CLIENT_ID,
        "client_secret": GOOGLE_ADS_CLIENT_SECRET,
        "refresh_token": GOOGLE_ADS_REFRESH_TOKEN,
        "token_url": f"{base}/token",
        "api_base": base,
        "conversion_actions": {"Lead": "111"},
    }
    return platform_config(tmp_path, "google_ads", settings, meta_base=meta_base, **kwargs)


@pytest.fixture
async def clocked() -> AsyncIterator[tuple[FakeClock, GoogleAdsSandbox, str]]:
    """A sandbox on the same hand-moved clock as the gateway (token expiry is on that clock)."""
    clock = FakeClock(time.time())
    sandbox = make_sandbox(clock)
    async with serve(sandbox.app()) as base:
        yield clock, sandbox, base


async def test_round_trip_with_5xx_rate_limits_and_one_bad_row(
    tmp_path: Path, gateway: Any, google_sandbox: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sandbox, base = google_sandbox
    sandbox.faults.error_rate = 0.25
    sandbox.faults.burst_429 = 3
    sandbox.faults.retry_after = 0.2
    sandbox.faults.reject_event_ids = {"order-37"}
    client = await gateway(config(tmp_path, base, google_ads={"max_batch": 50}))
    events = [purchase(i) for i in range(400)]
    await round_trip_with_faults(
        client, sandbox, ROUTE, events, itemgetter("orderId"), bad="order-37"
    )
    assert sandbox.duplicates == [], "a delivered conversion was sent again"
    for conversion in sandbox.recorder.accepted:
        assert conversion["conversionAction"] == f"customers/{CID}/conversionActions/{ACTION}"
        [em, ph] = conversion["userIdentifiers"]
        assert HEX64.match(em["hashedEmail"])
        assert HEX64.match(ph["hashedPhoneNumber"])
    first = next(c for c in sandbox.recorder.accepted if c["orderId"] == "order-7")
    assert first["gclid"] == "Cj0KCQ-click-7_wcB"
    assert first["userIdentifiers"][0]["hashedEmail"] == sha("customer.7@example.com")
    assert first["userIdentifiers"][1]["hashedPhoneNumber"] == sha("+16505550007")
    assert first["conversionValue"] == 17
    assert first["currencyCode"] == "EUR"
    assert "fb-click-7" not in json.dumps(first)
    await assert_only_dead_letter(client, ROUTE, "order-37", "invalid_field", "UNPARSEABLE_GCLID")
    assert sandbox.oauth.requests == 1, "one token serves the whole run"
    for token in sandbox.oauth.tokens:
        assert token not in caplog.text, "the access token reached a log line"


async def test_token_expiry_mid_run_is_refreshed_once(
    tmp_path: Path, gateway: Any, clocked: tuple[FakeClock, GoogleAdsSandbox, str]
) -> None:
    clock, sandbox, base = clocked
    client = await gateway(config(tmp_path, base), run_workers=False, clock=clock)
    await post_accepted(client, [purchase(1), purchase(2)])
    await drain(client, ROUTE)
    assert (sandbox.oauth.requests, len(sandbox.recorder.accepted)) == (1, 2)
    clock.advance(3600)  # the sandbox's tokens live 3599 s
    await post_accepted(client, [purchase(3)])
    await drain(client, ROUTE)
    assert sandbox.oauth.requests == 2, "refreshed before the expiry, not after a refusal"
    assert [r["status"] for r in sandbox.recorder.rejected] == []
    # Revoked mid-life: Google says OAUTH_TOKEN_EXPIRED; the batch retries with a new token.
    sandbox.faults.token_expired = True
    await post_accepted(client, [purchase(4)])
    await drain(client, ROUTE)
    assert [r["error"] for r in sandbox.recorder.rejected] == ["OAUTH_TOKEN_EXPIRED"]
    clock.advance(5)
    await drain(client, ROUTE)
    assert sandbox.oauth.requests == 3, "exactly one refresh after the refusal"
    orders = Counter(c["orderId"] for c in sandbox.recorder.accepted)
    assert orders == Counter({f"order-{i}": 1 for i in range(1, 5)})
    assert not runtime_of(client).workers[ROUTE].paused
    assert await dead_reasons(client, ROUTE) == {}


async def test_a_refused_refresh_token_pauses_the_route_until_fixed(
    tmp_path: Path, gateway: Any, clocked: tuple[FakeClock, GoogleAdsSandbox, str]
) -> None:
    clock, sandbox, base = clocked
    sandbox.oauth.refuse_refresh = True
    cfg = config(tmp_path, base, delivery={"pause_seconds": 60})
    client = await gateway(cfg, run_workers=False, clock=clock)
    await post_accepted(client, [purchase(1), purchase(2)])
    worker = runtime_of(client).workers[ROUTE]
    await worker.drain()
    await worker.drain()
    assert sandbox.oauth.requests == 1, "a paused route does not hammer the token endpoint"
    assert sandbox.recorder.requests == 0, "no upload without a token"
    ready = await client.get("/readyz")
    assert ready.status == 503
    text = json.dumps(await ready.json())
    assert "invalid_grant" in text
    assert GOOGLE_ADS_REFRESH_TOKEN not in text
    assert await dead_reasons(client, ROUTE) == {}
    sandbox.oauth.refuse_refresh = False
    clock.advance(61)
    await worker.drain()
    assert sorted(c["orderId"] for c in sandbox.recorder.accepted) == ["order-1", "order-2"]
    assert (await client.get("/readyz")).status == 200


async def test_wrong_developer_token_pauses_and_nothing_is_dead(
    tmp_path: Path, gateway: Any, google_sandbox: Any
) -> None:
    sandbox, base = google_sandbox
    cfg = config(tmp_path, base, google_ads={"developer_token": "not-the-developer-token"})
    client = await gateway(cfg, run_workers=False)
    await post_accepted(client, [purchase(1)])
    worker = runtime_of(client).workers[ROUTE]
    await worker.drain()
    assert sandbox.recorder.accepted == []
    assert sandbox.recorder.rejected[0]["error"] == "DEVELOPER_TOKEN_INVALID"
    assert worker.paused
    assert "authenticationError DEVELOPER_TOKEN_INVALID" in (worker.paused_reason or "")
    assert await dead_reasons(client, ROUTE) == {}


async def test_resource_exhausted_retry_after_is_honoured(
    tmp_path: Path, gateway: Any, google_sandbox: Any
) -> None:
    sandbox, base = google_sandbox
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
    assert [c["orderId"] for c in sandbox.recorder.accepted] == ["order-1"]
    assert sandbox.oauth.requests == 1


async def test_one_bad_row_in_a_batch_dies_alone_without_bisection(
    tmp_path: Path, gateway: Any, google_sandbox: Any
) -> None:
    sandbox, base = google_sandbox
    sandbox.row_errors = {"order-37": "CLICK_NOT_FOUND"}
    client = await gateway(config(tmp_path, base, google_ads={"max_batch": 100}), run_workers=False)
    await post_accepted(client, [purchase(i) for i in range(100)])
    worker = runtime_of(client).workers[ROUTE]
    await worker.drain()
    delivered = Counter(c["orderId"] for c in sandbox.recorder.accepted)
    assert set(delivered) == {f"order-{i}" for i in range(100)} - {"order-37"}
    assert max(delivered.values()) == 1
    assert sandbox.recorder.requests == 1, "partial failure: one upload, no bisection"
    assert worker.stats.bisections == 0
    await assert_only_dead_letter(
        client, ROUTE, "order-37", "platform_rejected", "CLICK_NOT_FOUND", "no Google Ads click"
    )


async def test_too_recent_row_is_retried_later_and_the_rest_not_resent(
    tmp_path: Path, gateway: Any, google_sandbox: Any
) -> None:
    sandbox, base = google_sandbox
    sandbox.row_errors_once = {"order-2": "TOO_RECENT_EVENT"}
    clock = FakeClock(time.time())
    client = await gateway(config(tmp_path, base), run_workers=False, clock=clock)
    await post_accepted(client, [purchase(i) for i in range(1, 4)])
    worker = runtime_of(client).workers[ROUTE]
    await worker.drain()
    assert sorted(c["orderId"] for c in sandbox.recorder.accepted) == ["order-1", "order-3"]
    clock.advance(5)
    await worker.drain()
    orders = Counter(c["orderId"] for c in sandbox.recorder.accepted)
    assert orders == Counter({"order-1": 1, "order-2": 1, "order-3": 1})
    assert sandbox.duplicates == []
    counts = await runtime_of(client).store.counts()
    assert counts.get((ROUTE, DeliveryState.DONE)) == 3


async def test_two_events_of_one_order_in_a_batch_count_once(
    tmp_path: Path, gateway: Any, google_sandbox: Any
) -> None:
    sandbox, base = google_sandbox
    client = await gateway(config(tmp_path, base), run_workers=False)
    first = purchase(9, event_id="purchase-9-backend")
    again = purchase(9, event_id="purchase-9-retry")
    again["user"]["click_ids"] = {"gclid": "Cj0KCQ-other-click_wcB"}
    await post_accepted(client, [purchase(8), first, again])
    await drain(client, ROUTE)
    orders = Counter(c["orderId"] for c in sandbox.recorder.accepted)
    assert orders == Counter({"order-8": 1, "order-9": 1})
    assert await dead_reasons(client, ROUTE) == {}
    counts = await runtime_of(client).store.counts()
    assert counts.get((ROUTE, DeliveryState.DONE)) == 3


async def test_leads_without_click_ids_and_unmapped_events(
    tmp_path: Path, gateway: Any, google_sandbox: Any
) -> None:
    sandbox, base = google_sandbox
    client = await gateway(config(tmp_path, base), run_workers=False)
    lead = {"event": "Lead", "event_id": "lead-1", "user": {"email": "Jane.Doe@GMail.com"}}
    cart = {"event": "AddToCart", "event_id": "cart-1", "user": {"email": "jane@example.com"}}
    await post_accepted(client, [lead, cart])
    await drain(client, ROUTE)
    [conversion] = sandbox.recorder.accepted
    assert conversion["conversionAction"] == f"customers/{CID}/conversionActions/111"
    assert conversion["orderId"] == "lead-1"
    assert "gclid" not in conversion
    assert conversion["userIdentifiers"] == [
        {"hashedEmail": sha("janedoe@gmail.com"), "userIdentifierSource": "FIRST_PARTY"}
    ]
    dead = await dead_reasons(client, ROUTE)
    assert list(dead) == ["cart-1"]
    assert "has no Google Ads conversion action" in dead["cart-1"]
    assert sandbox.recorder.requests == 1


async def test_test_events_are_validated_not_recorded(
    tmp_path: Path, gateway: Any, google_sandbox: Any
) -> None:
    sandbox, base = google_sandbox
    client = await gateway(config(tmp_path, base), run_workers=False)
    await post_accepted(client, [purchase(1, test_code="TEST1")])
    await drain(client, ROUTE)
    assert sandbox.validated == 1
    assert sandbox.recorder.accepted == []
    counts = await runtime_of(client).store.counts()
    assert counts.get((ROUTE, DeliveryState.DONE)) == 1


async def test_google_click_ids_reach_google_ads_only(
    tmp_path: Path, gateway: Any, google_sandbox: Any, meta_sandbox_any: Any
) -> None:
    sandbox, base = google_sandbox
    meta, meta_base = meta_sandbox_any
    client = await gateway(config(tmp_path, base, meta_base=meta_base), run_workers=False)
    event = purchase(5)
    event["user"]["click_ids"] |= {"gbraid": "GB-braid-5", "wbraid": "WB-braid-5"}
    await post_accepted(client, [event])
    await drain(client, ROUTE, "shop:meta")
    [at_google] = sandbox.recorder.accepted
    assert at_google["gclid"] == "Cj0KCQ-click-5_wcB"
    assert "gbraid" not in at_google
    assert "wbraid" not in at_google
    assert "fb-click-5" not in json.dumps(at_google)
    [at_meta] = meta.recorder.accepted
    text = json.dumps(at_meta)
    for google_id in ("Cj0KCQ-click-5_wcB", "GB-braid-5", "WB-braid-5"):
        assert google_id not in text


async def test_token_endpoint_outages_are_retried_not_paused(
    tmp_path: Path, gateway: Any, clocked: tuple[FakeClock, GoogleAdsSandbox, str]
) -> None:
    clock, sandbox, base = clocked
    sandbox.oauth.errors = 1
    client = await gateway(config(tmp_path, base), run_workers=False, clock=clock)
    await post_accepted(client, [purchase(1)])
    worker = runtime_of(client).workers[ROUTE]
    await worker.drain()
    assert sandbox.recorder.requests == 0, "no upload without a token"
    assert not worker.paused
    assert "token endpoint: HTTP 503" in (worker.stats.last_error or "")
    clock.advance(60)
    await worker.drain()
    assert [c["orderId"] for c in sandbox.recorder.accepted] == ["order-1"]
    assert sandbox.oauth.requests == 2


async def test_unreachable_token_endpoint_is_a_transport_retry(
    tmp_path: Path, gateway: Any, google_sandbox: Any
) -> None:
    sandbox, base = google_sandbox
    cfg = config(tmp_path, base, google_ads={"token_url": "http://127.0.0.1:9/token"})
    client = await gateway(cfg, run_workers=False)
    await post_accepted(client, [purchase(1)])
    worker = runtime_of(client).workers[ROUTE]
    await worker.drain()
    assert sandbox.recorder.requests == 0
    assert not worker.paused
    assert (worker.stats.last_error or "").startswith("token endpoint: transport error")
    assert await dead_reasons(client, ROUTE) == {}


async def test_gclid_from_the_landing_page_reaches_google_ads_only(
    tmp_path: Path, gateway: Any, google_sandbox: Any, meta_sandbox_any: Any
) -> None:
    sandbox, base = google_sandbox
    meta, meta_base = meta_sandbox_any
    cfg = config(tmp_path, base, meta_base=meta_base, site=PROFILE_SITE)
    client = await gateway(cfg, run_workers=False)
    landing = "https://www.shop.test/?gclid=Cj0KCQ-from-ad-42_wcB"
    vid = await visit(client, landing, browser_headers("Mozilla/5.0 (gads test)"))
    await post_backend_for_visitor(client, purchase(9), vid)
    await drain(client, ROUTE, "shop:meta")
    [conversion] = sandbox.recorder.accepted
    assert conversion["orderId"] == "order-9"
    assert conversion["gclid"] == "Cj0KCQ-from-ad-42_wcB"
    assert "Cj0KCQ-from-ad-42_wcB" not in only_meta_event(meta.recorder.accepted, "order-9")
    dead = await dead_reasons(client, ROUTE)
    assert len(dead) == 1, "the PageView has no conversion action"
    assert "'PageView' has no Google Ads conversion action" in next(iter(dead.values()))
