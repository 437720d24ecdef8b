"""The stats part of the store contract (`StatsStore`, issue #12 item 2): per-minute rollups
and the dedup_pair booking."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from contract import T0, ContractSuite, ev

from gateway.core.rollup import StatRow
from gateway.store.base import (
    GatewayStore,
    StatsQuery,
)

M0 = 1_700_000_040
"""A minute start (divisible by 60)."""


def stat(minute: int, metric: str, value: int, **key: str) -> StatRow:
    """A StatRow of site "shop", destination "meta" and event "Purchase" unless `key` says."""
    return StatRow(
        minute,
        key.get("site", "shop"),
        key.get("destination", "meta"),
        key.get("event", "Purchase"),
        metric,
        key.get("detail", ""),
        value,
    )


class StatsContract(ContractSuite[GatewayStore]):
    """Contract of the stats half of a backend (`StatsStore`): subclass, override make_store."""

    async def test_rows_read_back_per_minute_and_writes_add_up(self, store: GatewayStore) -> None:
        await store.write_stats([stat(M0, "delivered", 2), stat(M0 + 60, "delivered", 1)])
        await store.write_stats([stat(M0, "delivered", 3)])  # a second flush of the same minute
        await store.write_stats([])
        rows = await store.read_stats(StatsQuery(M0, M0 + 120))
        assert rows == [stat(M0, "delivered", 5), stat(M0 + 60, "delivered", 1)]

    async def test_the_range_is_half_open(self, store: GatewayStore) -> None:
        await store.write_stats([stat(M0 + 60 * i, "queued", i + 1) for i in range(4)])
        rows = await store.read_stats(StatsQuery(M0 + 60, M0 + 180))
        assert [(r.minute, r.value) for r in rows] == [(M0 + 60, 2), (M0 + 120, 3)]
        assert await store.read_stats(StatsQuery(M0 + 60, M0 + 60)) == []

    async def test_steps_sum_minutes_from_the_range_start(self, store: GatewayStore) -> None:
        await store.write_stats([stat(M0 + 60 * i, "queued", 1 << i) for i in range(5)])
        rows = await store.read_stats(StatsQuery(M0, M0 + 360, step=120))
        assert [(r.minute, r.value) for r in rows] == [(M0, 3), (M0 + 120, 12), (M0 + 240, 16)]

    async def test_site_and_destination_filters(self, store: GatewayStore) -> None:
        received = stat(M0, "received", 7, destination="", event="", detail="backend")
        await store.write_stats(
            [
                stat(M0, "delivered", 1),
                stat(M0, "delivered", 2, destination="tiktok"),
                stat(M0, "delivered", 4, site="blog"),
                received,
                stat(M0, "dead", 1, detail="invalid_field"),
            ]
        )
        every = await store.read_stats(StatsQuery(M0, M0 + 60))
        assert len(every) == 5
        shop = await store.read_stats(StatsQuery(M0, M0 + 60, site="shop"))
        assert {(r.destination, r.metric, r.value) for r in shop} == {
            ("meta", "delivered", 1),
            ("tiktok", "delivered", 2),
            ("", "received", 7),
            ("meta", "dead", 1),
        }
        meta = await store.read_stats(StatsQuery(M0, M0 + 60, site="shop", destination="meta"))
        assert sorted(meta) == sorted(
            [stat(M0, "delivered", 1), received, stat(M0, "dead", 1, detail="invalid_field")]
        )
        assert await store.read_stats(StatsQuery(M0, M0 + 60, site="nowhere")) == []
        picked = await store.read_stats(StatsQuery(M0, M0 + 60, metrics=("dead", "received")))
        assert sorted(picked) == sorted([stat(M0, "dead", 1, detail="invalid_field"), received])

    async def test_compact_deletes_the_minutes_before(self, store: GatewayStore) -> None:
        await store.write_stats(
            [stat(M0 + 60 * i, "queued", 1) for i in range(3)]
            + [stat(M0, "delivered", 1, destination="tiktok")]
        )
        assert await store.compact_stats(M0 + 60) == 2
        assert await store.compact_stats(M0 + 60) == 0
        rows = await store.read_stats(StatsQuery(M0 - 600, M0 + 600))
        assert [(r.minute, r.value) for r in rows] == [(M0 + 60, 1), (M0 + 120, 1)]

    async def test_reopen_keeps_the_stats(self, make_store: Callable[[], GatewayStore]) -> None:
        first = make_store()
        await first.open()
        try:
            await first.write_stats([stat(M0, "delivered", 3)])
        finally:
            await first.close()
        second = make_store()
        await second.open()
        try:
            await second.write_stats([stat(M0, "delivered", 1)])
            assert await second.read_stats(StatsQuery(M0, M0 + 60)) == [stat(M0, "delivered", 4)]
        finally:
            await second.close()

    # -- the dedup_pair booking (book_pairs): once whatever the number of processes -----------

    @staticmethod
    async def duplicates(store: GatewayStore, name: str, copies: int) -> None:
        """Append `copies` copies of one event: `copies - 1` "api+api" duplicates at meta."""
        for i in range(copies):
            await store.append([ev(name)], T0 + i)

    @staticmethod
    def pairs(n: int, minute: int = M0) -> StatRow:
        return stat(minute, "dedup_pair", n, event="", detail="api+api")

    async def test_the_first_booking_takes_the_counters_as_they_are(
        self, store: GatewayStore
    ) -> None:
        await self.duplicates(store, "before", 3)  # 2 duplicates before any booking
        assert await store.unbooked_pairs(M0, M0 - 3600) == []
        assert await store.book_pairs(M0, M0 - 3600) == []  # the reference: nothing booked
        await self.duplicates(store, "after", 4)  # 3 more
        assert await store.unbooked_pairs(M0 + 60, M0) == [self.pairs(3, M0 + 60)]
        assert await store.unbooked_pairs(M0 + 60, M0) == [self.pairs(3, M0 + 60)]  # a read
        assert await store.book_pairs(M0 + 60, M0) == [self.pairs(3, M0 + 60)]
        assert await store.book_pairs(M0 + 120, M0) == []
        assert await store.unbooked_pairs(M0 + 120, M0) == []
        rows = await store.read_stats(StatsQuery(M0 - 600, M0 + 600, metrics=("dedup_pair",)))
        assert rows == [self.pairs(3, M0 + 60)]
        assert sorted((await store.dedup_counts()).items()) == [(("shop:meta", "api+api"), 5)]

    async def test_a_stale_copy_is_only_replaced(self, store: GatewayStore) -> None:
        await store.book_pairs(M0, M0 - 3600)
        await self.duplicates(store, "a", 2)
        # the last booking (M0) is before stale_before: nobody booked for too long
        assert await store.unbooked_pairs(M0 + 7200, M0 + 60) == []
        assert await store.book_pairs(M0 + 7200, M0 + 60) == []
        await self.duplicates(store, "b", 2)
        assert await store.book_pairs(M0 + 7260, M0 + 60) == [self.pairs(1, M0 + 7260)]
        # a booking of an earlier minute (another process' clock) keeps the later time
        assert await store.book_pairs(M0 + 7200, M0 + 7230) == []
        await self.duplicates(store, "c", 2)
        assert await store.book_pairs(M0 + 7320, M0 + 7260) == [self.pairs(1, M0 + 7320)]

    async def test_two_stores_on_one_storage_book_each_duplicate_once(
        self, make_store: Callable[[], GatewayStore]
    ) -> None:
        """Two processes on the same file / database flush after the same duplicates, at
        once and in turns: the figure is the number of duplicates, not twice it."""
        a, b = make_store(), make_store()
        await a.open()
        await b.open()
        try:
            await asyncio.gather(a.book_pairs(M0, M0 - 3600), b.book_pairs(M0, M0 - 3600))
            sent = 0
            for round_ in range(6):
                minute = M0 + 60 * (round_ + 1)
                await self.duplicates(a if round_ % 2 else b, f"o{round_}", round_ + 2)
                sent += round_ + 1
                booked = await asyncio.wait_for(
                    asyncio.gather(a.book_pairs(minute, M0), b.book_pairs(minute, M0)), 30
                )
                # exactly one of the two found the increase
                assert sorted(len(rows) for rows in booked) == [0, 1], booked
                assert sum(r.value for rows in booked for r in rows) == round_ + 1
            await self.duplicates(a, "late", 2)  # booked by whichever flushes next
            assert await b.book_pairs(M0 + 600, M0) == [self.pairs(1, M0 + 600)]
            assert await a.book_pairs(M0 + 600, M0) == []
            sent += 1
            rows = await a.read_stats(StatsQuery(M0, M0 + 3600, 3600, metrics=("dedup_pair",)))
            assert rows == [self.pairs(sent)]
            assert await b.read_stats(StatsQuery(M0, M0 + 3600, 3600)) == rows
        finally:
            await a.close()
            await b.close()

    async def test_a_restart_books_nothing_twice(
        self, make_store: Callable[[], GatewayStore]
    ) -> None:
        first = make_store()
        await first.open()
        try:
            await first.book_pairs(M0, M0 - 3600)
            await self.duplicates(first, "a", 3)
            assert await first.book_pairs(M0 + 60, M0) == [self.pairs(2, M0 + 60)]
            await self.duplicates(first, "b", 2)  # not booked before the stop
        finally:
            await first.close()
        second = make_store()
        await second.open()
        try:
            # the new process' first booking books what the old one left, and only that
            assert await second.book_pairs(M0 + 120, M0) == [self.pairs(1, M0 + 120)]
            assert await second.book_pairs(M0 + 180, M0) == []
            rows = await second.read_stats(StatsQuery(M0, M0 + 3600, 3600))
            assert rows == [self.pairs(3)]
        finally:
            await second.close()
