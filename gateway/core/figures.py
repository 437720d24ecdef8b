"""The dashboard's figures over a window of per-minute rollups (pure: no clock, no I/O).

A window's `Figures` is every rollup key's sum over the window (gateway/core/rollup.py says what
each metric's key holds). The same figures come from the store's rows (they survive restarts
and read the same on every store backend) or, with rollups off, from the live counters since
start (`rollup.snapshot`), so the pages have one way to read them. A route is
``site:destination``, as everywhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from gateway.core.rollup import (
    BOUNDS,
    DELIVERED,
    IDENTIFIER,
    LATENCY,
    Key,
    StatRow,
    quantile,
)


class Latency(NamedTuple):
    """A route's acceptances in the window and the estimated p50 / p95 (seconds; None without
    acceptances)."""

    accepted: int
    p50: float | None
    p95: float | None


def _route(site: str, destination: str) -> str:
    return f"{site}:{destination}"


@dataclass(frozen=True, slots=True)
class Figures:
    """Every key's sum over a window."""

    values: Mapping[Key, int]

    @classmethod
    def of_rows(cls, rows: Iterable[StatRow]) -> Figures:
        """Sum `rows` (of any minutes or steps) per key."""
        values: dict[Key, int] = {}
        for row in rows:
            key = (row.site, row.destination, row.event, row.metric, row.detail)
            values[key] = values.get(key, 0) + row.value
        return cls(values)

    @classmethod
    def of_counts(cls, counts: Mapping[Key, int]) -> Figures:
        """The figures of counters read as they are (the live ones: since start)."""
        return cls(dict(counts))

    def by_detail(self, metric: str, route: str | None = None) -> dict[str, int]:
        """Return detail → sum of `metric` (of one route, or of every site and route)."""
        out: dict[str, int] = {}
        for (site, destination, _event, name, detail), n in self.values.items():
            if name != metric or (route is not None and _route(site, destination) != route):
                continue
            out[detail] = out.get(detail, 0) + n
        return out

    def by_route(self, metric: str) -> dict[str, int]:
        """Return route → sum of `metric` (per-destination metrics only)."""
        out: dict[str, int] = {}
        for (site, destination, _event, name, _detail), n in self.values.items():
            if name == metric and destination:
                route = _route(site, destination)
                out[route] = out.get(route, 0) + n
        return out

    def by_event(self, metric: str, route: str) -> dict[str, int]:
        """Return event label → sum of `metric` of one route."""
        out: dict[str, int] = {}
        for (site, destination, event, name, _detail), n in self.values.items():
            if name == metric and _route(site, destination) == route:
                out[event] = out.get(event, 0) + n
        return out

    def by_site_detail(self, metric: str) -> dict[tuple[str, str], int]:
        """Return (site, detail) → sum of a site-wide `metric`."""
        out: dict[tuple[str, str], int] = {}
        for (site, _destination, _event, name, detail), n in self.values.items():
            if name == metric:
                out[(site, detail)] = out.get((site, detail), 0) + n
        return out

    def delivered(self, route: str) -> dict[str, int]:
        """Return event label → events `route` delivered."""
        return self.by_event(DELIVERED, route)

    def identifiers(self, route: str) -> dict[tuple[str, str], int]:
        """Return (event label, identifier kind) → delivered events of `route` carrying it."""
        out: dict[tuple[str, str], int] = {}
        for (site, destination, event, name, kind), n in self.values.items():
            if name == IDENTIFIER and _route(site, destination) == route:
                out[(event, kind)] = out.get((event, kind), 0) + n
        return out

    def latency(self, route: str) -> Latency:
        """Return the route's acceptances and p50 / p95 from its latency bucket rows."""
        by_bound = self.by_detail(LATENCY, route)
        hist = [by_bound.get(bound, 0) for bound in BOUNDS]
        return Latency(sum(hist), quantile(hist, 0.5), quantile(hist, 0.95))
