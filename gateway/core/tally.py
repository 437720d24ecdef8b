"""Plain counters behind `/metrics`: bounded labels, no clock, no I/O.

The request and delivery paths only add to dicts of ints here; gateway/web/metrics.py turns
them into Prometheus families at scrape time. Every label value that reaches these counters is
from a closed set: an event name is kept only when it is a standard name (`STANDARD_EVENTS`),
every other name counts as ``custom``; identifier kinds are the gateway's own vocabulary.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

from gateway.core.event import CLICK_ID_KEYS, PII_FIELDS, STANDARD_EVENTS, Event

T = TypeVar("T")

CUSTOM: Final = "custom"
"""The label every non-standard event name collapses to."""

LATENCY_BUCKETS: Final = (
    1.0,
    5.0,
    15.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    6 * 3600.0,
    24 * 3600.0,
    7 * 86400.0,
)
"""Upper bounds (seconds) of the delivery latency histogram: event time → platform acceptance.

An event's time is when it happened (a backend may report an order hours later), so the
buckets reach a week, the platforms' usual window."""

IDENTIFIERS: Final = frozenset(
    {*PII_FIELDS.values(), *CLICK_ID_KEYS, "ip", "user_agent", "fbc", "fbp", "visitor_id"}
)
"""Identifier kinds counted for coverage (hashed keys, click ids, browser ids)."""


def event_label(name: str) -> str:
    """Return the metric label of an event name: standard names as they are, others `custom`."""
    return name if name in STANDARD_EVENTS else CUSTOM


def identifiers_of(event: Event, rules: str | None = None) -> set[str]:
    """Return the identifier kinds an event carries (only kinds from `IDENTIFIERS`); hashed
    ones from the rule set `rules` only (a destination's own), when given.

    Called once per delivered event and route, so the set operations run in C (frozenset
    intersections over the dicts' keys) rather than a Python loop per key.
    """
    user = event.user
    if rules is None:
        kinds: set[str] = set()
        for keys in user.hashed.values():
            kinds.update(IDENTIFIERS.intersection(keys))
    else:
        own = user.hashed.get(rules)
        kinds = set(IDENTIFIERS.intersection(own)) if own else set()
    if user.click_ids:
        kinds.update(IDENTIFIERS.intersection(user.click_ids))
    if user.ip:
        kinds.add("ip")
    if user.user_agent:
        kinds.add("user_agent")
    if user.fbc:
        kinds.add("fbc")
    if user.fbp:
        kinds.add("fbp")
    if user.visitor_id:
        kinds.add("visitor_id")
    return kinds


def name_counts(items: Sequence[T], name_of: Callable[[T], str]) -> Mapping[str, int]:
    """Return event name → how many of `items` carry it (`name_of` reads an item's name).

    Counter's C loop pays off past a few items; below that its set-up costs more than a loop.
    """
    if len(items) > 8:
        return Counter(map(name_of, items))
    names: dict[str, int] = {}
    for item in items:
        name = name_of(item)
        names[name] = names.get(name, 0) + 1
    return names


def bump(counts: dict[str, int], key: str, n: int = 1) -> None:
    """Add `n` to `counts[key]`."""
    counts[key] = counts.get(key, 0) + n


@dataclass
class RouteTally:
    """What one route's worker did, by event label (since start)."""

    rules: str | None = None
    """The destination's hashing rule set: identifier coverage counts its digests only."""
    delivered: dict[str, int] = field(default_factory=dict)
    retried: dict[str, int] = field(default_factory=dict)
    dead: dict[tuple[str, str], int] = field(default_factory=dict)
    """(event label, dead reason) → rows."""
    identifiers: dict[tuple[str, str], int] = field(default_factory=dict)
    """(event label, identifier kind) → delivered events carrying it."""
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    """Per-bucket (not cumulative) counts; the last one is above every bound."""
    latency_sum: float = 0.0

    def delivered_event(self, event: Event, now: float) -> None:
        """Count an event the platform accepted at `now`: label, identifiers, latency."""
        label = event_label(event.event)
        bump(self.delivered, label)
        identifiers = self.identifiers
        for kind in identifiers_of(event, self.rules):
            key = (label, kind)
            identifiers[key] = identifiers.get(key, 0) + 1
        latency = max(0.0, now - event.time)
        self.latency_buckets[bisect_left(LATENCY_BUCKETS, latency)] += 1
        self.latency_sum += latency

    def retried_rows(self, names: Iterable[str]) -> None:
        """Count rows scheduled again (one attempt each)."""
        for name in names:
            bump(self.retried, event_label(name))

    def dead_rows(self, names: Iterable[str], reason: str) -> None:
        """Count rows given up with `reason` (a DeadReason value)."""
        dead = self.dead
        for name in names:
            key = (event_label(name), reason)
            dead[key] = dead.get(key, 0) + 1

    def cumulative_buckets(self) -> list[tuple[float, int]]:
        """Return the latency histogram as (upper bound, cumulative count), +Inf last."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), self.latency_buckets, strict=True):
            total += n
            out.append((bound, total))
        return out


@dataclass
class IngestTally:
    """What the ingest endpoints took in and made durable (since start).

    `offered`: (site, source, event label) → events that passed validation; `rejected`:
    (site, source, reason) → events refused; `queued` / `deduplicated`: (route, event label) →
    delivery rows created / routes skipped as duplicates.
    """

    offered: dict[tuple[str, str, str], int] = field(default_factory=dict)
    rejected: dict[tuple[str, str, str], int] = field(default_factory=dict)
    queued: dict[tuple[str, str], int] = field(default_factory=dict)
    deduplicated: dict[tuple[str, str], int] = field(default_factory=dict)

    def accepted(self, site: str, source: str, names: Mapping[str, int]) -> None:
        """Count events of `source` that passed validation (`names`: name → events)."""
        offered = self.offered
        for name, n in names.items():
            key = (site, source, name if name in STANDARD_EVENTS else CUSTOM)
            offered[key] = offered.get(key, 0) + n

    def accepted_one(self, site: str, source: str, name: str) -> None:
        """Count one event of `source` that passed validation."""
        key = (site, source, name if name in STANDARD_EVENTS else CUSTOM)
        self.offered[key] = self.offered.get(key, 0) + 1

    def queued_names(self, routes: Iterable[str], names: Mapping[str, int]) -> None:
        """Count delivery rows created on each of `routes` for `names` (name → events)."""
        queued = self.queued
        for name, n in names.items():
            label = name if name in STANDARD_EVENTS else CUSTOM
            for route in routes:
                key = (route, label)
                queued[key] = queued.get(key, 0) + n

    def refused(self, site: str, source: str, reason: str, n: int = 1) -> None:
        """Count `n` events of `source` refused for `reason` (a closed set, see README)."""
        if n > 0:
            key = (site, source, reason)
            self.rejected[key] = self.rejected.get(key, 0) + n

    def appended(self, name: str, routes: Iterable[str], duplicates: Collection[str] = ()) -> None:
        """Count one appended event: a row per route, except the routes it was a duplicate on."""
        label = name if name in STANDARD_EVENTS else CUSTOM
        for route in routes:
            table = self.deduplicated if duplicates and route in duplicates else self.queued
            key = (route, label)
            table[key] = table.get(key, 0) + 1

    def received(self) -> Mapping[tuple[str, str], int]:
        """Return (site, source) → events received (accepted + rejected)."""
        out: dict[tuple[str, str], int] = {}
        for (site, source, _), n in self.offered.items():
            out[(site, source)] = out.get((site, source), 0) + n
        for (site, source, _), n in self.rejected.items():
            out[(site, source)] = out.get((site, source), 0) + n
        return out
