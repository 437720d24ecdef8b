"""The Store protocol, delivery row states and the value types that cross it.

Outbox state machine (one row per accepted event and destination route)::

    pending ──lease──► leased ──done──► done (compacted later)
       ▲                 │  └──dead───► dead (reason kept)
       │                 └──retry─────► retry (not_before = t) ──lease when t has come──► leased
       └──── a leased row whose lease expired is leased again (its worker crashed) ────┘

`append` returns only after the rows are durably committed (the HTTP answer waits for it);
a 2xx therefore means the event survives a `kill -9` the next instant.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple, Protocol

from gateway.core.orders import OrderEntry, OrderRow
from gateway.core.profile import ProfileUpdate, VisitorProfile
from gateway.core.rollup import StatRow


class DeliveryState(StrEnum):
    """Where a delivery row is in its life."""

    PENDING = "pending"
    LEASED = "leased"
    RETRY = "retry"
    DONE = "done"
    DEAD = "dead"


class DeadReason(StrEnum):
    """Why a delivery was given up: a closed set, each with one meaning.

    invalid_field      the platform (or our pre-send check) rejected a field of this event
    too_old            the event left the platform's accepted time window before delivery
    auth               credentials were refused permanently (e.g. wrong pixel id / permission)
    platform_rejected  any other permanent platform answer
    consent_denied     consent withdrawn before delivery
    erased             removed by an erasure request
    internal           a bug in the gateway (the only reason logged at ERROR)
    """

    INVALID_FIELD = "invalid_field"
    TOO_OLD = "too_old"
    AUTH = "auth"
    PLATFORM_REJECTED = "platform_rejected"
    CONSENT_DENIED = "consent_denied"
    ERASED = "erased"
    INTERNAL = "internal"


class NewEvent(NamedTuple):
    """An accepted event to make durable, fanned out to one row per route.

    A NamedTuple, not a dataclass: one is built per accepted event on the request path, and a
    tuple is several times cheaper to build than a frozen dataclass.
    """

    site: str
    event_name: str
    event_id: str
    event_time: float
    record: bytes
    """The event as stored (`gateway.core.record.encode`: compact JSON); never raw PII."""
    routes: tuple[str, ...]
    """Destination routes ("<site>:<destination>") that must each deliver it."""


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What `append` did with one NewEvent."""

    created: int
    """Delivery rows created."""
    deduplicated: int
    """Routes skipped because the same (route, event_name, event_id) was appended within the
    dedup window."""
    duplicates: tuple[str, ...] = field(default=(), compare=False)
    """Which routes were skipped, when only some were (empty when none or all were)."""


class Backlog(NamedTuple):
    """The rows of one route still waiting (pending, leased or retry)."""

    depth: int
    """How many (counted up to the limit asked for)."""
    oldest: float | None
    """When the oldest of the rows counted was appended (None: nothing waits)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A leased delivery row handed to a worker."""

    id: int
    route: str
    event_name: str
    event_id: str
    event_time: float
    record: bytes
    attempts: int
    created_at: float


@dataclass(frozen=True, slots=True)
class DeliveryInfo:
    """A read-only view of one row, for debug pages and dead-letter listings."""

    id: int
    route: str
    event_name: str
    event_id: str
    state: DeliveryState
    attempts: int
    reason: str | None
    updated_at: float


NOT_REPLAYABLE: frozenset[str] = frozenset({DeadReason.CONSENT_DENIED, DeadReason.ERASED})
"""Dead reasons a replay never revives: the visitor withdrew consent or asked for erasure."""


@dataclass(frozen=True, slots=True)
class DeadEvidence:
    """What a dead letter keeps of its fate, stored with it at `mark_dead` time."""

    status: int | None
    """The platform's HTTP status; None when the gateway's own check refused it unsent."""
    answer: str
    """A bounded excerpt of the platform's error for this event (no PII: it only saw hashes)."""
    payload: bytes | None
    """The request body the destination builds for this one event (no tokens: those travel in
    headers or the query string); None if it could not be built."""


@dataclass(frozen=True, slots=True)
class DeadQuery:
    """A page of dead letters: optional filters, then ids above `after`, in id order."""

    route: str | None = None
    reason: str | None = None
    """A DeadReason value."""
    since: float | None = None
    """Only rows dead at or after this time."""
    after: int = 0
    limit: int = 50


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter with what was sent and what the platform answered."""

    info: DeliveryInfo
    event_time: float
    evidence: DeadEvidence | None
    """None for rows given up before the store kept evidence (schema version < 7)."""


@dataclass(frozen=True, slots=True)
class DeadPage:
    """A page of `DeadQuery`; `next_after` is the cursor of the next page (None: last page)."""

    letters: tuple[DeadLetter, ...]
    next_after: int | None


@dataclass(frozen=True, slots=True)
class ReplaySelection:
    """Dead letters of one route to make pending again: these ids, or every one (of `reason`)
    with an id above `after`, at most `limit` of them."""

    route: str
    ids: tuple[int, ...] | None = None
    reason: str | None = None
    after: int = 0
    limit: int = 500


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What one replay call did."""

    replayed: int
    skipped: int
    """Selected ids that are not dead letters of the route, or not replayable (NOT_REPLAYABLE)."""
    last_id: int | None
    """The highest id this call looked at: the `after` of the next page (None: none found)."""
    remaining: int
    """Replayable dead letters of the selection left above `last_id` (0 for an id list)."""


class Store(Protocol):
    """Outbox storage shared by the API (append) and the delivery workers (lease/mark).

    Implementations: `sqlite.SqliteStore` (embedded default); a Redis implementation of the
    same protocol comes for scale-out. Every implementation passes tests/unit/store/contract.py.
    All methods are coroutines and must never block the event loop.
    """

    async def open(self) -> None:
        """Create or migrate the schema and start background machinery."""

    async def close(self) -> None:
        """Flush pending work and release resources."""

    async def ping(self) -> None:
        """Raise if the store cannot durably write right now (readiness)."""

    async def append(self, events: Sequence[NewEvent], now: float) -> list[AppendResult]:
        """Durably add the events' delivery rows; return one result per event, in order."""

    async def lease(
        self, route: str, limit: int, now: float, lease_seconds: float
    ) -> list[Delivery]:
        """Lease up to `limit` due rows of one route, oldest first, until `now + lease_seconds`.

        Due rows are pending ones, retry rows whose time has come, and leased rows whose lease
        expired.
        """

    async def mark_done(self, ids: Sequence[int], now: float) -> None:
        """Mark rows delivered."""

    async def mark_retry(
        self, ids: Sequence[int], at: float, reason: str, now: float, *, count_attempt: bool = True
    ) -> None:
        """Schedule rows again at `at`; `count_attempt=False` for pauses that were no attempt."""

    async def release_waiting(self, route: str, now: float) -> int:
        """Make every retry row of `route` due at `now` (its circuit closed); return how many.

        Attempts are not touched: the rows waited for the route, not for their own backoff.
        """

    async def mark_dead(
        self,
        ids: Sequence[int],
        reason: DeadReason,
        detail: str,
        now: float,
        *,
        evidence: Mapping[int, DeadEvidence] | None = None,
    ) -> None:
        """Give rows up with a reason from the closed set and the platform's message; keep
        each row's `evidence` (by id) for the dead-letter listing."""

    async def counts(self) -> Mapping[tuple[str, DeliveryState], int]:
        """Return row counts by (route, state), compacted done rows included."""

    async def dedup_counts(self) -> Mapping[tuple[str, str], int]:
        """Return duplicates seen by (route, source pair such as "api+loader")."""

    async def recent(self, limit: int, route: str | None = None) -> list[DeliveryInfo]:
        """Return the most recently updated rows, newest first."""

    async def dead_letters(self, route: str, limit: int) -> list[DeliveryInfo]:
        """Return dead rows of a route, newest first."""

    async def backlog(self, routes: Sequence[str], limit: int) -> Mapping[str, Backlog]:
        """Return, per route, the rows still waiting: at most `limit` rows are read per route
        (a scrape's cost stays bounded however deep the outbox is)."""

    async def lift_pause(self, route: str, now: float) -> None:
        """Record that an operator resumed `route` at `now` (one record per route: the latest
        time wins), for every process sharing the store (`resumed_since`)."""

    async def resumed_since(self, routes: Sequence[str], since: float) -> Mapping[str, float]:
        """Return the routes of `routes` whose latest recorded resume (`lift_pause`) is after
        `since`, each with that time; routes never resumed, or not since then, are absent."""

    async def compact(self, now: float, keep_done_seconds: float, dedup_seconds: float) -> int:
        """Delete done rows older than `keep_done_seconds` and dedup keys older than
        `dedup_seconds` (their counts survive in `counts`); return rows deleted. Order ledger
        rows (`OrderStore`) older than the longer of the two go too (not counted), and a
        compacted done row's orders keep their delivery time."""


@dataclass(frozen=True, slots=True)
class ProfileQuery:
    """Find a visitor profile by its id, else by any of its lookup keys ("em:<digest>", …)."""

    visitor_id: str | None = None
    keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Identity:
    """Everything known about the buyer of one event: the visitor it names (if stored) and every
    other visitor one of its (or that visitor's) lookup keys was seen with."""

    named: VisitorProfile | None
    linked: tuple[VisitorProfile, ...] = ()


@dataclass(frozen=True, slots=True)
class EraseResult:
    """What an erasure removed."""

    profiles: int
    deliveries: int


class ProfileStore(Protocol):
    """Visitor profiles: merged on every browser hit, read to enrich backend events."""

    async def has_profiles(self, site: str) -> bool:
        """Return whether the site has any profile at all (lets the API skip lookups cheaply)."""

    async def touch_profile(
        self, site: str, visitor_id: str, update: ProfileUpdate, now: float
    ) -> VisitorProfile:
        """Create or merge the profile atomically (see core.profile.merge); return it."""

    async def touch_and_append(
        self,
        site: str,
        visitor_id: str,
        update: ProfileUpdate,
        now: float,
        events_for: Callable[[VisitorProfile], Sequence[NewEvent]],
    ) -> tuple[VisitorProfile, list[AppendResult]]:
        """`touch_profile`, then `append(events_for(profile), now)`, in one transaction.

        A browser hit's event is enriched from the profile its own hit just updated; doing
        both in one write saves a commit and a round trip per hit. `events_for` must be pure
        (it may run on the store's writer thread) and must not raise.
        """

    async def find_profiles(
        self, site: str, queries: Sequence[ProfileQuery]
    ) -> list[VisitorProfile | None]:
        """Return one profile (or None) per query, in order, in one read."""

    async def find_identities(self, site: str, queries: Sequence[ProfileQuery]) -> list[Identity]:
        """Return one Identity per query, in order, in one read (cross-device enrichment)."""

    async def erase(
        self, site: str, *, visitor_id: str | None, keys: Sequence[str], now: float
    ) -> EraseResult:
        """Delete matching profiles and dead-letter (as erased) undelivered rows carrying them;
        the order ledger rows of those events' orders are deleted too."""

    async def expire_profiles(self, now: float, ttl_seconds: float) -> int:
        """Delete profiles not seen for ttl_seconds; return how many."""


class DeadLetterStore(Protocol):
    """Dead letters for operators: a filtered, paged listing and replay."""

    async def dead_page(self, query: DeadQuery) -> DeadPage:
        """Return one page of dead letters with their evidence, in id order."""

    async def replay(self, selection: ReplaySelection, now: float) -> ReplayResult:
        """Make the selected replayable dead letters pending again (attempts 0, due now) and
        drop their evidence; rows that are not dead (e.g. delivered since) are left alone."""


class OrderStore(Protocol):
    """The order ledger behind the conversion gap (gateway/core/orders.py)."""

    async def append_orders(
        self, events: Sequence[NewEvent], orders: Sequence[OrderEntry], now: float
    ) -> list[AppendResult]:
        """`append` the events and write the orders' ledger entries in the same transaction
        (`events` may be empty: orders consent or routing kept from every route). An entry is
        one order event with its fate on every route of its site (`OrderEntry`: the routes not
        in `denied` / `away` were sent); a backend may store it as one row. A sent route's
        delivery is the event's own, or the one of the copy its dedup key (route, event name,
        event id) names; an entry already written for the same (site, order, event) is kept."""

    async def order_rows(self, site: str, since: float, until: float, limit: int) -> list[OrderRow]:
        """Return one row per order event of the site timed in [since, until) and route of
        its entry, each with its delivery row's state, at most `limit`, ordered by (event
        time, order id, event id, route)."""


@dataclass(frozen=True, slots=True)
class StatsQuery:
    """A range of per-minute stats: minutes in [start, end) summed per `step` seconds (a
    multiple of 60; a row's minute is then its step's start), optionally of one site and one
    destination (site-wide rows, destination "", always match a destination filter)."""

    start: int
    end: int
    step: int = 60
    site: str | None = None
    destination: str | None = None
    metrics: tuple[str, ...] = ()
    """Only these metrics (empty: every one)."""


class StatsStore(Protocol):
    """Per-minute stats rollups (gateway/core/rollup.py), kept `[audit] retention_days`."""

    async def write_stats(self, rows: Sequence[StatRow]) -> None:
        """Add each row's value to its (minute, key) counter, creating it if new."""

    async def read_stats(self, query: StatsQuery) -> list[StatRow]:
        """Return the non-zero sums per step and key of the query's range, by step then key."""

    async def compact_stats(self, before: int) -> int:
        """Delete the rows of minutes before `before`; return how many."""

    async def book_pairs(self, minute: int, stale_before: int) -> list[StatRow]:
        """Book the duplicates counted since the last booking, once whatever the number of
        processes on the store: in ONE transaction, serialised with every other booking, read
        the pair counters (`dedup_counts`) and the copy of them the last booking kept, add
        their increase (`gateway.core.rollup.pair_rows`) to the stats as ``dedup_pair`` rows
        of `minute`, keep the counters as the new copy and `minute` (or the later minute
        already kept) as its time; return the rows added. Without a copy, or with one kept
        before minute `stale_before` (nobody booked for that long, e.g. rollups were off), the
        counters only become the new copy: nothing is booked."""

    async def unbooked_pairs(self, minute: int, stale_before: int) -> list[StatRow]:
        """Return the rows `book_pairs(minute, stale_before)` would add now, booking nothing."""


class GatewayStore(Store, ProfileStore, DeadLetterStore, OrderStore, StatsStore, Protocol):
    """Everything the gateway needs from storage (the SQLite store implements it all)."""
