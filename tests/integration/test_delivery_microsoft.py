"""End-to-end delivery to the Microsoft UET CAPI sandbox.

Faults (5xx, 429 with Retry-After, one bad event, expired token), exactly-once, the 7-day window,
test events kept back, and the msclkid (from the landing URL or the _uetmsclkid cookie) reaching
Microsoft only, never Meta.
"""

from __future__ import annotations

import time
from operator import itemgetter
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock
from platform_harness import (
    HEX64,
    PROFILE_SITE,
    assert_bad_event_isolated,
    assert_expired_token_pauses,
    assert_only_dead_letter,
    browser_headers,
    dead_after_ageing,
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
from gateway.sandbox.microsoft import MicrosoftSandbox

TAG = "343012345"
TOKEN = "uet-test-token"
ROUTE = "shop:microsoft"
UA = "Mozilla/5.0 (uet test)"
MSCLKID = "e85de3e3b8a2139d6e1b858362f6c13a"


ms_sandbox = sandbox_fixture(
    "ms_sandbox", lambda: MicrosoftSandbox(access_tokens={TOKEN}, seed=2468)
)


def ms_config(tmp_path: Path, ms_base: str, **kwargs: Any) -> Config:
    """A config with a Microsoft destination (and Meta's too when `meta_base` is given)."""
    settings = {"tag_id": TAG, "access_token": TOKEN, "api_base": ms_base}
    return platform_config(tmp_path, "microsoft", settings, **kwargs)


def purchase(i: int, **extra: Any) -> dict[str, Any]:
    return harness_purchase(i, click_ids={"msclkid": f"{i:032x}"}, **extra)


async def test_sandbox_round_trip_with_5xx_429_and_one_bad_event(
    tmp_path: Path, gateway: Any, ms_sandbox: tuple[MicrosoftSandbox, str]
) -> None:
    sandbox, base = ms_sandbox
    sandbox.faults.error_rate = 0.3
    sandbox.faults.burst_429 = 2
    sandbox.faults.retry_after = 0.2
    sandbox.faults.reject_event_ids = {"order-37"}
    client = await gateway(ms_config(tmp_path, base, microsoft={"max_batch": 25}))
    events = [purchase(i) for i in range(300)]
    event_id = itemgetter("eventId")
    await round_trip_with_faults(client, sandbox, ROUTE, events, event_id, "order-37")
    for event in sandbox.recorder.accepted:
        assert event["eventType"] == "custom"
        assert event["eventName"] == "purchase"
        assert HEX64.match(event["userData"]["em"])
        assert HEX64.match(event["userData"]["ph"])
        assert event["userData"]["msclkid"] == f"{int(event['eventId'][6:]):032x}"
        assert event["customData"]["transactionId"] == event["eventId"]
    await assert_only_dead_letter(
        client, ROUTE, "order-37", "invalid_field", "rejected by the sandbox"
    )


@pytest.mark.parametrize("partial_status", [200, 400])
async def test_bad_event_in_a_batch_of_500_does_not_sink_the_other_499(
    tmp_path: Path,
    gateway: Any,
    ms_sandbox: tuple[MicrosoftSandbox, str],
    partial_status: int,
) -> None:
    sandbox, base = ms_sandbox
    sandbox.partial_status = partial_status
    sandbox.faults.reject_event_ids = {"order-137"}
    config = ms_config(tmp_path, base, microsoft={"max_batch": 500})
    client = await gateway(config, run_workers=False)
    events = [purchase(i) for i in range(500)]
    event_id = itemgetter("eventId")
    worker = await assert_bad_event_isolated(client, sandbox, ROUTE, events, event_id, "order-137")
    assert worker.stats.requests == 1, "Microsoft names the bad event: no bisection needed"
    assert worker.stats.retried == 0


async def test_expired_token_pauses_the_route_without_hammering(
    tmp_path: Path, gateway: Any, ms_sandbox: tuple[MicrosoftSandbox, str]
) -> None:
    sandbox, base = ms_sandbox
    config = ms_config(tmp_path, base, delivery={"pause_seconds": 60})
    await assert_expired_token_pauses(gateway, sandbox, config, ROUTE)


async def test_test_events_and_stale_events_are_dead_lettered_before_sending(
    tmp_path: Path, gateway: Any, ms_sandbox: tuple[MicrosoftSandbox, str]
) -> None:
    sandbox, base = ms_sandbox
    clock = FakeClock(time.time())
    client = await gateway(ms_config(tmp_path, base), run_workers=False, clock=clock)
    test_event = purchase(1, test_code="TEST123")
    await post_and_drain(client, ROUTE, [test_event, purchase(2)])
    assert [e["eventId"] for e in sandbox.recorder.accepted] == ["order-2"]
    dead = await dead_after_ageing(client, clock, ROUTE, purchase(3), days=7)
    assert "no test mode" in dead["order-1"]
    assert dead["order-3"].startswith("too_old")
    assert sandbox.recorder.requests == 1


@pytest.mark.parametrize(
    ("landing", "cookie"),
    [
        (f"https://www.shop.test/?msclkid={MSCLKID}", ""),
        ("https://www.shop.test/", f"_uetmsclkid=_uet{MSCLKID}"),
    ],
)
async def test_msclkid_from_the_visitor_profile_reaches_microsoft_only(
    tmp_path: Path,
    gateway: Any,
    meta_sandbox: tuple[MetaSandbox, str],
    ms_sandbox: tuple[MicrosoftSandbox, str],
    landing: str,
    cookie: str,
) -> None:
    meta, meta_base = meta_sandbox
    sandbox, ms_base = ms_sandbox
    config = ms_config(tmp_path, ms_base, meta_base=meta_base, site=PROFILE_SITE)
    client = await gateway(config, run_workers=False)
    headers = browser_headers(UA, Cookie=cookie) if cookie else browser_headers(UA)
    vid = await visit(client, landing, headers)
    await post_backend_for_visitor(client, purchase(9), vid)
    await drain(client, ROUTE, "shop:meta")
    by_id = {e.get("eventId"): e for e in sandbox.recorder.accepted}
    user = by_id["order-9"]["userData"]
    assert user["msclkid"] == MSCLKID, "sent without the _uet prefix"
    assert user["clientUserAgent"] == UA, "filled from the profile"
    text = only_meta_event(meta.recorder.accepted, "order-9")
    assert MSCLKID not in text
