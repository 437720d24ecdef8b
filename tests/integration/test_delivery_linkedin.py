"""End-to-end delivery to the LinkedIn Conversions API sandbox.

Faults (5xx, 429, one unusable event answered per element, one malformed event refusing the
whole request, expired token), exactly-once, the 90-day window, unmapped events, and li_fat_id
from the visitor profile reaching LinkedIn only.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
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
from gateway.sandbox.linkedin import LinkedInSandbox
from gateway.sandbox.meta import MetaSandbox
from gateway.store.base import DeliveryState

TOKEN = "linkedin-test-token"
RULE = "104012"
LEAD_RULE = "204013"
ROUTE = "shop:linkedin"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
UA = "Mozilla/5.0 (linkedin test)"


@pytest.fixture
async def linkedin_sandbox() -> AsyncIterator[tuple[LinkedInSandbox, str]]:
    """Start the LinkedIn sandbox on 127.0.0.1:<ephemeral>; yield it and its base URL."""
    sandbox = LinkedInSandbox(access_tokens={TOKEN}, rules={RULE, LEAD_RULE}, seed=2718)
    sandbox.faults.retry_after = 0.2
    server = TestServer(sandbox.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield sandbox, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def linkedin_config(
    tmp_path: Path,
    base: str,
    *,
    meta_base: str | None = None,
    linkedin: dict[str, Any] | None = None,
    site: dict[str, Any] | None = None,
    **sections: dict[str, Any],
) -> Config:
    """A config with a LinkedIn destination (and Meta's too when `meta_base` is given)."""
    doc = copy.deepcopy(base_doc(tmp_path, meta_base or "http://127.0.0.1:9"))
    destinations = doc["sites"][0]["destinations"]
    if meta_base is None:
        destinations.clear()
    destinations["linkedin"] = {
        "purchase_rule": RULE,
        "access_token": TOKEN,
        "api_base": base,
        **(linkedin or {}),
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
            "click_ids": {"li_fat_id": f"fat-{i}"},
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
    tmp_path: Path, gateway: Any, linkedin_sandbox: tuple[LinkedInSandbox, str]
) -> None:
    sandbox, base = linkedin_sandbox
    sandbox.faults.error_rate = 0.15
    sandbox.faults.burst_429 = 2
    sandbox.faults.reject_event_ids = {"order-37"}
    client = await gateway(linkedin_config(tmp_path, base, linkedin={"max_batch": 50}))
    events = [purchase(i) for i in range(300)]
    for start in range(0, 300, 100):
        resp = await client.post(
            "/v1/events", json={"events": events[start : start + 100]}, headers=auth()
        )
        body = await resp.json()
        assert resp.status == 202, body
        assert body["rejected"] == []

    await wait_for(lambda: len(sandbox.recorder.accepted) >= 299, timeout=90)
    keys = Counter(e["eventId"] for e in sandbox.recorder.accepted)
    assert max(keys.values()) == 1, "an event reached the sandbox twice"
    assert set(keys) == {f"order-{i}" for i in range(300)} - {"order-37"}
    for event in sandbox.recorder.accepted:
        i = int(event["eventId"][6:])
        assert event["conversion"] == f"urn:lla:llaPartnerConversion:{RULE}"
        assert event["conversionValue"] == {"currencyCode": "EUR", "amount": f"{10 + i}.00"}
        email, click = event["user"]["userIds"]
        assert email["idType"] == "SHA256_EMAIL"
        assert email["idValue"] == hashlib.sha256(f"customer.{i}@example.com".encode()).hexdigest()
        assert click == {"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": f"fat-{i}"}
        assert event["conversionHappenedAt"] > 10**12, "milliseconds"
    statuses = [r["status"] for r in sandbox.recorder.rejected]
    assert 429 in statuses
    assert any(s >= 500 for s in statuses)
    assert 400 in statuses
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


async def test_a_malformed_event_in_a_batch_of_500_is_isolated_by_bisecting(
    tmp_path: Path, gateway: Any, linkedin_sandbox: tuple[LinkedInSandbox, str]
) -> None:
    sandbox, base = linkedin_sandbox
    client = await gateway(
        linkedin_config(tmp_path, base, linkedin={"max_batch": 500}), run_workers=False
    )
    events = [purchase(i) for i in range(500)]
    # A click id that looks hashed: LinkedIn refuses the whole request (422) for it.
    events[137]["user"]["click_ids"]["li_fat_id"] = "a" * 64
    resp = await client.post("/v1/events", json={"events": events}, headers=auth())
    assert resp.status == 202
    worker = runtime_of(client).workers[ROUTE]
    await worker.drain()
    delivered = {e["eventId"] for e in sandbox.recorder.accepted}
    assert delivered == {f"order-{i}" for i in range(500)} - {"order-137"}
    assert worker.stats.bisections > 0
    assert worker.stats.retried == 0, "the good events are resent at once, not retried later"
    assert worker.stats.requests <= 2 * 9 + 2
    dead = await runtime_of(client).store.dead_letters(ROUTE, 10)
    assert [d.event_id for d in dead] == ["order-137"]
    assert (dead[0].reason or "").startswith("invalid_field")
    assert "never hashed" in (dead[0].reason or "")


async def test_expired_token_pauses_the_route_without_hammering(
    tmp_path: Path, gateway: Any, linkedin_sandbox: tuple[LinkedInSandbox, str]
) -> None:
    sandbox, base = linkedin_sandbox
    sandbox.faults.token_expired = True
    clock = FakeClock(time.time())
    config = linkedin_config(tmp_path, base, delivery={"pause_seconds": 60})
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


async def test_rules_unmapped_and_stale_events(
    tmp_path: Path, gateway: Any, linkedin_sandbox: tuple[LinkedInSandbox, str]
) -> None:
    sandbox, base = linkedin_sandbox
    clock = FakeClock(time.time())
    config = linkedin_config(tmp_path, base, linkedin={"conversion_rules": {"LEAD": LEAD_RULE}})
    client = await gateway(config, run_workers=False, clock=clock)
    lead = {**purchase(1), "event": "Lead"}
    signup = {**purchase(2), "event": "CompleteRegistration"}
    resp = await client.post(
        "/v1/events", json={"events": [lead, signup, purchase(3)]}, headers=auth()
    )
    assert resp.status == 202
    worker = runtime_of(client).workers[ROUTE]
    await worker.drain()
    by_id = {e["eventId"]: e["conversion"] for e in sandbox.recorder.accepted}
    assert by_id == {
        "order-1": f"urn:lla:llaPartnerConversion:{LEAD_RULE}",
        "order-3": f"urn:lla:llaPartnerConversion:{RULE}",
    }
    await client.post("/v1/events", json={"events": [purchase(4)]}, headers=auth())
    clock.advance(90 * 86400)
    await worker.drain()
    dead = {
        d.event_id: d.reason or "" for d in await runtime_of(client).store.dead_letters(ROUTE, 10)
    }
    assert "'SIGN_UP'" in dead["order-2"]
    assert dead["order-4"].startswith("too_old")
    assert sandbox.recorder.requests == 1


async def test_li_fat_id_from_the_visitor_profile_reaches_linkedin_only(
    tmp_path: Path,
    gateway: Any,
    meta_sandbox: tuple[MetaSandbox, str],
    linkedin_sandbox: tuple[LinkedInSandbox, str],
) -> None:
    meta, meta_base = meta_sandbox
    linkedin, base = linkedin_sandbox
    origin = "https://www.shop.test"
    site = {"hosts": ["track.shop.test"], "allowed_origins": [origin]}
    client = await gateway(
        linkedin_config(tmp_path, base, meta_base=meta_base, site=site), run_workers=False
    )
    headers = {"Host": "track.shop.test", "Origin": origin, "Content-Type": "text/plain",
               "User-Agent": UA}  # fmt: skip
    visit = {"event": "PageView", "url": "https://www.shop.test/?li_fat_id=li-from-ad-42"}
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
    by_id = {e["eventId"]: e for e in linkedin.recorder.accepted}
    assert by_id["order-9"]["user"]["userIds"] == [
        {"idType": "SHA256_EMAIL", "idValue": hashlib.sha256(b"jane@example.com").hexdigest()},
        {"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": "li-from-ad-42"},
    ]
    meta_events = [e for e in meta.recorder.accepted if e["event_id"] == "order-9"]
    assert len(meta_events) == 1
    assert "li-from-ad-42" not in json.dumps(meta_events[0])
    # The landing page's own URL (event_source_url of the PageView) may show it; no id field may.
    assert all("li-from-ad-42" not in json.dumps(e["user_data"]) for e in meta.recorder.accepted)


async def test_a_rule_the_account_does_not_own_fails_alone_and_digests_pass_through(
    tmp_path: Path, gateway: Any, linkedin_sandbox: tuple[LinkedInSandbox, str]
) -> None:
    sandbox, base = linkedin_sandbox
    config = linkedin_config(tmp_path, base, linkedin={"conversion_rules": {"LEAD": "999"}})
    client = await gateway(config, run_workers=False)
    digest = hashlib.sha256(b"already@hashed.example").hexdigest()
    hashed = purchase(2)
    hashed["user"] = {"email": digest.upper(), "click_ids": {"li_fat_id": "fat-2"}}
    lead = {**purchase(1), "event": "Lead"}
    resp = await client.post("/v1/events", json={"events": [lead, hashed]}, headers=auth())
    assert resp.status == 202
    worker = runtime_of(client).workers[ROUTE]
    await worker.drain()
    assert sandbox.recorder.requests == 1, "one request; the foreign rule failed per element"
    [event] = sandbox.recorder.accepted
    assert event["eventId"] == "order-2"
    assert event["user"]["userIds"][0] == {"idType": "SHA256_EMAIL", "idValue": digest}
    dead = await runtime_of(client).store.dead_letters(ROUTE, 10)
    assert [d.event_id for d in dead] == ["order-1"]
    assert (dead[0].reason or "").startswith("auth")
    assert "does not belong to the ad account" in (dead[0].reason or "")
