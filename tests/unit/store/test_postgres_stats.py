"""PostgresStore stats rollups: the contract on a real PostgreSQL, and what replicas add: two
stores flushing the same minutes at once add up, without deadlocking each other."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg
import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("contract", "contract_stats")

from contract_stats import M0, StatsContract, stat  # noqa: E402
from pg_database import index_plan  # noqa: E402
from store_backends import OnPostgres, Pair, make  # noqa: E402
from store_fixtures import two_stores  # noqa: E402, F401 - a fixture

from gateway.core.rollup import StatRow  # noqa: E402
from gateway.store.base import StatsQuery  # noqa: E402
from gateway.store.postgres_schema import MIGRATIONS, migrate  # noqa: E402
from gateway.store.postgres_stats import COMPACT_MINUTES, read_stats_sql  # noqa: E402


class TestPostgresStats(OnPostgres, StatsContract):
    pass


async def test_one_flush_may_name_a_key_twice(two: Pair) -> None:
    store, _ = two
    await store.write_stats([stat(M0, "queued", 1), stat(M0, "queued", 2), stat(M0, "dead", 4)])
    rows = await store.read_stats(StatsQuery(M0, M0 + 60))
    assert {(r.metric, r.value) for r in rows} == {("queued", 3), ("dead", 4)}


async def test_two_replicas_flushing_the_same_minutes_add_up(
    two: Pair,
) -> None:
    """Each flush holds the same 40 keys, in opposite orders on the two stores: the upserts
    lock them in key order, so no flush deadlocks or loses an increment."""
    keys = [(M0 + 60 * (i // 10), f"d{i % 10}") for i in range(40)]

    def flush(reverse: bool) -> list[StatRow]:
        rows = [stat(m, "delivered", 1, destination=d) for m, d in keys]
        return rows[::-1] if reverse else rows

    flushes = 15
    await asyncio.wait_for(
        asyncio.gather(
            *(two[i % 2].write_stats(flush(reverse=i % 2 == 1)) for i in range(2 * flushes))
        ),
        timeout=60,
    )
    rows = await two[0].read_stats(StatsQuery(M0, M0 + 240))
    assert len(rows) == 40
    assert {r.value for r in rows} == {2 * flushes}


async def test_ordering_is_by_bytes_whatever_the_collation(
    two: Pair,
) -> None:
    store, _ = two
    names = ["b", "B", "a", "_x", "Z"]
    await store.write_stats([stat(M0, "queued", 1, destination=n) for n in names])
    rows = await store.read_stats(StatsQuery(M0, M0 + 60))
    assert [r.destination for r in rows] == sorted(names)  # Python sorts by code point


async def test_retention_deletes_in_chunks_of_minutes(
    two: Pair,
) -> None:
    store, _ = two
    minutes = 2 * COMPACT_MINUTES + 7
    await store.write_stats([stat(M0 + 60 * i, "queued", 1) for i in range(minutes)])
    keep = 5
    assert await store.compact_stats(M0 + 60 * (minutes - keep)) == minutes - keep
    left = await store.read_stats(StatsQuery(M0, M0 + 60 * minutes))
    assert [r.minute for r in left] == [M0 + 60 * i for i in range(minutes - keep, minutes)]
    assert await store.compact_stats(M0 + 60 * minutes) == keep


async def test_a_site_and_range_read_uses_the_primary_key(pg_dsn: str) -> None:
    sql, args = read_stats_sql(StatsQuery(M0, M0 + 600, 60, "shop", "meta", ("queued",)))
    plan = await index_plan(pg_dsn, sql, *args)
    assert "stats_minute_pkey" in plan, plan


async def test_a_version_5_database_takes_its_pair_counters_as_the_reference(pg_dsn: str) -> None:
    """Duplicates counted before migration 6 (before any booking) are not booked; later ones
    are, once; a booking row someone deleted is put back (and the counters are the reference
    again)."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await migrate(conn, MIGRATIONS[:5]) == 5
        await conn.execute(
            "INSERT INTO dedup_counts(route, pair, n) VALUES ('shop:meta', 'api+loader', 7)"
        )
    finally:
        await conn.close()
    store = make(pg_dsn)
    await store.open()
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT max(version) FROM schema_version") == len(MIGRATIONS)
        assert await store.book_pairs(M0, M0 - 3600) == []
        bump = "UPDATE dedup_counts SET n = n + 1"
        await conn.execute(bump)
        row = stat(M0 + 60, "dedup_pair", 1, event="", detail="api+loader")
        assert await store.unbooked_pairs(M0 + 60, M0) == [row]
        assert await store.book_pairs(M0 + 60, M0) == [row]
        await conn.execute("DELETE FROM pairs_booked_at")
        await conn.execute(bump)
        assert await store.book_pairs(M0 + 120, M0) == []
        assert await conn.fetchval("SELECT minute FROM pairs_booked_at") == M0 + 120
        await conn.execute(bump)
        assert await store.book_pairs(M0 + 180, M0) == [
            stat(M0 + 180, "dedup_pair", 1, event="", detail="api+loader")
        ]
    finally:
        await conn.close()
        await store.close()
