"""The flusher's store-booked counters (dedup pairs) and its window read (gateway/web/rollups.py),
and the dashboard's window seam over it (gateway/web/dashboard/adapters.py)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from conftest import FakeClock

from gateway.config import AuditConfig
from gateway.core.rollup import Key, StatRow, pair_rows
from gateway.store.base import StatsQuery
from gateway.web.dashboard.adapters import window_provider
from gateway.web.rollups import PAIRS_STALE, Flusher

M0 = 1_790_000_040
PAIR: Key = ("shop", "meta", "", "dedup_pair", "api+loader")
SENT: Key = ("shop", "meta", "Purchase", "delivered", "")
TIER: Key = ("shop", "", "", "consent_tier", "full")


class Memory:
    """A StatsStore keeping rows in a list (reads sum nothing: the test sums), with one pair
    counter (`pairs`) booked as the real stores book it; `fail` makes the next booking raise."""

    def __init__(self, pairs: int = 0) -> None:
        self.rows: list[StatRow] = []
        self.queries: list[StatsQuery] = []
        self.pairs = pairs
        self.booked: tuple[int, int] | None = None
        """(counter, minute) of the last booking."""
        self.fail = False
        self.bookings: list[tuple[int, int]] = []

    async def write_stats(self, rows: Sequence[StatRow]) -> None:
        self.rows.extend(rows)

    async def read_stats(self, query: StatsQuery) -> list[StatRow]:
        self.queries.append(query)
        return [r for r in self.rows if query.start <= r.minute < query.end]

    async def compact_stats(self, before: int) -> int:
        return 0

    async def unbooked_pairs(self, minute: int, stale_before: int) -> list[StatRow]:
        if self.booked is None or self.booked[1] < stale_before:
            return []
        return pair_rows({ROUTE: self.pairs}, {ROUTE: self.booked[0]}, minute)

    async def book_pairs(self, minute: int, stale_before: int) -> list[StatRow]:
        if self.fail:
            raise OSError("store away")
        self.bookings.append((minute, stale_before))
        rows = await self.unbooked_pairs(minute, stale_before)
        self.rows.extend(rows)
        self.booked = (self.pairs, max(minute, self.booked[1] if self.booked else minute))
        return rows


ROUTE = ("shop:meta", "api+loader")


def totals(rows: Sequence[StatRow]) -> dict[Key, int]:
    out: dict[Key, int] = {}
    for r in rows:
        key = (r.site, r.destination, r.event, r.metric, r.detail)
        out[key] = out.get(key, 0) + r.value
    return out


async def test_the_store_books_its_pairs_at_the_start_and_each_flush_and_a_failure_waits() -> None:
    clock = FakeClock(M0 + 5)
    store = Memory(pairs=40)  # 40 pairs from before the store ever booked
    live: dict[Key, int] = {}
    flusher = Flusher(store, lambda: live, clock, AuditConfig())
    flusher.start()
    await flusher.prime()  # the store takes 40 as its reference
    assert store.bookings == [(M0, M0 - PAIRS_STALE)]
    store.pairs, live[SENT] = 43, 2
    clock.advance(60)
    assert await flusher.flush() == 2
    assert store.bookings[-1] == (M0, M0 - PAIRS_STALE)  # the interval's minute
    assert totals(store.rows) == {PAIR: 3, SENT: 2}
    assert [r.minute for r in store.rows if r.metric == "dedup_pair"] == [M0]
    store.fail, store.pairs = True, 50
    clock.advance(60)
    assert await flusher.flush() == 0  # the booking failed: nothing lost, nothing booked
    assert totals(store.rows) == {PAIR: 3, SENT: 2}
    store.fail = False
    clock.advance(60)
    assert await flusher.flush() == 1
    assert totals(store.rows) == {PAIR: 10, SENT: 2}


async def test_a_failed_booking_at_the_start_books_at_the_next_flush() -> None:
    clock = FakeClock(M0 + 5)
    store = Memory(pairs=40)
    store.booked = (38, M0 - 60)  # another process booked 38 a minute ago
    flusher = Flusher(store, dict, clock, AuditConfig())
    flusher.start()
    store.fail = True
    await flusher.prime()
    store.fail = False
    clock.advance(60)
    await flusher.flush()
    assert totals(store.rows) == {PAIR: 2}


async def test_the_window_is_the_stored_rows_plus_what_a_flush_now_would_add() -> None:
    clock = FakeClock(M0 + 5)
    store = Memory()
    live: dict[Key, int] = {SENT: 1}
    flusher = Flusher(store, lambda: live, clock, AuditConfig())
    flusher.start()  # SENT: 1 before the start is not booked
    await flusher.prime()
    live.update({SENT: 4, TIER: 2})
    clock.advance(60)
    await flusher.flush()  # stored: SENT 3, TIER 2 in minute M0
    live[SENT], store.pairs = 6, 1
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
