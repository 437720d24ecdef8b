"""End-to-end delivery to the Snap sandbox, and proxied Snap pixel hits mirrored to it.

Faults (5xx, 429 without Retry-After, one bad event, expired token), exactly-once, the 37-day
window, ScCid/_scid reaching Snap only, and a pixel hit deduplicated by its client_dedup_id.
"""

from __future__ import annotations

import time
from operator import itemgetter
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from conftest import FakeClock, auth
from platform_harness import (
    HEX64,
    PROFILE_SITE,
    assert_bad_event_isolated,
    assert_expired_token_pauses,
    browser_headers,
    dead_after_ageing,
    dead_reasons,
    deliver_one,
    drain,
    only_meta_event,
    platform_config,
    post_and_drain,
    post_backend_for_visitor,
    proxy_upstreams,
    round_trip_with_faults,
    sandbox_fixture,
    visit,
)
from platform_harness import purchase as harness_purchase

from gateway.config import Config
from gateway.sandbox.cdn import FakeCdn
from gateway.sandbox.meta import MetaSandbox
from gateway.sandbox.snap import SnapSandbox

PIXEL = "5bf81ee1-15b1-4dc1-b636-d7dae49b950e"
TOKEN = "snap-test-token"
ROUTE = "shop:snap"
HOST = "www.shop.test"
UA = "Mozilla/5.0 (snap hit test)"
CLIENT = "203.0.113.9"
SCID = "8c2e5a0b-3d4f-4a6b-9c8d-1e2f3a4b5c6d"


snap_sandbox = sandbox_fixture(
    "snap_sandbox", lambda: SnapSandbox(access_tokens={TOKEN}, seed=4321)
)


def snap_config(tmp_path: Path, snap_base: str, **kwargs: Any) -> Config:
    """A config with a Snap destination (and Meta's too when `meta_base` is given)."""
    settings = {"pixel_id": PIXEL, "access_token": TOKEN, "api_base": snap_base}
    return platform_config(tmp_path, "snap", settings, **kwargs)


def purchase(i: int, **extra: Any) -> dict[str, Any]:
    return harness_purchase(i, click_ids={"sccid": f"sc-click-{i}"}, **extra)


async def test_sandbox_round_trip_with_5xx_429_and_one_bad_event(
    tmp_path: Path, gateway: Any, snap_sandbox: tuple[SnapSandbox, str]
) -> None:
    sandbox, base = snap_sandbox
    sandbox.faults.error_rate = 0.15
    sandbox.faults.burst_429 = 2
    sandbox.faults.reject_event_ids = {"order-37"}
    client = await gateway(snap_config(tmp_path, base, snap={"max_batch": 50}))
    events = [purchase(i) for i in range(300)]
    event_id = itemgetter("event_id")
    statuses = await round_trip_with_faults(client, sandbox, ROUTE, events, event_id, "order-37")
    for event in sandbox.recorder.accepted:
        assert event["event_name"] == "PURCHASE"
        assert event["action_source"] == "WEB"
        assert all(HEX64.match(v) for v in event["user_data"]["em"] + event["user_data"]["ph"])
        assert event["user_data"]["sc_click_id"] == f"sc-click-{event['event_id'][6:]}"
    assert 400 in statuses
    dead = await dead_reasons(client, ROUTE)
    assert list(dead) == ["order-37"]
    assert dead["order-37"].startswith("invalid_field")
    assert "rejected by the sandbox" in dead["order-37"]


async def test_bad_event_in_a_batch_of_500_does_not_sink_the_other_499(
    tmp_path: Path, gateway: Any, snap_sandbox: tuple[SnapSandbox, str]
) -> None:
    sandbox, base = snap_sandbox
    sandbox.faults.reject_event_ids = {"order-137"}
    config = snap_config(tmp_path, base, snap={"max_batch": 500})
    client = await gateway(config, run_workers=False)
    events = [purchase(i) for i in range(500)]
    event_id = itemgetter("event_id")
    worker = await assert_bad_event_isolated(client, sandbox, ROUTE, events, event_id, "order-137")
    assert worker.stats.bisections > 0
    assert worker.stats.retried == 0, "the good events are resent at once, not retried later"
    assert worker.stats.requests <= 2 * 9 + 2  # log2(500) levels, two requests each at most


async def test_expired_token_pauses_the_route_without_hammering(
    tmp_path: Path, gateway: Any, snap_sandbox: tuple[SnapSandbox, str]
) -> None:
    sandbox, base = snap_sandbox
    config = snap_config(tmp_path, base, delivery={"pause_seconds": 60})
    await assert_expired_token_pauses(gateway, sandbox, config, ROUTE)


async def test_unmapped_and_stale_events_are_dead_lettered_before_sending(
    tmp_path: Path, gateway: Any, snap_sandbox: tuple[SnapSandbox, str]
) -> None:
    sandbox, base = snap_sandbox
    clock = FakeClock(time.time())
    client = await gateway(snap_config(tmp_path, base), run_workers=False, clock=clock)
    lead = {**purchase(1), "event": "Lead"}
    await post_and_drain(client, ROUTE, [lead, purchase(2)])
    assert [e["event_id"] for e in sandbox.recorder.accepted] == ["order-2"]
    dead = await dead_after_ageing(client, clock, ROUTE, purchase(3), days=37)
    assert "custom_events" in dead["order-1"]
    assert dead["order-3"].startswith("too_old")
    assert sandbox.recorder.requests == 1


async def test_test_mode_goes_to_the_validate_endpoint(
    tmp_path: Path, gateway: Any, snap_sandbox: tuple[SnapSandbox, str]
) -> None:
    sandbox, base = snap_sandbox
    config = snap_config(tmp_path, base, snap={"test_mode": True})
    client = await gateway(config, run_workers=False)
    event = await deliver_one(client, sandbox, ROUTE, purchase(1))
    assert event["_test"] is True


# --- proxied Snap pixel hits ------------------------------------------------------------------


async def test_proxied_snap_hit_reaches_snap_with_its_dedup_id_and_nothing_at_meta(
    tmp_path: Path,
    gateway: Any,
    cdn: tuple[FakeCdn, str],
    meta_sandbox: tuple[MetaSandbox, str],
    snap_sandbox: tuple[SnapSandbox, str],
) -> None:
    fake, url = cdn
    meta, meta_base = meta_sandbox
    snap, snap_base = snap_sandbox
    config = snap_config(
        tmp_path,
        snap_base,
        meta_base=meta_base,
        site={"hosts": [HOST], "proxy": {"enabled": True, **proxy_upstreams(url)}},
        server={"trusted_proxies": ["127.0.0.1/32"]},
    )
    clock = FakeClock(time.time() - 120)
    client = await gateway(config, clock=clock, run_workers=False)
    body = urlencode(
        {
            "pid": PIXEL,
            "ev": "PURCHASE",
            "client_dedup_id": "snap-dedup-1",
            "e_pr": "19.5",
            "e_cur": "EUR",
            "e_tid": "order-77",
            "pl": "https://www.shop.test/thanks?ScCid=snap-click-77",
        }
    )
    resp = await client.post(
        "/p/s/p",
        data=body,
        headers={
            "Host": HOST,
            "User-Agent": UA,
            "X-Forwarded-For": CLIENT,
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"_scid={SCID}; _fbp=fb.1.1700000000000.1234567890",
        },
    )
    assert resp.status == 200
    assert len(fake.hits) == 1, "the hit itself went upstream"
    clock.advance(10)
    await drain(client, ROUTE, "shop:meta")
    [event] = snap.recorder.accepted
    assert event["event_id"] == "snap-dedup-1", "Snap dedups the pixel copy on this id"
    assert event["event_name"] == "PURCHASE"
    assert event["custom_data"]["value"] == 19.5
    assert event["custom_data"]["order_id"] == "order-77"
    assert event["user_data"]["client_ip_address"] == CLIENT
    assert event["user_data"]["client_user_agent"] == UA
    assert event["user_data"]["sc_cookie1"] == SCID
    assert event["user_data"]["sc_click_id"] == "snap-click-77"
    assert meta.recorder.accepted == []
    assert meta.recorder.requests == 0, "a Snap hit is not mirrored to Meta"


async def test_the_202_warns_about_what_snap_will_refuse(
    tmp_path: Path, gateway: Any, snap_sandbox: tuple[SnapSandbox, str]
) -> None:
    _, base = snap_sandbox
    client = await gateway(snap_config(tmp_path, base), run_workers=False)
    lead = {**purchase(1), "event": "Lead"}  # strong identifiers: the shortcut would pass it
    ip_only = purchase(2, source="physical_store")
    ip_only["user"] = {"ip": "203.0.113.7"}
    resp = await client.post(
        "/v1/events", json={"events": [lead, ip_only, purchase(3)]}, headers=auth()
    )
    body = await resp.json()
    assert resp.status == 202, body
    warnings = {w["path"]: w["reason"] for w in body["warnings"]}
    assert set(warnings) == {"events[0].event", "events[1].user"}
    assert warnings["events[0].event"].startswith("snap would refuse this event (event name 'Lead'")
    assert "email, a phone" in warnings["events[1].user"]


async def test_sccid_and_scid_from_the_visitor_profile_reach_snap_only(
    tmp_path: Path,
    gateway: Any,
    meta_sandbox: tuple[MetaSandbox, str],
    snap_sandbox: tuple[SnapSandbox, str],
) -> None:
    meta, meta_base = meta_sandbox
    snap, snap_base = snap_sandbox
    config = snap_config(tmp_path, snap_base, meta_base=meta_base, site=PROFILE_SITE)
    client = await gateway(config, run_workers=False)
    headers = browser_headers(UA, Cookie=f"_scid={SCID}")
    vid = await visit(client, "https://www.shop.test/?ScCid=sc-from-ad", headers)
    await post_backend_for_visitor(client, purchase(9), vid)
    await drain(client, ROUTE, "shop:meta")
    by_id = {e["event_id"]: e for e in snap.recorder.accepted}
    user = by_id["order-9"]["user_data"]
    assert user["sc_click_id"] == "sc-from-ad"
    assert user["sc_cookie1"] == SCID
    assert user["client_user_agent"] == UA, "filled from the profile"
    text = only_meta_event(meta.recorder.accepted, "order-9")
    assert "sc-from-ad" not in text
    assert SCID not in text
