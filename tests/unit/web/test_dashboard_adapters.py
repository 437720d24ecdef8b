"""The dashboard's gap seam over the order ledger (gateway/web/dashboard/adapters.py)."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.core.orders import Fate, OrderRow
from gateway.core.rollup import StatRow
from gateway.store.base import StatsQuery
from gateway.web.dashboard.adapters import gap_provider, stats_provider
from gateway.web.dashboard.providers import GapLine, MissingOrder, SeriesPoint, SeriesQuery


def row(
    order: str, route: str, fate: str, state: str | None, reason: str | None = None
) -> OrderRow:
    return OrderRow(
        order_id=order,
        event_id=order,
        route=route,
        fate=fate,
        event_time=1_790_000_000.0,
        has_email=True,
        has_value=True,
        has_currency=True,
        paired=False,
        state=state,
        attempts=2 if state == "retry" else 1,
        not_before=1_790_000_600.0,
        reason=reason,
        updated_at=1_790_000_010.0,
    )


class Ledger:
    def __init__(self, rows: list[OrderRow]) -> None:
        self.rows = rows
        self.asked: list[tuple[str, float, float, int]] = []

    async def order_rows(self, site: str, since: float, until: float, limit: int) -> list[OrderRow]:
        self.asked.append((site, since, until, limit))
        return self.rows


async def test_the_gap_report_names_each_missing_order_with_its_reason() -> None:
    ledger = Ledger(
        [
            row("o-1", "shop:meta", Fate.SENT, "done"),
            row("o-2", "shop:meta", Fate.SENT, "dead", "invalid_field: bad phone"),
            row("o-3", "shop:meta", Fate.CONSENT_DENIED, None),
            row("o-1", "shop:tiktok", Fate.ROUTED_AWAY, None),
            row("o-2", "shop:tiktok", Fate.SENT, "retry", "HTTP 503"),
        ]
    )
    provide = gap_provider(ledger, {"shop": ("shop:meta", "shop:tiktok")}, max_rows=99)
    report = await provide("shop", 1.0, 2.0)
    assert ledger.asked == [("shop", 1.0, 2.0, 99)]
    assert (report.site, report.since, report.until) == ("shop", 1.0, 2.0)
    lines = {line.destination: line for line in report.lines}
    assert lines["meta"] == GapLine(
        "meta",
        3,
        1,
        (
            MissingOrder(
                "o-2", "o-2", "dead_letter", "dead_reason=invalid_field, detail=bad phone"
            ),
            MissingOrder("o-3", "o-3", "consent_denied", ""),
        ),
    )
    tiktok = lines["tiktok"]
    assert (tiktok.reported, tiktok.delivered) == (2, 0)
    assert [(m.order_id, m.reason) for m in tiktok.missing] == [
        ("o-1", "routed_away"),
        ("o-2", "queued"),
    ]
    assert "attempts=2" in tiktok.missing[1].detail
    assert "last_error=HTTP 503" in tiktok.missing[1].detail


class Rollups:
    def __init__(self, rows: list[StatRow]) -> None:
        self.rows = rows
        self.queries: list[StatsQuery] = []

    async def write_stats(self, rows: Sequence[StatRow]) -> None:
        raise AssertionError("the dashboard only reads")

    async def read_stats(self, query: StatsQuery) -> list[StatRow]:
        self.queries.append(query)
        return self.rows

    async def compact_stats(self, before: int) -> int:
        raise AssertionError("the dashboard only reads")


async def test_the_series_sums_each_step_of_a_route_and_fills_empty_steps() -> None:
    rows = [
        StatRow(1_800_000_000, "shop", "meta", "Purchase", "delivered", "", 7),
        StatRow(1_800_000_000, "shop", "meta", "Lead", "delivered", "", 2),
        StatRow(1_800_000_000, "shop", "meta", "Purchase", "dead", "invalid_field", 1),
        StatRow(1_800_000_120, "shop", "meta", "Purchase", "retried", "", 3),
        StatRow(1_800_000_120, "shop", "", "Purchase", "accepted", "backend", 50),
    ]
    store = Rollups(rows)
    provide = stats_provider(store)
    points = await provide(SeriesQuery("shop:meta", 1_800_000_010.0, 1_800_000_170.0, 60.0))
    (query,) = store.queries
    assert (query.start, query.end, query.step) == (1_800_000_000, 1_800_000_180, 60)
    assert (query.site, query.destination) == ("shop", "meta")
    assert set(query.metrics) == {"delivered", "retried", "dead"}
    assert points == [
        SeriesPoint(1_800_000_000.0, delivered=9, retried=0, dead=1),
        SeriesPoint(1_800_000_060.0),
        SeriesPoint(1_800_000_120.0, delivered=0, retried=3, dead=0),
    ]
    every = await provide(SeriesQuery(None, 1_800_000_000.0, 1_800_000_060.0, 60.0))
    assert store.queries[-1].site is None
    assert every == [SeriesPoint(1_800_000_000.0, delivered=9, retried=0, dead=1)]
