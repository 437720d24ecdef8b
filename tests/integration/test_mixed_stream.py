"""Issue #11's mixed stream: 2,000 events to one site with every registered destination enabled.

Backend batches, loader `/e` events and proxied hits of every vendor route are posted in rounds
to one gateway whose site sends to every platform, each at its own sandbox. One platform is down
for the first half of the stream. Every platform must receive exactly the events its routing
allows, each once (by its dedup key); the down one catches up after recovery; proxied hits reach
their own platform only, with the hit's event id; and the healthy platforms' p95 delivery delay
stays within 2x of a run of the same stream without the outage.

Adding a platform is one `Platform` row in PLATFORMS below: its sandbox, its settings for a
sandbox base URL, how to read (event name, dedup key) from what its sandbox accepted, its names
for the stream's canonical events, which hit vendors mirror to it, and which events are routed to
it (`events`, None for all; when set it is also configured as the destination's `events` include
list, for per-destination routing). Routing is that data: `Platform.routes` is the whole rule.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import ACCESS_TOKEN, PIXEL_ID, runtime_of
from mixed_stream import (
    BACKEND,
    CLICK_IDS,
    HIT_VENDORS,
    LOADER,
    SNAP_PIXEL,
    TIKTOK_PIXEL,
    Platform,
    Sandbox,
    Stream,
    build_stream,
    click_id_values,
    delays,
    p95,
    post_round,
    received_counts,
    sandboxes,
    site_config,
    tokens,
)
from platform_harness import wait_for

from gateway.destinations import DESTINATIONS
from gateway.sandbox.cdn import FakeCdn
from gateway.sandbox.ga4 import GA4Sandbox
from gateway.sandbox.google_ads import GoogleAdsSandbox
from gateway.sandbox.linkedin import LinkedInSandbox
from gateway.sandbox.meta import MetaSandbox
from gateway.sandbox.microsoft import MicrosoftSandbox
from gateway.sandbox.pinterest import PinterestSandbox
from gateway.sandbox.reddit import RedditSandbox
from gateway.sandbox.snap import SnapSandbox
from gateway.sandbox.tiktok import TikTokSandbox
from gateway.sandbox.x import XSandbox
from gateway.store.base import DeliveryState


def token(name: str) -> str:
    return f"mixed-{name}-token"


PINTEREST_ACCOUNT = "549755885175"
REDDIT_PIXEL = "a2_mixed1234567"
LINKEDIN_RULES = {"Purchase": "104012", "Lead": "204013", "AddToCart": "304014"}
MS_TAG = "343012345"


def linkedin_urn(rule: str) -> str:
    return f"urn:lla:llaPartnerConversion:{rule}"


GOOGLE_CUSTOMER = "1234567890"
GOOGLE_ACTIONS = {"Purchase": "987654321", "Lead": "987654322"}
GOOGLE_OAUTH = {
    "client_id": "123456789012-mixed.apps.googleusercontent.com",
    "client_secret": "mixed-google-client-secret",
    "refresh_token": "mixed-google-refresh-token",
    "developer_token": "mixed-google-developer-token",
}
X_PIXEL = "o8z6j"
X_EVENTS = {"Purchase": "o87ne", "Lead": "o87nf", "AddToCart": "o87ng"}
X_OAUTH = {
    "consumer_key": "mixed-x-consumer-key",
    "consumer_secret": "mixed-x-consumer-secret",
    "access_token": "mixed-x-access-token",
    "access_token_secret": "mixed-x-access-token-secret",
}


def google_action(name: str) -> str:
    return f"customers/{GOOGLE_CUSTOMER}/conversionActions/{GOOGLE_ACTIONS[name]}"


def ga4_key(event: dict[str, Any]) -> tuple[str, str]:
    """GA4 events carry no event id: the backend event's number is the last part of its URL."""
    return event["name"], "be-" + event["params"]["page_location"].rsplit("/", 1)[1]


PLATFORMS: tuple[Platform, ...] = (
    Platform(
        name="meta",
        sandbox=lambda: MetaSandbox(access_tokens={ACCESS_TOKEN}, seed=11),
        settings=lambda base: {
            "pixel_id": PIXEL_ID,
            "access_token": ACCESS_TOKEN,
            "api_base": base,
        },
        received=lambda e: (e["event_name"], e["event_id"]),
        names={"Purchase": "Purchase", "Lead": "Lead", "AddToCart": "AddToCart"},
        hits_from=frozenset({"meta"}),
        click_ids=frozenset({"fbclid"}),
    ),
    Platform(
        name="tiktok",
        sandbox=lambda: TikTokSandbox(access_tokens={token("tiktok")}, seed=12),
        settings=lambda base: {
            "pixel_code": TIKTOK_PIXEL,
            "access_token": token("tiktok"),
            "api_base": base,
        },
        received=lambda e: (e["event"], e["event_id"]),
        names={"Purchase": "Purchase", "Lead": "Lead", "AddToCart": "AddToCart"},
        hits_from=frozenset({"tiktok"}),
        click_ids=frozenset({"ttclid"}),
    ),
    Platform(
        name="snap",
        sandbox=lambda: SnapSandbox(access_tokens={token("snap")}, seed=13),
        settings=lambda base: {
            "pixel_id": SNAP_PIXEL,
            "access_token": token("snap"),
            "api_base": base,
            "custom_events": {"Lead": "SIGN_UP"},  # Snap has no Lead event
        },
        received=lambda e: (e["event_name"], e["event_id"]),
        names={
            "Purchase": "PURCHASE",
            "Lead": "SIGN_UP",
            "AddToCart": "ADD_CART",
            "CompleteRegistration": "SIGN_UP",
        },
        hits_from=frozenset({"snap"}),
        click_ids=frozenset({"sccid"}),
    ),
    Platform(
        name="pinterest",
        sandbox=lambda: PinterestSandbox(
            access_tokens={token("pinterest")}, ad_accounts={PINTEREST_ACCOUNT}, seed=14
        ),
        settings=lambda base: {
            "ad_account_id": PINTEREST_ACCOUNT,
            "access_token": token("pinterest"),
            "api_base": base,
        },
        received=lambda e: (e["event_name"], e["event_id"]),
        names={"Purchase": "checkout", "Lead": "lead", "AddToCart": "add_to_cart"},
        click_ids=frozenset({"epik"}),
    ),
    Platform(
        name="reddit",
        sandbox=lambda: RedditSandbox(
            access_tokens={token("reddit")}, pixel_ids={REDDIT_PIXEL}, seed=15
        ),
        settings=lambda base: {
            "pixel_id": REDDIT_PIXEL,
            "access_token": token("reddit"),
            "api_base": base,
        },
        received=lambda e: (e["type"]["tracking_type"], e["metadata"]["conversion_id"]),
        names={"Purchase": "PURCHASE", "Lead": "LEAD", "AddToCart": "ADD_TO_CART"},
        click_ids=frozenset({"rdt_cid"}),
    ),
    Platform(
        name="linkedin",
        sandbox=lambda: LinkedInSandbox(
            access_tokens={token("linkedin")}, rules=set(LINKEDIN_RULES.values()), seed=16
        ),
        settings=lambda base: {
            "purchase_rule": LINKEDIN_RULES["Purchase"],
            "conversion_rules": {k: v for k, v in LINKEDIN_RULES.items() if k != "Purchase"},
            "access_token": token("linkedin"),
            "api_base": base,
        },
        received=lambda e: (e["conversion"], e["eventId"]),
        names={name: linkedin_urn(rule) for name, rule in LINKEDIN_RULES.items()},
        click_ids=frozenset({"li_fat_id"}),
    ),
    Platform(
        name="microsoft",
        sandbox=lambda: MicrosoftSandbox(access_tokens={token("microsoft")}, seed=17),
        settings=lambda base: {
            "tag_id": MS_TAG,
            "access_token": token("microsoft"),
            "api_base": base,
        },
        received=lambda e: (e["eventName"], e["eventId"]),
        names={"Purchase": "purchase", "Lead": "generate_lead", "AddToCart": "add_to_cart"},
        click_ids=frozenset({"msclkid"}),
    ),
    Platform(
        name="ga4",
        sandbox=lambda: GA4Sandbox(
            api_secrets={token("ga4")}, measurement_ids={"G-MIXED00001"}, seed=18
        ),
        settings=lambda base: {
            "measurement_id": "G-MIXED00001",
            "api_secret": token("ga4"),
            "api_base": base,
        },
        received=ga4_key,
        names={"Purchase": "purchase", "Lead": "generate_lead", "AddToCart": "add_to_cart"},
        click_ids=frozenset({"ga"}),
        from_loader=False,  # its default sources: GA4 counts a copy of a browser event twice
    ),
    Platform(
        name="google_ads",
        sandbox=lambda: GoogleAdsSandbox(
            **GOOGLE_OAUTH,
            customers={GOOGLE_CUSTOMER},
            actions=set(GOOGLE_ACTIONS.values()),
            seed=19,
        ),
        settings=lambda base: {
            "customer_id": GOOGLE_CUSTOMER,
            "purchase_action": GOOGLE_ACTIONS["Purchase"],
            "conversion_actions": {"Lead": GOOGLE_ACTIONS["Lead"]},
            **GOOGLE_OAUTH,
            "token_url": f"{base}/token",
            "api_base": base,
        },
        received=lambda e: (e["conversionAction"], e["orderId"]),
        names={name: google_action(name) for name in GOOGLE_ACTIONS},
        hits_from=frozenset({"ga4"}),
        # gbraid is Google's too, but a conversion carries one click id and gclid wins: with
        # both given, gbraid reaches no platform at all (checked as everyone's foreign id).
        click_ids=frozenset({"gclid"}),
        events=frozenset(GOOGLE_ACTIONS),  # only the events it has a conversion action for
    ),
    Platform(
        name="x",
        sandbox=lambda: XSandbox(
            **X_OAUTH, event_ids=set(X_EVENTS.values()), pixel_ids={X_PIXEL}, seed=20
        ),
        settings=lambda base: {
            "pixel_id": X_PIXEL,
            "purchase_event_id": X_EVENTS["Purchase"],
            "event_ids": {k: v for k, v in X_EVENTS.items() if k != "Purchase"},
            **X_OAUTH,
            "api_base": base,
        },
        received=lambda e: (e["event_id"], e["conversion_id"]),
        names=X_EVENTS,
        click_ids=frozenset({"twclid"}),
    ),
)
"""Every registered destination: one row each (see the module docstring)."""

COUNTS_BOTH_COPIES = frozenset({"ga4"})
"""Platforms that cannot deduplicate a server copy against the pixel hit they already got
(GA4's Measurement Protocol counts both): no hit is ever mirrored to them (issue #11 item 5;
GA4 /g/collect hits go to google_ads only)."""

Boxes = dict[str, tuple[Sandbox, str]]

DOWN_WHILE = 0.5
"""The down platform is down for this fraction of the stream's rounds (the first half)."""
CATCH_UP_SECONDS = 30.0
"""After recovery the down platform has everything within this long."""
WAIT_SECONDS = 60.0
"""Bound on the wait for every platform to have everything, after the last post."""
DOWN_LATENCY = 0.3
"""While down, the platform also answers slowly (an outage that times out ties up its caller)."""
DELAY_FLOOR = 0.5
"""p95 delays below this count as this (noise on a busy 2-core machine is not an outage)."""


@dataclass
class Run:
    """What one run of the stream left: post times, what each sandbox accepted, p95 delays."""

    stream: Stream
    posted: dict[str, float] = field(default_factory=dict)
    """Dedup key → wall-clock time its request was sent."""
    received: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    p95: dict[str, float] = field(default_factory=dict)
    recovered_at: float = 0.0


def assert_received_exactly(row: Platform, sandbox: Sandbox, stream: Stream) -> None:
    """`row`'s sandbox got exactly what its routing allows from `stream`, each pair once."""
    expected = row.expected(stream.events)
    counts = received_counts(row, sandbox)
    twice = sorted(pair for pair, n in counts.items() if n > 1)
    assert not twice, f"{row.name} received {len(twice)} events more than once: {twice[:5]}"
    lost = sorted(expected - set(counts))
    assert not lost, f"{row.name} lost {len(lost)} events: {lost[:5]}"
    extra = sorted(set(counts) - expected)
    assert not extra, f"{row.name} received {len(extra)} events not routed to it: {extra[:5]}"


async def wait_all_delivered(client: Any, boxes: Boxes, stream: Stream) -> None:
    """Wait (bounded) until every sandbox has its events and every outbox row is done."""
    expected = {row.name: row.expected(stream.events) for row in PLATFORMS}

    def all_arrived() -> bool:
        return all(
            set(received_counts(row, boxes[row.name][0])) >= expected[row.name] for row in PLATFORMS
        )

    try:
        await wait_for(all_arrived, timeout=WAIT_SECONDS)
    except AssertionError:
        for row in PLATFORMS:  # name the platform and the events that did not arrive
            assert_received_exactly(row, boxes[row.name][0], stream)
        raise
    # Every row done: nothing is left that could still be sent (again).
    want = {f"shop:{row.name}": {DeliveryState.DONE: len(expected[row.name])} for row in PLATFORMS}
    store = runtime_of(client).store
    by_route: dict[str, dict[DeliveryState, int]] = {}
    for _ in range(200):
        by_route = {}
        for (route, state), n in (await store.counts()).items():
            by_route.setdefault(route, {})[state] = n
        if by_route == want:
            break
        await asyncio.sleep(0.05)
    for row in PLATFORMS:  # what reached each platform first: it names the platform and events
        assert_received_exactly(row, boxes[row.name][0], stream)
    assert by_route == want


async def run_stream(
    tmp_path: Path, gateway: Any, cdn: tuple[FakeCdn, str], down: str | None
) -> Run:
    """Post the whole stream to a fresh gateway and fresh sandboxes; wait until all is delivered.

    With `down`, that platform's sandbox is down (and slow) for the first DOWN_WHILE of the rounds.
    """
    fake, cdn_url = cdn
    run = Run(build_stream())
    tmp_path.mkdir()
    async with sandboxes(PLATFORMS) as boxes:
        bases = {row.name: (row, boxes[row.name][1]) for row in PLATFORMS}
        client = await gateway(site_config(tmp_path, bases, cdn_url))
        fake.hits.clear()  # it keeps the last 1,000: one run's 700 fit
        if down is not None:
            boxes[down][0].faults.down = True
            boxes[down][0].faults.latency = DOWN_LATENCY
        recover_at = int(len(run.stream.rounds) * DOWN_WHILE)
        for n, requests in enumerate(run.stream.rounds):
            if down is not None and n == recover_at:
                boxes[down][0].faults.down = False
                boxes[down][0].faults.latency = 0.0
                run.recovered_at = time.time()
            await post_round(client, requests, run.posted)
        hits_sent = sum(1 for s in run.stream.events if s.channel in HIT_VENDORS)
        assert len(fake.hits) == hits_sent, "every hit is forwarded upstream"
        await wait_all_delivered(client, boxes, run.stream)
        await client.close()
        for row in PLATFORMS:
            sandbox = boxes[row.name][0]
            assert_received_exactly(row, sandbox, run.stream)
            run.p95[row.name] = p95(delays(row, sandbox, run.posted))
            run.received[row.name] = list(sandbox.recorder.accepted)
    return run


# --- the tests --------------------------------------------------------------------------------


def test_the_table_has_one_row_per_registered_destination() -> None:
    names = [row.name for row in PLATFORMS]
    assert len(names) == len(set(names))
    assert set(names) == set(DESTINATIONS), "add the new platform's row to PLATFORMS"
    owners = [k for row in PLATFORMS for k in row.click_ids]
    assert len(owners) == len(set(owners)), "a click id belongs to one platform"
    stream = build_stream()
    for row in PLATFORMS:
        routed = {s.name for s in stream.events if row.routes(s)}
        assert routed <= row.names.keys(), (row.name, routed - row.names.keys())
        assert row.hits_from <= set(HIT_VENDORS), (row.name, row.hits_from)
        assert row.click_ids <= CLICK_IDS.keys(), (row.name, row.click_ids)
        if row.name in COUNTS_BOTH_COPIES:
            assert not row.hits_from, f"{row.name} would count a mirrored hit twice"


def test_the_stream_is_2000_mixed_events_with_unique_keys() -> None:
    stream = build_stream()
    events = stream.events
    assert len(events) == 2000
    assert len({s.key for s in events}) == 2000
    channels = {s.channel for s in events}
    assert channels == {BACKEND, LOADER, *HIT_VENDORS}
    assert {s.name for s in events if s.channel == BACKEND} == {"Purchase", "Lead", "AddToCart"}
    assert max(len(req.sent) for r in stream.rounds for req in r) <= 100, "bounded chunks"


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("down", ["tiktok"])
async def test_mixed_stream_with_one_platform_down_for_the_first_half(
    tmp_path: Path, gateway: Any, cdn: tuple[FakeCdn, str], down: str
) -> None:
    baseline = await run_stream(tmp_path / "baseline", gateway, cdn, None)
    outage = await run_stream(tmp_path / "outage", gateway, cdn, down)
    events = outage.stream.events

    # Proxied hits reach their own platform(s) only, under the hit's event id.
    for vendor in HIT_VENDORS:
        keys = {s.key for s in events if s.channel == vendor}
        for row in PLATFORMS:
            got = {row.received(e)[1] for e in outage.received[row.name]} & keys
            if vendor in row.hits_from:
                routed = {s.key for s in events if s.channel == vendor and row.routes(s)}
                assert got == routed, f"{len(routed - got)} {vendor} hits missing at {row.name}"
            else:
                assert not got, f"{len(got)} {vendor} hits leaked to {row.name}"

    # What a hit carried (digest, click id, vendor cookie) reaches its own platform, no other.
    for row in PLATFORMS:
        seen = tokens(outage.received[row.name])
        own = {m for s in events if s.channel in row.hits_from and row.routes(s) for m in s.marks}
        assert own <= seen, f"{row.name} lacks its own hits' values: {sorted(own - seen)[:3]}"
        others = set(HIT_VENDORS) - row.hits_from
        foreign = {m for s in events if s.channel in others for m in s.marks}
        leaked = sorted(seen & foreign)
        assert not leaked, f"{len(leaked)} values of others' hits at {row.name}: {leaked[:3]}"

    # Each platform's click id, given with every backend event, reaches that platform, no other.
    backend = [s for s in events if s.channel == BACKEND]
    numbers = [int(s.key.removeprefix("be-")) for s in backend]
    for row in PLATFORMS:
        seen = tokens(outage.received[row.name])
        routed = [n for n, s in zip(numbers, backend, strict=True) if row.routes(s)]
        missing = sorted(click_id_values(row.click_ids, routed) - seen)
        assert not missing, (
            f"{len(missing)} of its own click ids missing at {row.name}: {missing[:3]}"
        )
        foreign = click_id_values(CLICK_IDS.keys() - row.click_ids, numbers)
        leaked = sorted(seen & foreign)
        assert not leaked, f"{len(leaked)} other platforms' click ids at {row.name}: {leaked[:3]}"

    # The down platform got nothing while down and everything soon after recovery.
    down_row = next(r for r in PLATFORMS if r.name == down)
    arrived = dict(arrivals_of(outage, down))
    routed_before = [
        s.key for s in events if down_row.routes(s) and outage.posted[s.key] < outage.recovered_at
    ]
    assert len(routed_before) >= len(down_row.expected(events)) // 3, "the outage held back events"
    assert min(arrived.values()) >= outage.recovered_at
    catch_up = max(arrived[k] for k in routed_before) - outage.recovered_at
    assert catch_up <= CATCH_UP_SECONDS, f"{down} took {catch_up:.1f} s to catch up"

    # The healthy platforms were not held up by the down one.
    for row in PLATFORMS:
        if row.name == down:
            continue
        base, now = baseline.p95[row.name], outage.p95[row.name]
        assert max(now, DELAY_FLOOR) <= 2 * max(base, DELAY_FLOOR), (
            f"{row.name}: p95 delay {now:.2f} s with {down} down vs {base:.2f} s without"
        )


def arrivals_of(run: Run, name: str) -> list[tuple[str, float]]:
    """(dedup key, arrival time) of every event platform `name` accepted in `run`."""
    row = next(r for r in PLATFORMS if r.name == name)
    return [(row.received(e)[1], float(e["_received_at"])) for e in run.received[name]]
