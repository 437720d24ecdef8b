"""Adapters from the gateway's own data to the dashboard's provider seams (providers.py).

`gap_provider` reads the order ledger (issue #12 item 4, gateway/core/orders.py) the way
`GET /v1/admin/gap` does and hands the dashboard its `GapReport`; `stats_provider` reads the
per-minute rollups (issue #12 item 2, gateway/core/rollup.py) as delivery counts over time;
`events_provider` reads the debug view's rings (issue #12 item 7, gateway/web/debugview.py);
`window_provider` sums the rollups of a window (stored rows plus the unflushed minute) into the
figures the signal, consent and errors pages show (gateway/core/figures.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.core.figures import Figures
from gateway.core.orders import gap_report
from gateway.core.rollup import DEAD, DELIVERED, MINUTE, RETRIED, minute_of
from gateway.store.base import StatsQuery, StatsStore
from gateway.web.admin_gap import MAX_ROWS, OrderRows
from gateway.web.dashboard.providers import (
    EventsProvider,
    GapLine,
    GapProvider,
    GapReport,
    MissingOrder,
    RecentEvent,
    SentCopy,
    SeriesPoint,
    SeriesQuery,
    StatsProvider,
    WindowProvider,
)
from gateway.web.debugview import DebugView
from gateway.web.rollups import Flusher

_NAMED: frozenset[str] = frozenset({"order_id", "event_id", "reason"})


def _detail(missing: Mapping[str, Any]) -> str:
    """The rest of a missing order's entry (dead reason, attempts, next try…), as text."""
    return ", ".join(f"{k}={v}" for k, v in missing.items() if k not in _NAMED and v is not None)


def gap_provider(
    store: OrderRows, sites: Mapping[str, Sequence[str]], max_rows: int = MAX_ROWS
) -> GapProvider:
    """The dashboard's gap seam over the ledger: `sites` maps a site id to its routes."""

    async def provide(site: str, since: float, until: float) -> GapReport:
        rows = await store.order_rows(site, since, until, max_rows)
        report = gap_report(rows, sites.get(site, ()))
        lines = tuple(
            GapLine(
                destination,
                int(line["orders"]),
                int(line["delivered"]),
                tuple(
                    MissingOrder(m["order_id"], m["event_id"], m["reason"], _detail(m))
                    for m in line["missing_orders"]
                ),
            )
            for destination, line in report["destinations"].items()
        )
        return GapReport(site, since, until, lines)

    return provide


def stats_provider(store: StatsStore) -> StatsProvider:
    """The dashboard's over-time seam over the rollups: delivered, retried and dead per step of
    one route (``site:destination``) or of every route."""

    async def provide(query: SeriesQuery) -> list[SeriesPoint]:
        step = max(60, int(query.step) // 60 * 60)
        start = int(query.since) // step * step
        end = math.ceil(query.until / step) * step
        site = destination = None
        if query.route is not None:
            site, _, destination = query.route.partition(":")
        rows = await store.read_stats(
            StatsQuery(start, end, step, site, destination, (DELIVERED, RETRIED, DEAD))
        )
        sums: dict[int, dict[str, int]] = {}
        for row in rows:
            if not row.destination:
                continue  # site-wide rows come with a destination filter; these are per route
            counts = sums.setdefault(row.minute, {})
            counts[row.metric] = counts.get(row.metric, 0) + row.value
        return [
            SeriesPoint(
                float(t),
                sums.get(t, {}).get(DELIVERED, 0),
                sums.get(t, {}).get(RETRIED, 0),
                sums.get(t, {}).get(DEAD, 0),
            )
            for t in range(start, end, step)
        ]

    return provide


_SOURCES: Mapping[str, str] = {"api": "backend", "loader": "loader", "pixel": "pixel"}


def events_provider(view: DebugView) -> EventsProvider:
    """The dashboard's recent-events seam over the debug view's rings (secrets already cut)."""

    async def provide(site: str | None, destination: str | None, limit: int) -> list[RecentEvent]:
        out: list[RecentEvent] = []
        for name in [site] if site else list(view.destinations):
            if name not in view.destinations:
                continue
            doc = view.document(name, destination, None, limit)
            sent: dict[str, list[SentCopy]] = {}
            for entry in doc["sent"]:
                copy = SentCopy(entry["destination"], entry["status"], entry["payload"])
                sent.setdefault(entry["event_id"], []).append(copy)
            for got in doc["received"]:
                record = got.get("record")
                channel = record.get("ch", "api") if isinstance(record, dict) else "api"
                out.append(
                    RecentEvent(
                        float(got["received_at"]),
                        name,
                        got["event"],
                        got["event_id"],
                        _SOURCES.get(channel, channel),
                        record,
                        tuple(sent.get(got["event_id"], ())),
                    )
                )
        out.sort(key=lambda event: event.received_at, reverse=True)
        return out[:limit]

    return provide


def window_provider(flusher: Flusher) -> WindowProvider:
    """The dashboard's window seam over the rollups: every key's sum over the whole minutes
    covering [since, until], read as one step."""

    async def provide(since: float, until: float) -> Figures:
        start = minute_of(since)
        end = max(start, minute_of(until)) + MINUTE  # the minute holding `until` included
        return Figures.of_rows(await flusher.window(StatsQuery(start, end, end - start)))

    return provide
