"""End-to-end delivery to the Pinterest sandbox (API for Conversions v5).

Faults (5xx, 429 with Retry-After, one failed event in a batch, expired token), exactly-once,
the seven-day window, test mode, and the epik click id reaching Pinterest only.
"""

from __future__ import annotations

import time
from operator import itemgetter
from pathlib import Path
from typing import Any

from conftest import FakeClock
from platform_harness import (
    HEX64,
    PROFILE_SITE,
    assert_bad_event_isolated,
    assert_expired_token_pauses,
    assert_only_dead_letter,
    browser_headers,
    dead_after_ageing,
    deliver_one,
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
from gateway.sandbox.pinterest import PinterestSandbox

ACCOUNT = "549755885175"
TOKEN = "pinterest-test-token"
ROUTE = "shop:pinterest"
UA = "Mozilla/5.0 (pinterest test)"


pinterest_sandbox = sandbox_fixture(
    "pinterest_sandbox",
    lambda: PinterestSandbox(access_tokens={TOKEN}, ad_accounts={ACCOUNT}, seed=4321),
)


def pinterest_config(tmp_path: Path, base: str, **kwargs: Any) -> Config:
    """A config with a Pinterest destination (and Meta's too when `meta_base` is given)."""
    settings = {"ad_account_id": ACCOUNT, "access_token": TOKEN, "api_base": base}
    return platform_config(tmp_path, "pinterest", settings, **kwargs)


def purchase(i: int, **extra: Any) -> dict[str, Any]:
    click_ids = {"epik": f"epik-{i}", "fbclid": f"fb-click-{i}"}
    return harness_purchase(i, user_agent=UA, click_ids=click_ids, **extra)


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
    event_id = itemgetter("event_id")
    statuses = await round_trip_with_faults(client, sandbox, ROUTE, events, event_id, "order-37")
    for event in sandbox.recorder.accepted:
        i = int(event["event_id"][6:])
        assert event["event_name"] == "checkout"
        assert event["action_source"] == "web"
        assert event["custom_data"]["value"] == f"{10 + i}.00"
        assert all(HEX64.match(v) for v in event["user_data"]["em"] + event["user_data"]["ph"])
        assert event["user_data"]["click_id"] == f"epik-{i}"
    assert 422 in statuses
    await assert_only_dead_letter(
        client, ROUTE, "order-37", "invalid_field", "rejected by the sandbox"
    )


async def test_a_failed_event_in_a_batch_of_500_costs_one_request(
    tmp_path: Path, gateway: Any, pinterest_sandbox: tuple[PinterestSandbox, str]
) -> None:
    sandbox, base = pinterest_sandbox
    sandbox.faults.reject_event_ids = {"order-137"}
    config = pinterest_config(tmp_path, base, pinterest={"max_batch": 500})
    client = await gateway(config, run_workers=False)
    events = [purchase(i) for i in range(500)]
    event_id = itemgetter("event_id")
    worker = await assert_bad_event_isolated(client, sandbox, ROUTE, events, event_id, "order-137")
    assert worker.stats.requests == 1, "Pinterest answers per event: no bisection, no resend"
    assert worker.stats.retried == 0


async def test_expired_token_pauses_the_route_without_hammering(
    tmp_path: Path, gateway: Any, pinterest_sandbox: tuple[PinterestSandbox, str]
) -> None:
    sandbox, base = pinterest_sandbox
    config = pinterest_config(tmp_path, base, delivery={"pause_seconds": 60})
    await assert_expired_token_pauses(gateway, sandbox, config, ROUTE)


async def test_stale_and_app_events_are_dead_lettered_before_sending(
    tmp_path: Path, gateway: Any, pinterest_sandbox: tuple[PinterestSandbox, str]
) -> None:
    sandbox, base = pinterest_sandbox
    clock = FakeClock(time.time())
    client = await gateway(pinterest_config(tmp_path, base), run_workers=False, clock=clock)
    app_event = purchase(1, source="app")
    app_event.pop("url")
    await post_and_drain(client, ROUTE, [app_event, purchase(2)])
    assert [e["event_id"] for e in sandbox.recorder.accepted] == ["order-2"]
    dead = await dead_after_ageing(client, clock, ROUTE, purchase(3), days=7)
    assert "app_android" in dead["order-1"]
    assert dead["order-3"].startswith("too_old")
    assert sandbox.recorder.requests == 1


async def test_test_mode_sends_test_true(
    tmp_path: Path, gateway: Any, pinterest_sandbox: tuple[PinterestSandbox, str]
) -> None:
    sandbox, base = pinterest_sandbox
    config = pinterest_config(tmp_path, base, pinterest={"test_mode": True})
    client = await gateway(config, run_workers=False)
    event = await deliver_one(client, sandbox, ROUTE, purchase(1))
    assert event["_test"] is True


async def test_epik_from_the_visitor_profile_reaches_pinterest_only(
    tmp_path: Path,
    gateway: Any,
    meta_sandbox: tuple[MetaSandbox, str],
    pinterest_sandbox: tuple[PinterestSandbox, str],
) -> None:
    meta, meta_base = meta_sandbox
    pinterest, base = pinterest_sandbox
    config = pinterest_config(tmp_path, base, meta_base=meta_base, site=PROFILE_SITE)
    client = await gateway(config, run_workers=False)
    vid = await visit(client, "https://www.shop.test/?epik=epik-from-ad", browser_headers(UA))
    await post_backend_for_visitor(client, purchase(9), vid)
    await drain(client, ROUTE, "shop:meta")
    by_id = {e["event_id"]: e for e in pinterest.recorder.accepted}
    user = by_id["order-9"]["user_data"]
    assert user["click_id"] == "epik-from-ad"
    assert user["client_user_agent"] == UA, "filled from the profile"
    text = only_meta_event(meta.recorder.accepted, "order-9")
    assert "epik-from-ad" not in text
