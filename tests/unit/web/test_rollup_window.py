"""The flusher's store-kept counters (dedup pairs) and its window read (gateway/web/rollups.py),
and the dashboard's window seam over it (gateway/web/dashboard/adapters.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from conftest import FakeClock

from gateway.config import AuditConfig
from gateway.core.rollup import Key, StatRow
from gateway.store.base import StatsQuery
from gateway.web.dashboard.adapters import window_provider
from gateway.web.rollups import Flusher

M0 = 1_790_000_040
PAIR: Key = ("shop", "meta", "", "dedup_pair", "api+loader")
SENT: Key = ("shop", "meta", "Purchase", "delivered", "")
TIER: Key = ("shop", "", "", "consent_tier", "full")


class Memory:
    """A StatsStore keeping rows in a list (reads sum nothing: the test sums)."""

    def __init__(self) -> None:
        self.rows: list[StatRow] = []
        self.queries: list[StatsQuery] = []

    async def write_stats(self, rows: Sequence[StatRow]) -> None:
        self.rows.extend(rows)

    async def read_stats(self, query: StatsQuery) -> list[StatRow]:
        self.queries.append(query)
        return [r for r in self.rows if query.start <= r.minute < query.end]

    async def compact_stats(self, before: int) -> int:
        return 0


class Pairs:
    """The store's cumulative pair counters; `fail` makes the next read raise."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.fail = False

    async def __call__(self) -> Mapping[Key, int]:
        if self.fail:
            raise OSError("store away")
        return {PAIR: self.n}


def totals(rows: Sequence[StatRow]) -> dict[Key, int]:
    out: dict[Key, int] = {}
    for r in rows:
        key = (r.site, r.destination, r.event, r.metric, r.detail)
        out[key] = out.get(key, 0) + r.value
    return out


async def test_store_counters_before_the_start_are_not_booked_and_a_failed_read_books_none() -> (
    None
):
    clock = FakeClock(M0 + 5)
    store, pairs = Memory(), Pairs(40)  # 40 pairs from before this process started
    live: dict[Key, int] = {}
    flusher = Flusher(store, lambda: live, clock, AuditConfig(), pairs)
    flusher.start()
    await flusher.prime()
    pairs.n, live[SENT] = 43, 2
    clock.advance(60)
    await flusher.flush()
    assert totals(store.rows) == {PAIR: 3, SENT: 2}
    pairs.fail, pairs.n = True, 50
    clock.advance(60)
    await flusher.flush()  # the read failed: the last good value stands, nothing booked
    assert totals(store.rows) == {PAIR: 3, SENT: 2}
    pairs.fail = False
    clock.advance(60)
    await flusher.flush()
    assert totals(store.rows) == {PAIR: 10, SENT: 2}


async def test_a_failed_first_read_makes_the_next_good_one_the_reference() -> None:
    clock = FakeClock(M0 + 5)
    store, pairs = Memory(), Pairs(40)
    flusher = Flusher(store, dict, clock, AuditConfig(), pairs)
    flusher.start()
    pairs.fail = True
    await flusher.prime()
    pairs.fail = False
    clock.advance(60)
    await flusher.flush()
    assert store.rows == []  # 40 is the reference, not an increase
    pairs.n = 41
    clock.advance(60)
    await flusher.flush()
    assert totals(store.rows) == {PAIR: 1}


async def test_the_window_is_the_stored_rows_plus_what_a_flush_now_would_add() -> None:
    clock = FakeClock(M0 + 5)
    store, pairs = Memory(), Pairs(0)
    live: dict[Key, int] = {SENT: 1}
    flusher = Flusher(store, lambda: live, clock, AuditConfig(), pairs)
    flusher.start()  # SENT: 1 before the start is not booked
    await flusher.prime()
    live.update({SENT: 4, TIER: 2})
    clock.advance(60)
    await flusher.flush()  # stored: SENT 3, TIER 2 in minute M0
    live[SENT], pairs.n = 6, 1
    clock.advance(30)
    provide = window_provider(flusher)
    figures = await provide(clock() - 3600, clock())
    assert dict(figures.values) == {SENT: 5, TIER: 2, PAIR: 1}
    (query,) = store.queries
    assert query.start == (int(clock() - 3600) // 60) * 60
    assert query.end == (int(clock()) // 60) * 60 + 60  # the current minute included
    assert query.step == query.end - query.start
    assert totals(store.rows) == {SENT: 3, TIER: 2}  # the read booked nothing
    await flusher.flush()
    assert totals(store.rows) == {SENT: 5, TIER: 2, PAIR: 1}
    assert dict((await provide(clock() - 3600, clock())).values) == {SENT: 5, TIER: 2, PAIR: 1}
    # A window that ends before the traffic shows none of it.
    assert dict((await provide(M0 - 7200, M0 - 3600)).values) == {}


@pytest.mark.parametrize("metrics", [(), ("delivered",)])
async def test_the_window_keeps_the_querys_filters_on_unflushed_rows(
    metrics: tuple[str, ...],
) -> None:
    clock = FakeClock(M0 + 5)
    live: dict[Key, int] = {}
    flusher = Flusher(Memory(), lambda: live, clock, AuditConfig())
    flusher.start()
    live.update({SENT: 1, TIER: 1, ("blog", "meta", "Lead", "delivered", ""): 1})
    rows = await flusher.window(StatsQuery(M0, M0 + 60, 60, "shop", "meta", metrics))
    expected = {SENT: 1} if metrics else {SENT: 1, TIER: 1}
    assert totals(rows) == expected
