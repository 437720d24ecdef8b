"""core.rollup's consent and dedup-pair keys, the preview of unflushed rows, and core.figures:
the dashboard's window figures read the same from stored rows as from live counters."""

from __future__ import annotations

from gateway.core.figures import Figures, Latency
from gateway.core.rollup import (
    BOUNDS,
    CONSENT_REASON,
    CONSENT_TIER,
    DEDUP_PAIR,
    METRICS,
    Rollup,
    StatRow,
    pair_counts,
    pair_rows,
    quantile,
    snapshot,
)
from gateway.core.tally import LATENCY_BUCKETS, IngestTally, RouteTally

M0 = 1_790_000_040


def test_the_new_metrics_are_named_and_keyed_per_site() -> None:
    assert {CONSENT_TIER, CONSENT_REASON, DEDUP_PAIR} <= set(METRICS)
    counts = snapshot(
        IngestTally(),
        {},
        {},
        {},
        tiers={("shop", "full"): 3, ("shop", "analytics"): 1, ("blog", "none"): 0},
        reasons={("shop", "gpc"): 1, ("shop", "default"): 3},
    )
    assert counts == {
        ("shop", "", "", "consent_tier", "full"): 3,
        ("shop", "", "", "consent_tier", "analytics"): 1,
        ("shop", "", "", "consent_reason", "gpc"): 1,
        ("shop", "", "", "consent_reason", "default"): 3,
    }
    assert pair_counts({("shop:meta", "api+loader"): 2, ("shop:tiktok", "api+api"): 0}) == {
        ("shop", "meta", "", "dedup_pair", "api+loader"): 2
    }


def test_pair_rows_book_the_increase_over_the_copy_and_a_reset_in_full() -> None:
    counts = {
        ("shop:meta", "api+loader"): 7,  # 5 booked: 2 new
        ("shop:meta", "api+api"): 1,  # never booked: all new
        ("shop:tiktok", "api+loader"): 2,  # below its copy of 4: reset, all new
        ("blog:meta", "api+api"): 3,  # unchanged: no row
    }
    booked = {
        ("shop:meta", "api+loader"): 5,
        ("shop:tiktok", "api+loader"): 4,
        ("blog:meta", "api+api"): 3,
        ("gone:meta", "api+api"): 9,  # a counter no longer there books nothing
    }
    assert pair_rows(counts, booked, M0) == [
        StatRow(M0, "shop", "meta", "", DEDUP_PAIR, "api+api", 1),
        StatRow(M0, "shop", "meta", "", DEDUP_PAIR, "api+loader", 2),
        StatRow(M0, "shop", "tiktok", "", DEDUP_PAIR, "api+loader", 2),
    ]
    assert pair_rows(counts, counts, M0) == []


def test_preview_adds_the_unbooked_increase_to_the_pending_rows_without_booking() -> None:
    key = ("shop", "meta", "Purchase", "delivered", "")
    other = ("shop", "", "", "consent_tier", "full")
    rollup = Rollup(since=M0 + 10)
    rollup.add({key: 2}, M0 + 60.05)  # pending: minute M0
    view = rollup.preview({key: 5, other: 1})
    assert view == [StatRow(M0, *key, 2), StatRow(M0 + 60, *other, 1), StatRow(M0 + 60, *key, 3)]
    assert rollup.rows() == [StatRow(M0, *key, 2)]  # nothing booked
    assert rollup.last == {key: 2}
    rollup.written(rollup.rows())
    rollup.add({key: 5, other: 1}, M0 + 120.05)
    assert rollup.rows() == view[1:]  # a flush books exactly what the preview showed


def live() -> tuple[IngestTally, dict[str, RouteTally]]:
    ingest = IngestTally()
    ingest.queued_names(("shop:meta",), {"Purchase": 4, "Lead": 2})
    ingest.appended("Purchase", ("shop:meta",), ("shop:meta",))
    route = RouteTally()
    route.delivered.update({"Purchase": 4, "Lead": 2})
    route.identifiers.update({("Purchase", "em"): 4, ("Purchase", "ph"): 2, ("Lead", "em"): 1})
    route.dead[("Purchase", "invalid_field")] = 1
    route.latency_buckets[LATENCY_BUCKETS.index(5.0)] = 3
    route.latency_buckets[LATENCY_BUCKETS.index(60.0)] = 3
    return ingest, {"shop:meta": route, "shop:tiktok": RouteTally()}


def test_figures_from_rows_equal_figures_from_the_same_counters() -> None:
    ingest, routes = live()
    counts = snapshot(
        ingest, routes, {"shop:tiktok": 2}, {}, tiers={("shop", "full"): 5}, reasons={}
    )
    counts.update(pair_counts({("shop:meta", "api+api"): 1}))
    rollup = Rollup(since=M0 + 5)
    rollup.add(counts, M0 + 70)  # all in minute M0; split some of it into a second minute
    rows = rollup.rows()
    split = [r._replace(value=1) for r in rows if r.value > 1] + [
        r._replace(minute=M0 + 60, value=r.value - 1) if r.value > 1 else r for r in rows
    ]
    stored = Figures.of_rows(split)
    assert stored == Figures.of_counts(counts)
    assert stored.by_route("queued") == {"shop:meta": 6}
    assert stored.by_route("deduplicated") == {"shop:meta": 1}
    assert stored.by_route("consent_dropped") == {"shop:tiktok": 2}
    assert stored.by_detail("consent_tier") == {"full": 5}
    assert stored.by_site_detail("consent_tier") == {("shop", "full"): 5}
    assert stored.by_detail("dedup_pair", "shop:meta") == {"api+api": 1}
    assert stored.by_detail("dead") == {"invalid_field": 1}
    assert stored.delivered("shop:meta") == {"Purchase": 4, "Lead": 2}
    assert stored.identifiers("shop:meta") == {
        ("Purchase", "em"): 4,
        ("Purchase", "ph"): 2,
        ("Lead", "em"): 1,
    }
    hist = [0] * len(BOUNDS)
    hist[LATENCY_BUCKETS.index(5.0)] = 3
    hist[LATENCY_BUCKETS.index(60.0)] = 3
    assert stored.latency("shop:meta") == Latency(6, quantile(hist, 0.5), quantile(hist, 0.95))
    assert stored.latency("shop:meta").p50 == 5.0
    assert stored.latency("shop:tiktok") == Latency(0, None, None)
