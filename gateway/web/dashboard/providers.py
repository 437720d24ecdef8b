"""Where the dashboard reads its figures: the live sources of a running gateway and the seams
for the parts built elsewhere (rollups over time, the conversion gap, recent events).

Each seam is an async callable with plain value types in and out, defined here so the pages do
not depend on how another module stores or computes them; gateway/app.py passes an adapter in
`Providers` (None: the page says the feature is not available in this build). Tests use fakes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.core.figures import Figures
from gateway.core.tally import IngestTally
from gateway.store.base import DeadLetterStore, Store
from gateway.web.admin_dead import Pausable
from gateway.web.collectvalues import CollectStats
from gateway.web.metrics import RouteView


# --- stats over time (issue #12 item 2: per-minute rollups) ---
@dataclass(frozen=True, slots=True)
class SeriesQuery:
    """One route's (or every route's, `route` None) figures per `step` seconds."""

    route: str | None
    since: float
    until: float
    step: float


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """Counts in [start, start + step)."""

    start: float
    delivered: int = 0
    retried: int = 0
    """Failed delivery attempts that were scheduled again."""
    dead: int = 0


StatsProvider = Callable[[SeriesQuery], Awaitable[Sequence[SeriesPoint]]]
"""Delivery counts over time, from the store's rollups (they survive restarts): one point per
step from `since` (points without traffic may be left out or zero)."""


WindowProvider = Callable[[float, float], Awaitable[Figures]]
"""(since, until) → every rollup key's sum over the minutes of that window: the store's rows
plus what the next flush will add (gateway/web/rollups.py `Flusher.window`), so the figures
survive restarts and are current to the last request. Without it (rollups off) the pages read
the live counters since start."""


# --- conversion gap (issue #12 item 4) ---
@dataclass(frozen=True, slots=True)
class MissingOrder:
    """An order the backend reported that a destination has not (yet) accepted."""

    order_id: str
    event_id: str
    reason: str
    """consent, dead_letter, routing, queued, …"""
    detail: str = ""
    """E.g. the dead reason or the next attempt; no PII."""


@dataclass(frozen=True, slots=True)
class GapLine:
    """One destination's side of the gap."""

    destination: str
    reported: int
    delivered: int
    missing: tuple[MissingOrder, ...] = ()


@dataclass(frozen=True, slots=True)
class GapReport:
    site: str
    since: float
    until: float
    lines: tuple[GapLine, ...]


GapProvider = Callable[[str, float, float], Awaitable[GapReport]]
"""(site, since, until) → the orders the site's backend reported vs those each destination
delivered."""


# --- recent events (issue #12 item 7) ---
@dataclass(frozen=True, slots=True)
class SentCopy:
    """What one destination was sent for an event (hashed identifiers, no secrets)."""

    destination: str
    status: int | None
    payload: Any


@dataclass(frozen=True, slots=True)
class RecentEvent:
    """One event as received (after hashing) and as sent to each destination."""

    received_at: float
    site: str
    event_name: str
    event_id: str
    source: str
    received: Any
    sent: tuple[SentCopy, ...] = ()


EventsProvider = Callable[[str | None, str | None, int], Awaitable[Sequence[RecentEvent]]]
"""(site or None for all, destination or None for all, limit) → the last events, newest first."""


@dataclass(frozen=True, slots=True)
class Providers:
    """The optional seams; gateway/app.py fills those this build has."""

    stats: StatsProvider | None = None
    gap: GapProvider | None = None
    events: EventsProvider | None = None
    window: WindowProvider | None = None


# --- live sources (exist today) ---
class DashboardStore(Store, DeadLetterStore, Protocol):
    """The store operations the dashboard reads and the dead-letter actions call."""


@dataclass(frozen=True, slots=True)
class Live:
    """What the pages read of the running gateway now (wired by gateway/app.py)."""

    store: DashboardStore
    routes: Callable[[], Mapping[str, RouteView]]
    """Route → its worker's tally and health (the same view /metrics reads)."""
    workers: Mapping[str, Pausable]
    """Route → its worker: resume acts on it, as POST /v1/admin/resume does."""
    ingest: IngestTally
    consent_denied: Mapping[str, int]
    routed_away: Mapping[str, int]
    clock: Callable[[], float]
    browser: Callable[[], CollectStats | None] = lambda: None
    backlog_limit: int = 10_000
