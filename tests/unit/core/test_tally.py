"""core.tally: bounded labels, identifier kinds, latency buckets, ingest and route counters."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.event import STANDARD_EVENTS, Event, Source, User
from gateway.core.tally import (
    CUSTOM,
    IDENTIFIERS,
    LATENCY_BUCKETS,
    IngestTally,
    RouteTally,
    event_label,
    identifiers_of,
    name_counts,
)


def event(name: str = "Purchase", time: int = 1000, **user: object) -> Event:
    return Event(name, "e1", time, Source.WEBSITE, user=User(**user))  # type: ignore[arg-type]


@given(st.text(max_size=40))
def test_every_name_maps_to_a_standard_name_or_custom(name: str) -> None:
    label = event_label(name)
    assert label in STANDARD_EVENTS | {CUSTOM}
    assert (label == name) == (name in STANDARD_EVENTS)


def test_identifier_kinds_come_from_the_closed_set_only() -> None:
    e = event(
        hashed={"meta": {"em": ("a" * 64,), "ph": ("b" * 64,), "x-unknown": ("c",)}},
        click_ids={"gclid": "G1", "made_up_key": "v"},
        ip="203.0.113.7",
        user_agent="UA",
        fbp="fb.1.1.1",
        visitor_id="v1",
    )
    assert identifiers_of(e) == {"em", "ph", "gclid", "ip", "user_agent", "fbp", "visitor_id"}
    assert identifiers_of(e) <= IDENTIFIERS
    both = event(hashed={"meta": {"em": ("a" * 64,)}, "tiktok": {"ph": ("b" * 64,)}})
    assert identifiers_of(both) == {"em", "ph"}
    assert identifiers_of(both, "tiktok") == {"ph"}, "a destination counts its own digests"
    assert identifiers_of(both, "snap") == set()
    assert identifiers_of(event()) == set()


def test_route_tally_counts_delivered_retried_dead_and_latency() -> None:
    tally = RouteTally()
    tally.delivered_event(event("Purchase", 1000, ip="1.2.3.4"), now=1000.5)  # 0.5 s
    tally.delivered_event(event("MyThing", 1000), now=1015.0)  # exactly on the 15 s bound
    tally.delivered_event(event("Lead", 1000), now=999.0)  # a clock behind: counted as 0 s
    tally.delivered_event(event("Lead", 1000), now=1000 + 30 * 86400.0)  # above every bound
    tally.retried_rows(["Purchase", "Purchase", "Weird"])
    tally.dead_rows(["Purchase", "Other"], "invalid_field")
    assert tally.delivered == {"Purchase": 1, CUSTOM: 1, "Lead": 2}
    assert tally.retried == {"Purchase": 2, CUSTOM: 1}
    assert tally.dead == {("Purchase", "invalid_field"): 1, (CUSTOM, "invalid_field"): 1}
    assert tally.identifiers == {("Purchase", "ip"): 1}
    buckets = dict(tally.cumulative_buckets())
    assert buckets[1.0] == 2  # 0.5 s and 0 s
    assert buckets[5.0] == 2
    assert buckets[15.0] == 3  # le is inclusive
    assert buckets[LATENCY_BUCKETS[-1]] == 3
    assert buckets[float("inf")] == 4
    assert tally.latency_sum == 0.5 + 15.0 + 0.0 + 30 * 86400.0


def test_ingest_tally_received_is_accepted_plus_rejected() -> None:
    tally = IngestTally()
    tally.accepted("shop", "backend", {"Purchase": 2, "x": 1})
    tally.refused("shop", "backend", "invalid", 2)
    tally.refused("shop", "backend", "rate_limited", 0)  # nothing refused: no series
    tally.accepted_one("shop", "hit:meta", "Lead")
    assert tally.offered == {
        ("shop", "backend", "Purchase"): 2,
        ("shop", "backend", CUSTOM): 1,
        ("shop", "hit:meta", "Lead"): 1,
    }
    assert tally.rejected == {("shop", "backend", "invalid"): 2}
    assert tally.received() == {("shop", "backend"): 5, ("shop", "hit:meta"): 1}


@given(st.lists(st.sampled_from(["Purchase", "Lead", "x", "y"]), max_size=30))
def test_name_counts_small_and_large(names: list[str]) -> None:
    counts = name_counts(names, str)
    assert dict(counts) == {n: names.count(n) for n in set(names)}


def test_appended_splits_queued_and_deduplicated_by_route() -> None:
    tally = IngestTally()
    tally.appended("Purchase", ("shop:meta", "shop:tiktok"))
    tally.appended("Purchase", ("shop:meta", "shop:tiktok"), ("shop:meta",))
    tally.appended("Newsletter", ("shop:meta",), ("shop:meta",))
    assert tally.queued == {("shop:meta", "Purchase"): 1, ("shop:tiktok", "Purchase"): 2}
    assert tally.deduplicated == {("shop:meta", "Purchase"): 1, ("shop:meta", CUSTOM): 1}


def reference_identifiers_of(e: Event, rules: str | None = None) -> set[str]:
    """identifiers_of as it was before its set operations moved to C (the differential)."""
    user = e.user
    kinds: set[str] = set()
    hashed = user.hashed if rules is None else {rules: user.hashed.get(rules, {})}
    for keys in hashed.values():
        kinds.update(k for k in keys if k in IDENTIFIERS)
    kinds.update(k for k in user.click_ids if k in IDENTIFIERS)
    for kind, value in (
        ("ip", user.ip),
        ("user_agent", user.user_agent),
        ("fbc", user.fbc),
        ("fbp", user.fbp),
        ("visitor_id", user.visitor_id),
    ):
        if value:
            kinds.add(kind)
    return kinds


KEYS = st.sampled_from([*sorted(IDENTIFIERS), "x-unknown", "made_up", ""])
RULES = st.sampled_from(["meta", "tiktok", "google", "snap"])


@given(
    hashed=st.dictionaries(RULES, st.dictionaries(KEYS, st.just(("a" * 64,)), max_size=5)),
    click_ids=st.dictionaries(KEYS, st.text(max_size=3), max_size=4),
    browser=st.fixed_dictionaries(
        {k: st.sampled_from([None, "", "v"]) for k in ("ip", "user_agent", "fbc", "fbp")}
    ),
    rules=st.none() | RULES,
)
def test_identifier_kinds_equal_the_reference(
    hashed: dict[str, dict[str, tuple[str, ...]]],
    click_ids: dict[str, str],
    browser: dict[str, str | None],
    rules: str | None,
) -> None:
    e = event(hashed=hashed, click_ids=click_ids, **browser)
    assert identifiers_of(e, rules) == reference_identifiers_of(e, rules)
