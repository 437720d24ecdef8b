"""core.rollup: counter snapshots, deltas booked per minute, pending rows, range reads."""

from __future__ import annotations

import pytest

from gateway.core.rollup import (
    BOUNDS,
    MAX_PENDING_MINUTES,
    Range,
    Rollup,
    StatRow,
    align,
    latency,
    minute_of,
    quantile,
    series,
    snapshot,
)
from gateway.core.tally import LATENCY_BUCKETS, IngestTally, RouteTally

M0 = 1_790_000_040  # a minute start (divisible by 60)


def test_minute_of() -> None:
    assert M0 % 60 == 0
    assert minute_of(M0) == M0
    assert minute_of(M0 + 59.999) == M0
    assert minute_of(M0 + 60) == M0 + 60
    assert minute_of(M0 - 0.001) == M0 - 60


def tallies() -> tuple[IngestTally, dict[str, RouteTally]]:
    ingest = IngestTally()
    ingest.accepted("shop", "backend", {"Purchase": 3, "Lead": 1})
    ingest.accepted_one("shop", "loader", "PageView")
    ingest.refused("shop", "backend", "invalid", 2)
    ingest.refused("shop", "loader", "invalid")
    ingest.queued_names(("shop:meta", "shop:tiktok"), {"Purchase": 3})
    ingest.appended("Purchase", ("shop:meta",), ("shop:meta",))
    route = RouteTally()
    route.delivered["Purchase"] = 2
    route.retried["Purchase"] = 1
    route.dead[("Purchase", "invalid_field")] = 1
    route.identifiers[("Purchase", "em")] = 2
    route.latency_buckets[LATENCY_BUCKETS.index(15.0)] = 2
    route.latency_sum = 20.25
    return ingest, {"shop:meta": route, "shop:tiktok": RouteTally()}


def test_snapshot_names_every_family_with_its_columns() -> None:
    ingest, routes = tallies()
    counts = snapshot(ingest, routes, {"shop:tiktok": 4}, {"shop:meta": 5})
    assert counts == {
        ("shop", "", "", "received", "backend"): 6,
        ("shop", "", "", "received", "loader"): 2,
        ("shop", "", "Purchase", "accepted", "backend"): 3,
        ("shop", "", "Lead", "accepted", "backend"): 1,
        ("shop", "", "PageView", "accepted", "loader"): 1,
        ("shop", "", "", "rejected", "invalid"): 3,
        ("shop", "meta", "Purchase", "queued", ""): 3,
        ("shop", "tiktok", "Purchase", "queued", ""): 3,
        ("shop", "meta", "Purchase", "deduplicated", ""): 1,
        ("shop", "tiktok", "", "consent_dropped", ""): 4,
        ("shop", "meta", "", "routed_away", ""): 5,
        ("shop", "meta", "Purchase", "delivered", ""): 2,
        ("shop", "meta", "Purchase", "retried", ""): 1,
        ("shop", "meta", "Purchase", "dead", "invalid_field"): 1,
        ("shop", "meta", "Purchase", "identifier", "em"): 2,
        ("shop", "meta", "", "latency", "15.0"): 2,
        ("shop", "meta", "", "latency_ms_sum", ""): 20250,
    }


def test_deltas_are_booked_to_the_minute_the_interval_began() -> None:
    rollup = Rollup(since=M0 + 10)
    key = ("shop", "meta", "Purchase", "delivered", "")
    rollup.add({key: 2}, M0 + 60.05)  # the tick just after the boundary books minute M0
    assert rollup.rows() == [StatRow(M0, *key, 2)]
    rollup.add({key: 2}, M0 + 90)  # nothing new
    rollup.add({key: 7}, M0 + 120.05)  # interval began at M0 + 90: minute M0 + 60
    assert rollup.rows() == [StatRow(M0, *key, 2), StatRow(M0 + 60, *key, 5)]
    rows = rollup.rows()
    rollup.written(rows)
    assert rollup.rows() == []
    rollup.add({key: 8}, M0 + 180.05)
    assert rollup.rows() == [StatRow(M0 + 120, *key, 1)]


def test_rows_not_written_stay_pending_and_add_up() -> None:
    key = ("shop", "", "", "received", "backend")
    rollup = Rollup(since=M0)
    rollup.add({key: 3}, M0 + 20)
    taken = rollup.rows()
    rollup.add({key: 5}, M0 + 40)  # same minute, while the store was writing `taken`
    rollup.written(taken)
    assert rollup.rows() == [StatRow(M0, *key, 2)]


def test_a_counter_that_went_down_counts_from_zero() -> None:
    key = ("shop", "", "", "received", "backend")
    rollup = Rollup(since=M0, last={key: 10})
    rollup.add({key: 4}, M0 + 61)
    assert rollup.rows() == [StatRow(M0, *key, 4)]


def test_pending_rows_are_bounded_by_minutes() -> None:
    key = ("shop", "", "", "received", "backend")
    rollup = Rollup(since=M0)
    for i in range(1, MAX_PENDING_MINUTES + 6):
        rollup.add({key: i}, M0 + 60 * i)
    rows = rollup.rows()
    assert len(rows) == MAX_PENDING_MINUTES
    assert rows[0].minute == M0 + 5 * 60  # the five oldest minutes were dropped
    assert rollup.dropped == 5


def test_align_widens_to_whole_steps() -> None:
    assert align(M0 + 5, M0 + 61, 60) == Range(M0, M0 + 120, 60)
    assert align(M0, M0, 60) == Range(M0, M0 + 60, 60)  # at least one step
    span = align(M0 + 5, M0 + 3600, 3600)
    assert span.start % 3600 == 0
    assert span.end - span.start in (3600, 7200)
    assert Range(M0, M0 + 180, 60).times == [M0, M0 + 60, M0 + 120]


def test_series_lays_rows_on_the_steps() -> None:
    span = Range(M0, M0 + 180, 60)
    rows = [
        StatRow(M0, "shop", "meta", "Purchase", "delivered", "", 2),
        StatRow(M0 + 120, "shop", "meta", "Purchase", "delivered", "", 3),
        StatRow(M0 + 60, "shop", "", "", "received", "backend", 4),
        StatRow(M0 + 600, "shop", "", "", "received", "backend", 9),  # outside: ignored
    ]
    found = series(rows, span)
    assert [(s.metric, s.values) for s in found] == [
        ("received", [0, 4, 0]),
        ("delivered", [2, 0, 3]),
    ]


def test_quantiles_interpolate_inside_the_bucket() -> None:
    hist = [0] * len(BOUNDS)
    assert quantile(hist, 0.5) is None
    hist[LATENCY_BUCKETS.index(60.0)] = 7  # seven acceptances in (30, 60]
    assert quantile(hist, 0.5) == pytest.approx(45.0)
    assert quantile(hist, 0.95) == pytest.approx(30 + 30 * 0.95)
    hist = [0] * len(BOUNDS)
    hist[0] = 1  # (0, 1]
    hist[-1] = 1  # above a week: the highest finite bound
    assert quantile(hist, 0.5) == pytest.approx(1.0)
    assert quantile(hist, 0.95) == LATENCY_BUCKETS[-1]


def test_latency_per_route_and_step() -> None:
    span = Range(M0, M0 + 120, 60)
    rows = [
        StatRow(M0, "shop", "meta", "", "latency", "5.0", 2),
        StatRow(M0, "shop", "meta", "", "latency", "15.0", 2),
        StatRow(M0, "shop", "meta", "", "latency_ms_sum", "", 30000),
    ]
    (route,) = latency(series(rows, span))
    assert (route.site, route.destination) == ("shop", "meta")
    assert route.count == [4, 0]
    assert route.p50 == [pytest.approx(5.0), None]
    assert route.p95 == [pytest.approx(5 + 10 * (3.8 - 2) / 2), None]
