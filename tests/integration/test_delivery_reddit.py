"""End-to-end delivery to the Reddit sandbox.

Faults (5xx, 429 with Retry-After, one bad event in a batch, expired token), exactly-once, the
7-day window, Reddit's identifier forms (e-mail canonicalised, '+' phone, hashed IP), and rdt_cid
from the visitor profile reaching Reddit only.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from conftest import FakeClock, runtime_of
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
from gateway.sandbox.reddit import RedditSandbox

PIXEL = "a2_abcdef123456"
TOKEN = "reddit-test-token"
ROUTE = "shop:reddit"
UA = "Mozilla/5.0 (reddit test)"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


reddit_sandbox = sandbox_fixture(
    "reddit_sandbox", lambda: RedditSandbox(access_tokens={TOKEN}, pixel_ids={PIXEL}, seed=2468)
)


def reddit_config(tmp_path: Path, reddit_base: str, **kwargs: Any) -> Config:
    """A config with a Reddit destination (and Meta's too when `meta_base` is given)."""
    settings = {"pixel_id": PIXEL, "access_token": TOKEN, "api_base": reddit_base}
    return platform_config(tmp_path, "reddit", settings, **kwargs)


def purchase(i: int, **extra: Any) -> dict[str, Any]:
    email = f"Customer.{i}+promo@Example.com"
    return harness_purchase(i, email=email, click_ids={"rdt_cid": f"rdt-click-{i}"}, **extra)


def conversion_id(event: dict[str, Any]) -> str:
    value = event["metadata"]["conversion_id"]
    assert isinstance(value, str)
    return value


async def test_sandbox_round_trip_with_5xx_429_and_one_bad_event(
    tmp_path: Path, gateway: Any, reddit_sandbox: tuple[RedditSandbox, str]
) -> None:
    sandbox, base = reddit_sandbox
    sandbox.faults.error_rate = 0.25
    sandbox.faults.burst_429 = 2
    sandbox.faults.retry_after = 0.2
    sandbox.faults.reject_event_ids = {"order-37"}
    client = await gateway(reddit_config(tmp_path, base, reddit={"max_batch": 50}))
    events = [purchase(i) for i in range(300)]
    statuses = await round_trip_with_faults(
        client, sandbox, ROUTE, events, conversion_id, "order-37"
    )
    for event in sandbox.recorder.accepted:
        i = int(conversion_id(event)[6:])
        assert event["type"] == {"tracking_type": "PURCHASE"}
        assert event["action_source"] == "WEBSITE"
        assert event["click_id"] == f"rdt-click-{i}"
        user = event["user"]
        # Reddit's e-mail rule: +alias cut, non-alphanumerics of the local part removed.
        assert user["email"] == sha(f"customer{i}@example.com")
        assert user["phone_number"] == sha(f"+1650555{i % 10000:04d}")
        assert user["ip_address"] == sha("203.0.113.7")
        assert all(HEX64.match(user[k]) for k in ("email", "phone_number", "ip_address"))
    assert 400 in statuses
    await assert_only_dead_letter(
        client, ROUTE, "order-37", "invalid_field", "invalid conversion events"
    )


async def test_bad_event_in_a_batch_of_1000_does_not_sink_the_other_999(
    tmp_path: Path, gateway: Any, reddit_sandbox: tuple[RedditSandbox, str]
) -> None:
    sandbox, base = reddit_sandbox
    sandbox.faults.reject_event_ids = {"order-637"}
    config = reddit_config(tmp_path, base, reddit={"max_batch": 1000})
    client = await gateway(config, run_workers=False)
    events = [purchase(i) for i in range(1000)]
    worker = await assert_bad_event_isolated(
        client, sandbox, ROUTE, events, conversion_id, "order-637"
    )
    assert worker.stats.bisections > 0
    assert worker.stats.retried == 0, "the good events are resent at once, not retried later"
    assert worker.stats.requests <= 2 * 10 + 2  # log2(1000) levels, two requests each at most


async def test_expired_token_pauses_the_route_without_hammering(
    tmp_path: Path, gateway: Any, reddit_sandbox: tuple[RedditSandbox, str]
) -> None:
    sandbox, base = reddit_sandbox
    config = reddit_config(tmp_path, base, delivery={"pause_seconds": 60})
    await assert_expired_token_pauses(gateway, sandbox, config, ROUTE)


async def test_custom_long_and_stale_events(
    tmp_path: Path, gateway: Any, reddit_sandbox: tuple[RedditSandbox, str]
) -> None:
    sandbox, base = reddit_sandbox
    clock = FakeClock(time.time())
    client = await gateway(reddit_config(tmp_path, base), run_workers=False, clock=clock)
    checkout = {**purchase(1), "event": "InitiateCheckout"}
    too_long = {**purchase(2), "event": "N" * 65}
    await post_and_drain(client, ROUTE, [checkout, too_long, purchase(3)])
    by_id = {conversion_id(e): e for e in sandbox.recorder.accepted}
    assert set(by_id) == {"order-1", "order-3"}
    assert by_id["order-1"]["type"] == {
        "tracking_type": "CUSTOM",
        "custom_event_name": "InitiateCheckout",
    }
    dead = await dead_after_ageing(client, clock, ROUTE, purchase(4), days=7)
    assert "1-64 characters" in dead["order-2"]
    assert dead["order-4"].startswith("too_old")
    assert sandbox.recorder.requests == 1


async def test_test_id_reaches_the_sandbox(
    tmp_path: Path, gateway: Any, reddit_sandbox: tuple[RedditSandbox, str]
) -> None:
    sandbox, base = reddit_sandbox
    config = reddit_config(tmp_path, base, reddit={"test_id": "t2_testview"})
    client = await gateway(config, run_workers=False)
    event = await deliver_one(client, sandbox, ROUTE, purchase(1))
    assert event["_test_id"] == "t2_testview"


async def test_rdt_cid_from_the_visitor_profile_reaches_reddit_only(
    tmp_path: Path,
    gateway: Any,
    meta_sandbox: tuple[MetaSandbox, str],
    reddit_sandbox: tuple[RedditSandbox, str],
) -> None:
    meta, meta_base = meta_sandbox
    reddit, reddit_base = reddit_sandbox
    config = reddit_config(tmp_path, reddit_base, meta_base=meta_base, site=PROFILE_SITE)
    client = await gateway(config, run_workers=False)
    vid = await visit(client, "https://www.shop.test/?rdt_cid=rdt-from-ad", browser_headers(UA))
    await post_backend_for_visitor(client, purchase(9), vid)
    await drain(client, ROUTE, "shop:meta")
    by_id = {conversion_id(e): e for e in reddit.recorder.accepted}
    event = by_id["order-9"]
    assert event["click_id"] == "rdt-from-ad"
    assert event["user"]["user_agent"] == UA, "filled from the profile"
    text = only_meta_event(meta.recorder.accepted, "order-9")
    assert "rdt-from-ad" not in text


async def test_ldu_from_the_consent_decision_reaches_reddit(
    tmp_path: Path, gateway: Any, reddit_sandbox: tuple[RedditSandbox, str]
) -> None:
    sandbox, base = reddit_sandbox
    origin = "https://www.shop.test"
    site = {
        "hosts": ["track.shop.test"],
        "allowed_origins": [origin],
        "consent": {"ldu_regions": ["US-CA"], "region_header": "X-Region"},
    }
    client = await gateway(reddit_config(tmp_path, base, site=site), run_workers=False)
    headers = {"Host": "track.shop.test", "Origin": origin, "Content-Type": "text/plain",
               "User-Agent": UA}  # fmt: skip
    for region, event_id in (("us-ca", "in-california"), ("US-NY", "in-new-york")):
        visit = {"event": "PageView", "event_id": event_id, "url": "https://www.shop.test/"}
        resp = await client.post(
            "/e", data=json.dumps(visit), headers={**headers, "X-Region": region}
        )
        assert resp.status == 204
    await runtime_of(client).workers[ROUTE].drain()
    by_id = {conversion_id(e): e for e in sandbox.recorder.accepted}
    assert by_id["in-california"]["user"]["data_processing_options"] == {"modes": ["LDU"]}
    assert "data_processing_options" not in by_id["in-new-york"]["user"]
    assert by_id["in-new-york"]["type"] == {"tracking_type": "PAGE_VISIT"}
    assert "value" not in by_id["in-new-york"]["metadata"]
