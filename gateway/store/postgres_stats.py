"""Per-minute stats rollups of the PostgreSQL store (`StatsStore`, gateway/core/rollup.py).

Table ``stats_minute`` is the SQLite store's (gateway/store/sqlite_stats.py): one counter per
(site, destination, minute, event, metric, detail), the empty string standing for "not
applicable". A flush is ONE statement whatever its size: the rows travel as seven arrays,
are summed per key in the statement (an upsert may not touch one row twice) and added to the
stored counters with ``ON CONFLICT DO UPDATE SET value = value + excluded.value``, so flushes
of several replicas booking the same minute add up. The rows are upserted in key order, so two
replicas flushing overlapping keys lock them in the same order and never deadlock.

Reads group in the database and order by the key's bytes (``COLLATE "C"``), as SQLite does,
whatever the database's own collation. Retention deletes whole minutes, at most
`COMPACT_MINUTES` per statement, so a long backlog never holds many row locks at once.

The ``dedup_pair`` booking (`book_pairs`, migration 6, `PAIRS_BOOKED_SCHEMA`) keeps a copy of
the per-route pair counters (``dedup_counts``, which the append path keeps) as the last booking
read them in ``pairs_booked``, and that booking's minute in the one row of
``pairs_booked_at`` (NULL: none yet). A booking first locks that row (``SELECT … FOR UPDATE``):
replicas flushing together take turns, and each statement after the lock reads what the
previous booking committed (READ COMMITTED; under a stricter isolation the lock's conflict
aborts the transaction and `retrying` runs it again). It books the counters it read, so
increments committed meanwhile go with the next booking. The append path does not touch these
tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, Final

from gateway.core.rollup import StatRow, pair_rows
from gateway.store.base import StatsQuery
from gateway.store.postgres_conn import Conn, status_count
from gateway.store.postgres_tx import PgHost, retrying
from gateway.store.sql import BOOKED_MINUTE, DEDUP_COUNTS

STATS_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS stats_minute(
    site        text NOT NULL,
    destination text NOT NULL,
    minute      bigint NOT NULL,
    event       text NOT NULL,
    metric      text NOT NULL,
    detail      text NOT NULL,
    value       bigint NOT NULL,
    PRIMARY KEY(site, destination, minute, event, metric, detail)
);
CREATE INDEX IF NOT EXISTS stats_minute_time ON stats_minute(minute)
"""
"""The per-minute rollups (idempotent: a migration that may run again)."""

PAIRS_BOOKED_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS pairs_booked(
    route       text NOT NULL,
    pair        text NOT NULL,
    n           bigint NOT NULL,
    PRIMARY KEY(route, pair)
);
CREATE TABLE IF NOT EXISTS pairs_booked_at(
    id          integer PRIMARY KEY CHECK (id = 1),
    minute      bigint
);
INSERT INTO pairs_booked_at(id, minute) VALUES (1, NULL) ON CONFLICT (id) DO NOTHING;
"""
"""The ``dedup_pair`` booking's copy of the pair counters (idempotent)."""

COMPACT_MINUTES: Final = 60
"""Minutes deleted per retention statement."""

_UPSERT: Final = """
INSERT INTO stats_minute AS s(site, destination, minute, event, metric, detail, value)
SELECT r.site, r.destination, r.minute, r.event, r.metric, r.detail, sum(r.value)::bigint
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::bigint[]) AS r(minute, site, destination, event, metric, detail, value)
GROUP BY r.site, r.destination, r.minute, r.event, r.metric, r.detail
ORDER BY r.site, r.destination, r.minute, r.event, r.metric, r.detail
ON CONFLICT (site, destination, minute, event, metric, detail)
DO UPDATE SET value = s.value + excluded.value
"""

_BOOK_COPY: Final = """
INSERT INTO pairs_booked(route, pair, n)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
ON CONFLICT (route, pair) DO UPDATE SET n = excluded.n
"""

_DROP_COPY: Final = """
DELETE FROM pairs_booked b USING unnest($1::text[], $2::text[]) AS g(route, pair)
WHERE b.route = g.route AND b.pair = g.pair
"""

_LOCK_BOOKING: Final = BOOKED_MINUTE + " FOR UPDATE"

_KEY_ORDER: Final = (
    'slot, site COLLATE "C", destination COLLATE "C", event COLLATE "C", metric COLLATE "C",'
    ' detail COLLATE "C"'
)


def read_stats_sql(query: StatsQuery) -> tuple[str, list[Any]]:
    """The statement and arguments summing the query's range per step and key.

    The WHERE terms are constant text chosen by which filters are set (a handful of statement
    shapes, each prepared once per connection); every value is a bound argument.
    """
    where = ["minute >= $1", "minute < $2"]
    args: list[Any] = [query.start, query.end, query.step]
    if query.site is not None:
        args.append(query.site)
        where.append(f"site = ${len(args)}")
    if query.destination is not None:
        args.append(query.destination)
        where.append(f"destination IN (${len(args)}, '')")
    if query.metrics:
        args.append(list(query.metrics))
        where.append(f"metric = ANY(${len(args)}::text[])")
    sql = (
        "SELECT $1::bigint + ((minute - $1::bigint) / $3::bigint) * $3::bigint AS slot,"  # noqa: S608
        " site, destination, event, metric, detail, sum(value)::bigint FROM stats_minute"
        f" WHERE {' AND '.join(where)}"
        " GROUP BY slot, site, destination, event, metric, detail HAVING sum(value) <> 0"
        f" ORDER BY {_KEY_ORDER}"
    )
    return sql, args


Pairs = dict[tuple[str, str], int]


async def _pairs(conn: Conn, sql: str) -> Pairs:
    return {(r[0], r[1]): int(r[2]) for r in await conn.fetch(sql)}


async def _due(conn: Conn, *, stale_before: int, lock: bool) -> tuple[Pairs, Pairs, bool]:
    """The counters, the booked copy, and whether their difference is to be booked (a copy
    exists and is not stale). With `lock`, first wait for the booking row's lock."""
    select = _LOCK_BOOKING if lock else BOOKED_MINUTE
    found = await conn.fetchrow(select)
    if found is None and lock:  # the migration's row is gone: put it back
        await conn.execute(
            "INSERT INTO pairs_booked_at(id, minute) VALUES (1, NULL) ON CONFLICT (id) DO NOTHING"
        )
        found = await conn.fetchrow(select)
    at = None if found is None else found[0]
    live = at is not None and int(at) >= stale_before
    counts = await _pairs(conn, DEDUP_COUNTS)
    booked = await _pairs(conn, "SELECT route, pair, n FROM pairs_booked")
    return counts, booked, live


def _columns(rows: Sequence[Sequence[Any]], width: int) -> tuple[list[Any], ...]:
    columns: tuple[list[Any], ...] = tuple([] for _ in range(width))
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


async def book_pairs_tx(conn: Conn, *, minute: int, stale_before: int) -> list[StatRow]:
    """`StatsStore.book_pairs` inside the caller's transaction."""
    counts, booked, live = await _due(conn, stale_before=stale_before, lock=True)
    rows = pair_rows(counts, booked, minute) if live else []
    if rows:
        await conn.execute(_UPSERT, *_columns(rows, 7))
    changed = [(r, p, n) for (r, p), n in counts.items() if booked.get((r, p)) != n]
    if changed:
        await conn.execute(_BOOK_COPY, *_columns(changed, 3))
    gone = [key for key in booked if key not in counts]
    if gone:
        await conn.execute(_DROP_COPY, *_columns(gone, 2))
    await conn.execute(
        "UPDATE pairs_booked_at SET minute = greatest(coalesce(minute, $1::bigint), $1::bigint)"
        " WHERE id = 1",
        minute,
    )
    return rows


class PostgresStats:
    """`StatsStore` on PostgreSQL: a mixin of `PostgresStore`."""

    async def write_stats(self: PgHost, rows: Sequence[StatRow]) -> None:
        if not rows:
            return
        async with self._pool.acquire() as conn:
            await conn.execute(_UPSERT, *_columns(rows, 7))

    async def read_stats(self: PgHost, query: StatsQuery) -> list[StatRow]:
        if query.end <= query.start or query.step <= 0:
            return []
        sql, args = read_stats_sql(query)
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(sql, *args)
        return [StatRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]

    async def compact_stats(self: PgHost, before: int) -> int:
        """Delete the minutes before `before`, COMPACT_MINUTES per statement."""
        total = 0
        async with self._pool.acquire() as conn:
            while True:
                oldest = await conn.fetchval(
                    "SELECT min(minute) FROM stats_minute WHERE minute < $1", before
                )
                if oldest is None:
                    return total
                upto = min(before, int(oldest) + COMPACT_MINUTES * 60)
                status = await conn.execute("DELETE FROM stats_minute WHERE minute < $1", upto)
                total += status_count(status)
                if upto >= before:
                    return total

    async def book_pairs(self: PgHost, minute: int, stale_before: int) -> list[StatRow]:
        return await retrying(
            self._tx, partial(book_pairs_tx, minute=minute, stale_before=stale_before)
        )

    async def unbooked_pairs(self: PgHost, minute: int, stale_before: int) -> list[StatRow]:
        async with (
            self._pool.acquire() as conn,
            # one snapshot: the copy and the counters read agree
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            counts, booked, live = await _due(conn, stale_before=stale_before, lock=False)
        return pair_rows(counts, booked, minute) if live else []
