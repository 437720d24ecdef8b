"""End-to-end delivery to the LinkedIn Conversions API sandbox.

Faults (5xx, 429, one unusable event answered per element, one malformed event refusing the
whole request, expired token), exactly-once, the 90-day window, unmapped events, and li_fat_id
from the visitor profile reaching LinkedIn only.
"""

from __future__ import annotations

import hashlib
import json
import time
from operator import itemgetter
from pathlib import Path
from typing import Any

from conftest import FakeClock
from platform_harness import (
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
from gateway.sandbox.linkedin import LinkedInSandbox
from gateway.sandbox.meta import MetaSandbox

TOKEN = "linkedin-test-token"
RULE = "104012"
LEAD_RULE = "204013"
ROUTE = "shop:linkedin"
UA = "Mozilla/5.0 (linkedin test)"


def make_linkedin_sandbox() -> LinkedInSandbox:
    sandbox = LinkedInSandbox(access_tokens={TOKEN}, rules={RULE, LEAD_RULE}, seed=2718)
    sandbox.faults.retry_after = 0.2
    return sandbox


linkedin_sandbox = sandbox_fixture("linkedin_sandbox", make_linkedin_sandbox)


def linkedin_config(tmp_path: Path, base: str, **kwargs: Any) -> Config:
    """A config with a LinkedIn destination (and Meta's too when `meta_base` is given)."""
    settings = {"purchase_rule": RULE, "access_token": TOKEN, "api_base": base}
    return platform_config(tmp_path, "linkedin", settings, **kwargs)


def purchase(i: int, **extra: Any) -> dict[str, Any]:
    return harness_purchase(i, user_agent=UA, click_ids={"li_fat_id": f"fat-{i}"}, **extra)


async def test_sandbox_round_trip_with_5xx_429_and_one_bad_event(
    tmp_path: Path, gateway: Any, linkedin_sandbox: tuple[LinkedInSandbox, str]
) -> None:
    sandbox, base = linkedin_sandbox
    sandbox.faults.error_rate = 0.15
    sandbox.faults.burst_429 = 2
    sandbox.faults.reject_event_ids = {"order-37"}
    client = await gateway(linkedin_config(tmp_path, base, linkedin={"max_batch": 50}))
    events = [purchase(i) for i in range(300)]
    event_id = itemgetter("eventId")
    statuses = await round_trip_with_faults(client, sandbox, ROUTE, events, event_id, "order-37")
    for event in sandbox.recorder.accepted:
        i = int(event["eventId"][6:])
        assert event["conversion"] == f"urn:lla:llaPartnerConversion:{RULE}"
        assert event["conversionValue"] == {"currencyCode": "EUR", "amount": f"{10 + i}.00"}
        email, click = event["user"]["userIds"]
        assert email["idType"] == "SHA256_EMAIL"
        assert email["idValue"] == hashlib.sha256(f"customer.{i}@example.com".encode()).hexdigest()
        assert click == {"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": f"fat-{i}"}
        assert event["conversionHappenedAt"] > 10**12, "milliseconds"
    assert 400 in statuses
    await assert_only_dead_letter(
        client, ROUTE, "order-37", "invalid_field", "rejected by the sandbox"
    )


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
    worker = await assert_bad_event_isolated(
        client, sandbox, ROUTE, events, itemgetter("eventId"), "order-137", "never hashed"
    )
    assert worker.stats.bisections > 0
    assert worker.stats.retried == 0, "the good events are resent at once, not retried later"
    assert worker.stats.requests <= 2 * 9 + 2


async def test_expired_token_pauses_the_route_without_hammering(
    tmp_path: Path, gateway: Any, linkedin_sandbox: tuple[LinkedInSandbox, str]
) -> None:
    sandbox, base = linkedin_sandbox
    config = linkedin_config(tmp_path, base, delivery={"pause_seconds": 60})
    await assert_expired_token_pauses(gateway, sandbox, config, ROUTE)


async def test_rules_unmapped_and_stale_events(
    tmp_path: Path, gateway: Any, linkedin_sandbox: tuple[LinkedInSandbox, str]
) -> None:
    sandbox, base = linkedin_sandbox
    clock = FakeClock(time.time())
    config = linkedin_config(tmp_path, base, linkedin={"conversion_rules": {"LEAD": LEAD_RULE}})
    client = await gateway(config, run_workers=False, clock=clock)
    lead = {**purchase(1), "event": "Lead"}
    signup = {**purchase(2), "event": "CompleteRegistration"}
    await post_and_drain(client, ROUTE, [lead, signup, purchase(3)])
    by_id = {e["eventId"]: e["conversion"] for e in sandbox.recorder.accepted}
    assert by_id == {
        "order-1": f"urn:lla:llaPartnerConversion:{LEAD_RULE}",
        "order-3": f"urn:lla:llaPartnerConversion:{RULE}",
    }
    dead = await dead_after_ageing(client, clock, ROUTE, purchase(4), days=90)
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
    config = linkedin_config(tmp_path, base, meta_base=meta_base, site=PROFILE_SITE)
    client = await gateway(config, run_workers=False)
    vid = await visit(client, "https://www.shop.test/?li_fat_id=li-from-ad-42", browser_headers(UA))
    await post_backend_for_visitor(client, purchase(9), vid)
    await drain(client, ROUTE, "shop:meta")
    by_id = {e["eventId"]: e for e in linkedin.recorder.accepted}
    assert by_id["order-9"]["user"]["userIds"] == [
        {"idType": "SHA256_EMAIL", "idValue": hashlib.sha256(b"jane@example.com").hexdigest()},
        {"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": "li-from-ad-42"},
    ]
    text = only_meta_event(meta.recorder.accepted, "order-9")
    assert "li-from-ad-42" not in text
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
    await post_and_drain(client, ROUTE, [lead, hashed])
    assert sandbox.recorder.requests == 1, "one request; the foreign rule failed per element"
    [event] = sandbox.recorder.accepted
    assert event["eventId"] == "order-2"
    assert event["user"]["userIds"][0] == {"idType": "SHA256_EMAIL", "idValue": digest}
    await assert_only_dead_letter(
        client, ROUTE, "order-1", "auth", "does not belong to the ad account"
    )
