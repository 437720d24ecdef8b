"""Per-minute stats rollups: the live counters' deltas folded into minute buckets.

Pure: no clock, no I/O. The flusher (gateway/web/rollups.py) hands `Rollup.add` a snapshot of
every counter (`snapshot`, the same families `/metrics` exports) and the time it was taken;
`Rollup` keeps the counts each key had at the previous snapshot and assigns the difference to
the minute in which that interval began, so a flush just after a minute boundary books the
minute that ended. Rows the store has not taken yet stay pending (`rows` / `written`), keyed by
minute, so a failed write loses nothing and books nothing twice.

A row's key is (site, destination, event, metric, detail); the empty string stands for "not
applicable". The metrics (a closed set, `METRICS`) and what their columns hold:

============== =========== ======= =========================================================
metric         destination event   detail
============== =========== ======= =========================================================
received       ""          ""      source (``backend``, ``loader``, ``hit:<vendor>``)
accepted       ""          label   source
rejected       ""          ""      reason (``invalid``, ``rate_limited``)
queued         yes         label   ""
deduplicated   yes         label   ""
consent_dropped yes        ""      ""
routed_away    yes         ""      ""
delivered      yes         label   ""
retried        yes         label   ""
dead           yes         label   dead reason
identifier     yes         label   identifier kind
latency        yes         ""      bucket upper bound (``LATENCY_BUCKETS`` as text, ``+Inf``)
latency_ms_sum yes         ""      ""
consent_tier   ""          ""      tier of a loader hit (``none``, ``analytics``, ``full``)
consent_reason ""          ""      a reason the tier was decided (``gpc``, ``tcf:purpose1_denied``…)
dedup_pair     yes         ""      source pair of a duplicate (``api+loader``, ``api+api``…)
============== =========== ======= =========================================================

Every `detail` is from a closed set: sources, reasons and kinds are the gateway's own
vocabulary; consent reasons are core/consent.py's codes (a TCF vendor code names only a vendor
of the site's ``tcf_vendor_ids``); a source pair joins two channels (``api``, ``loader``,
``pixel``, ``unknown``). ``consent_tier`` / ``consent_reason`` count loader hits (one hit has
one tier and one or more reasons). ``dedup_pair`` is not a live counter: the store keeps
per-route pair counters (`Store.dedup_counts`, shared by every process on it) and a copy of
them as last booked; a booking (`StatsStore.book_pairs`) adds their difference (`pair_rows`)
as rows and takes the new copy in one transaction, so however many processes flush, each
duplicate is booked once.

`latency` rows count acceptances per bucket (not cumulative), so any range of minutes sums to
a histogram from which `quantile` estimates p50 / p95.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from gateway.core.tally import LATENCY_BUCKETS, IngestTally, RouteTally

MINUTE: Final = 60

RECEIVED: Final = "received"
ACCEPTED: Final = "accepted"
REJECTED: Final = "rejected"
QUEUED: Final = "queued"
DEDUPLICATED: Final = "deduplicated"
CONSENT_DROPPED: Final = "consent_dropped"
ROUTED_AWAY: Final = "routed_away"
DELIVERED: Final = "delivered"
RETRIED: Final = "retried"
DEAD: Final = "dead"
IDENTIFIER: Final = "identifier"
LATENCY: Final = "latency"
LATENCY_MS_SUM: Final = "latency_ms_sum"
CONSENT_TIER: Final = "consent_tier"
CONSENT_REASON: Final = "consent_reason"
DEDUP_PAIR: Final = "dedup_pair"

METRICS: Final = (
    RECEIVED,
    ACCEPTED,
    REJECTED,
    QUEUED,
    DEDUPLICATED,
    CONSENT_DROPPED,
    ROUTED_AWAY,
    DELIVERED,
    RETRIED,
    DEAD,
    IDENTIFIER,
    LATENCY,
    LATENCY_MS_SUM,
    CONSENT_TIER,
    CONSENT_REASON,
    DEDUP_PAIR,
)

BOUNDS: Final = (*(repr(b) for b in LATENCY_BUCKETS), "+Inf")
"""The `detail` of each latency bucket row, in bucket order."""

MAX_PENDING_MINUTES: Final = 180
"""Minutes of rows kept while the store refuses them; older ones are dropped (and counted)."""

Key = tuple[str, str, str, str, str]
"""(site, destination, event, metric, detail)."""


class StatRow(NamedTuple):
    """One counter's increase over one minute (or, read back, over one step of a range)."""

    minute: int
    """Unix seconds at the start of the minute (of the step, in a range read)."""
    site: str
    destination: str
    event: str
    metric: str
    detail: str
    value: int


def minute_of(t: float) -> int:
    """Return the start (Unix seconds) of the minute holding `t`."""
    return int(t // MINUTE) * MINUTE


def _route(route: str) -> tuple[str, str]:
    site, _, destination = route.partition(":")
    return site, destination


def snapshot(
    ingest: IngestTally,
    routes: Mapping[str, RouteTally],
    consent_denied: Mapping[str, int],
    routed_away: Mapping[str, int],
    *,
    tiers: Mapping[tuple[str, str], int] | None = None,
    reasons: Mapping[tuple[str, str], int] | None = None,
) -> dict[Key, int]:
    """Return every counter's value now, by rollup key (see the module docstring).

    `tiers` / `reasons`: (site, tier or reason) → loader hits (the collect endpoint's counts).
    """
    out: dict[Key, int] = {}

    def put(key: Key, n: int) -> None:
        if n:
            out[key] = out.get(key, 0) + n

    for (site, source, label), n in ingest.offered.items():
        put((site, "", label, ACCEPTED, source), n)
        put((site, "", "", RECEIVED, source), n)
    for (site, source, reason), n in ingest.rejected.items():
        put((site, "", "", REJECTED, reason), n)
        put((site, "", "", RECEIVED, source), n)
    for metric, table in ((QUEUED, ingest.queued), (DEDUPLICATED, ingest.deduplicated)):
        for (route, label), n in table.items():
            put((*_route(route), label, metric, ""), n)
    for metric, counts in ((CONSENT_DROPPED, consent_denied), (ROUTED_AWAY, routed_away)):
        for route, n in counts.items():
            put((*_route(route), "", metric, ""), n)
    for route, tally in routes.items():
        site, destination = _route(route)
        for label, n in tally.delivered.items():
            put((site, destination, label, DELIVERED, ""), n)
        for label, n in tally.retried.items():
            put((site, destination, label, RETRIED, ""), n)
        for (label, reason), n in tally.dead.items():
            put((site, destination, label, DEAD, reason), n)
        for (label, kind), n in tally.identifiers.items():
            put((site, destination, label, IDENTIFIER, kind), n)
        for bound, n in zip(BOUNDS, tally.latency_buckets, strict=True):
            put((site, destination, "", LATENCY, bound), n)
        put((site, destination, "", LATENCY_MS_SUM, ""), round(tally.latency_sum * 1000))
    for metric, hits in ((CONSENT_TIER, tiers or {}), (CONSENT_REASON, reasons or {})):
        for (site, detail), n in hits.items():
            put((site, "", "", metric, detail), n)
    return out


def pair_counts(pairs: Mapping[tuple[str, str], int]) -> dict[Key, int]:
    """Return the store's duplicate counters ((route, source pair) → duplicates since the store
    was created) by rollup key (`DEDUP_PAIR`)."""
    out: dict[Key, int] = {}
    for (route, pair), n in pairs.items():
        if n:
            key = (*_route(route), "", DEDUP_PAIR, pair)
            out[key] = out.get(key, 0) + n
    return out


def pair_rows(
    counts: Mapping[tuple[str, str], int], booked: Mapping[tuple[str, str], int], minute: int
) -> list[StatRow]:
    """Return the `DEDUP_PAIR` rows of `minute` booking what the store's pair counters
    ((route, source pair) → duplicates) gained since the copy `booked` was taken (a counter
    below its copy was reset: all of it is new), by key."""
    out: dict[Key, int] = {}
    for (route, pair), n in counts.items():
        before = booked.get((route, pair), 0)
        delta = n - before if n >= before else n
        if delta > 0:
            key = (*_route(route), "", DEDUP_PAIR, pair)
            out[key] = out.get(key, 0) + delta
    return [StatRow(minute, *key, n) for key, n in sorted(out.items())]


@dataclass
class Rollup:
    """Counter deltas by minute, waiting for the store (see the module docstring)."""

    since: float
    """When the interval the next `add` closes began (the previous snapshot's time)."""
    last: dict[Key, int] = field(default_factory=dict)
    """Each key's count at the previous snapshot (counters start at zero with the process)."""
    pending: dict[tuple[int, Key], int] = field(default_factory=dict)
    dropped: int = 0
    """Rows dropped because the store refused them for over MAX_PENDING_MINUTES minutes."""

    def add(self, counts: Mapping[Key, int], now: float) -> None:
        """Book the increase of every key since the previous snapshot to the minute the
        interval began in; `counts` becomes the new reference."""
        pending = self.pending
        for slot, delta in self._deltas(counts):
            pending[slot] = pending.get(slot, 0) + delta
        self.last = dict(counts)
        self.since = max(self.since, now)
        self._trim()

    def _deltas(self, counts: Mapping[Key, int]) -> Iterator[tuple[tuple[int, Key], int]]:
        """Yield ((minute, key), increase) of every key that grew since the previous snapshot
        (a counter that went down was reset: all of it is new)."""
        minute = minute_of(self.since)
        last = self.last
        for key, n in counts.items():
            before = last.get(key, 0)
            delta = n - before if n >= before else n
            if delta:
                yield (minute, key), delta

    def rows(self) -> list[StatRow]:
        """Return the pending rows, oldest minute first."""
        return [StatRow(m, *key, n) for (m, key), n in sorted(self.pending.items())]

    def preview(self, counts: Mapping[Key, int]) -> list[StatRow]:
        """Return what the store lacks now: the pending rows plus what `add(counts, …)` would
        book, without booking it (a read of the store plus these is what a flush now would
        leave in the store)."""
        out = dict(self.pending)
        for slot, delta in self._deltas(counts):
            out[slot] = out.get(slot, 0) + delta
        return [StatRow(m, *key, n) for (m, key), n in sorted(out.items())]

    def written(self, rows: Iterable[StatRow]) -> None:
        """Forget rows the store took (values added meanwhile stay pending)."""
        pending = self.pending
        for row in rows:
            slot = (row.minute, (row.site, row.destination, row.event, row.metric, row.detail))
            left = pending.get(slot, 0) - row.value
            if left:
                pending[slot] = left
            else:
                pending.pop(slot, None)

    def _trim(self) -> None:
        minutes = sorted({m for m, _ in self.pending})
        if len(minutes) <= MAX_PENDING_MINUTES:
            return
        oldest = set(minutes[: len(minutes) - MAX_PENDING_MINUTES])
        for slot in [s for s in self.pending if s[0] in oldest]:
            del self.pending[slot]
            self.dropped += 1


# -- reading a range back ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Range:
    """A read of whole steps: [start, end) in Unix seconds, `step` a multiple of a minute."""

    start: int
    end: int
    step: int

    @property
    def times(self) -> list[int]:
        return list(range(self.start, self.end, self.step))


def align(start: float, end: float, step: int) -> Range:
    """Return the steps covering [start, end]: start rounded down and end up to the step grid
    (Unix time), at least one step."""
    first = int(start // step) * step
    last = math.ceil(end / step) * step
    return Range(first, max(last, first + step), step)


@dataclass(frozen=True, slots=True)
class Series:
    """One key's values per step of a range (0 where nothing happened)."""

    site: str
    destination: str
    event: str
    metric: str
    detail: str
    values: list[int]


@dataclass(frozen=True, slots=True)
class LatencySeries:
    """Delivery latency of one route per step: acceptances and estimated quantiles (seconds;
    None for a step without acceptances)."""

    site: str
    destination: str
    count: list[int]
    p50: list[float | None]
    p95: list[float | None]


def series(rows: Iterable[StatRow], span: Range) -> list[Series]:
    """Return one Series per key of `rows` (read with `span`'s step), sorted by key."""
    slots = len(span.times)
    out: dict[Key, list[int]] = {}
    for row in rows:
        index = (row.minute - span.start) // span.step
        if not 0 <= index < slots:
            continue
        key = (row.site, row.destination, row.event, row.metric, row.detail)
        values = out.get(key)
        if values is None:
            values = out[key] = [0] * slots
        values[index] += row.value
    return [Series(*key, values) for key, values in sorted(out.items())]


def latency(found: Sequence[Series]) -> list[LatencySeries]:
    """Return p50 / p95 per step for every route with latency rows in `found`."""
    buckets: dict[tuple[str, str], dict[str, list[int]]] = {}
    for s in found:
        if s.metric == LATENCY:
            buckets.setdefault((s.site, s.destination), {})[s.detail] = s.values
    out: list[LatencySeries] = []
    for (site, destination), by_bound in sorted(buckets.items()):
        slots = len(next(iter(by_bound.values())))
        counts: list[int] = []
        p50: list[float | None] = []
        p95: list[float | None] = []
        for i in range(slots):
            hist = [by_bound.get(b, [0] * slots)[i] for b in BOUNDS]
            counts.append(sum(hist))
            p50.append(quantile(hist, 0.5))
            p95.append(quantile(hist, 0.95))
        out.append(LatencySeries(site, destination, counts, p50, p95))
    return out


def quantile(hist: Sequence[int], q: float) -> float | None:
    """Estimate the `q` quantile (seconds) of per-bucket counts over `LATENCY_BUCKETS`.

    As Prometheus' histogram_quantile: linear inside the bucket holding the rank, from the
    previous bound (0 for the first); a rank in the last (+Inf) bucket answers the highest
    finite bound. None when the histogram is empty.
    """
    total = sum(hist)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for bound, n in zip(LATENCY_BUCKETS, hist, strict=False):
        if n and seen + n >= rank:
            return lower + (bound - lower) * (rank - seen) / n
        seen += n
        lower = bound
    return LATENCY_BUCKETS[-1]
