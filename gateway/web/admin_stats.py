"""GET /v1/admin/stats: the per-minute rollups as series (admin token; README "Stats history").

``?site=&destination=&from=&to=&step=&metric=``: every key's sum per step of the range, as one array
of values per key aligned with ``times``, plus per route the delivery latency's acceptances and
estimated p50 / p95 per step. ``from`` / ``to`` are Unix seconds or ISO 8601 (default: the last
hour), ``step`` seconds (a multiple of 60, default 60); the range is widened to whole steps.
``metric`` (comma-separated) keeps only those metrics (the latency quantiles need ``latency``).
Site-wide families (received, accepted, rejected) have ``destination: null`` and come with
every destination filter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web

from gateway.core.rollup import (
    METRICS,
    MINUTE,
    LatencySeries,
    Range,
    Series,
    align,
    latency,
    series,
)
from gateway.core.secret import Secret
from gateway.store.base import StatsQuery, StatsStore
from gateway.web.admin import admin_denied
from gateway.web.middleware import error_response

PATH: Final = "/v1/admin/stats"
DEFAULT_SPAN: Final = 3600
MAX_STEP: Final = 86400
MAX_POINTS: Final = 1440
"""Most steps one answer holds (a day of minutes, or 60 days of days)."""
MAX_TIME: Final = 253_402_300_799
"""9999-12-31T23:59:59Z: later times are refused."""

Errors = list[dict[str, str]]


class StatsQueryError(Exception):
    def __init__(self, errors: Errors) -> None:
        super().__init__("invalid stats query")
        self.errors = errors


def parse_stats_query(
    params: Mapping[str, str], now: float, sites: Mapping[str, Collection[str]]
) -> StatsQuery:
    """Return the store query of the URL parameters; raise StatsQueryError naming each bad one.

    `sites` maps each configured site id to its destinations.
    """
    errors: Errors = []
    site = params.get("site") or None
    if site is not None and site not in sites:
        errors.append({"path": "site", "reason": "not a configured site"})
    destination = params.get("destination") or None
    if destination is not None:
        known: Collection[str] = (
            sites.get(site, ()) if site is not None else {d for ds in sites.values() for d in ds}
        )
        if destination not in known:
            errors.append({"path": "destination", "reason": "not a configured destination"})
    metrics = tuple(m for m in params.get("metric", "").split(",") if m)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or len(metrics) > len(METRICS):
        errors.append(
            {
                "path": "metric",
                "reason": "expected metric names, comma-separated: " + ", ".join(METRICS),
            }
        )
    step = _step(params.get("step", str(MINUTE)))
    if step is None:
        errors.append(
            {"path": "step", "reason": f"expected seconds: a multiple of 60 up to {MAX_STEP}"}
        )
    end = _time(params["to"]) if params.get("to") else float(math.floor(now))
    if end is None:
        errors.append({"path": "to", "reason": "expected Unix seconds or an ISO 8601 date-time"})
    start = _time(params["from"]) if params.get("from") else None
    if params.get("from") and start is None:
        errors.append({"path": "from", "reason": "expected Unix seconds or an ISO 8601 date-time"})
    if start is None and end is not None:
        start = max(0.0, end - DEFAULT_SPAN)
    if start is not None and end is not None and end < start:
        errors.append({"path": "to", "reason": "must not be before from"})
    if errors or start is None or end is None or step is None:
        raise StatsQueryError(errors)
    span = align(start, end, step)
    if len(range(span.start, span.end, step)) > MAX_POINTS:
        raise StatsQueryError(
            [
                {
                    "path": "step",
                    "reason": f"at most {MAX_POINTS} steps: raise step or narrow the range",
                }
            ]
        )
    return StatsQuery(span.start, span.end, step, site, destination, tuple(dict.fromkeys(metrics)))


def _step(raw: str) -> int | None:
    if raw.isascii() and raw.isdigit() and len(raw) <= 6:
        value = int(raw)
        if MINUTE <= value <= MAX_STEP and value % MINUTE == 0:
            return value
    return None


def _time(raw: str) -> float | None:
    """Unix seconds, or an ISO 8601 date-time (UTC when it names no offset)."""
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = datetime.fromisoformat(raw)
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = when.timestamp()
        except (ValueError, OverflowError, OSError):
            return None
    return seconds if math.isfinite(seconds) and 0 <= seconds <= MAX_TIME else None


def stats_json(query: StatsQuery, found: list[Series], lat: list[LatencySeries]) -> dict[str, Any]:
    """The answer body: times, one entry per key, latency per route."""
    return {
        "from": query.start,
        "to": query.end,
        "step": query.step,
        "site": query.site,
        "destination": query.destination,
        "times": list(range(query.start, query.end, query.step)),
        "series": [
            {
                "site": s.site,
                "destination": s.destination or None,
                "event": s.event or None,
                "metric": s.metric,
                "detail": s.detail or None,
                "values": s.values,
            }
            for s in found
        ],
        "latency": [
            {
                "site": s.site,
                "destination": s.destination,
                "count": s.count,
                "p50": s.p50,
                "p95": s.p95,
            }
            for s in lat
        ],
    }


class StatsApi:
    """Handler of GET /v1/admin/stats."""

    def __init__(
        self,
        store: StatsStore,
        token: Secret | None,
        sites: Mapping[str, Collection[str]],
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.token = token
        self.sites = sites
        """Site id → its configured destinations."""
        self.clock = clock

    async def get(self, request: web.Request) -> web.Response:
        """Return the series of the query's range."""
        denied = admin_denied(request, self.token)
        if denied is not None:
            return denied
        try:
            query = parse_stats_query(request.query, self.clock(), self.sites)
        except StatsQueryError as exc:
            return error_response(400, "bad_request", "invalid stats query", exc.errors)
        rows = await self.store.read_stats(query)
        found = series(rows, Range(query.start, query.end, query.step))
        return web.json_response(stats_json(query, found, latency(found)))
