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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from gateway.core.rollup import StatRow
from gateway.store.base import StatsQuery
from gateway.store.postgres_conn import status_count
from gateway.store.postgres_tx import PgHost

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


class PostgresStats:
    """`StatsStore` on PostgreSQL: a mixin of `PostgresStore`."""

    async def write_stats(self: PgHost, rows: Sequence[StatRow]) -> None:
        if not rows:
            return
        columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [])
        for row in rows:
            for column, value in zip(columns, row, strict=True):
                column.append(value)
        async with self._pool.acquire() as conn:
            await conn.execute(_UPSERT, *columns)

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
