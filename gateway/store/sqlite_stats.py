"""Per-minute stats rollups of the SQLite store (schema version 8).

Table ``stats_minute`` holds one counter per (site, destination, minute, event, metric,
detail): the increase of one live counter over one minute (gateway/core/rollup.py says what
each metric's columns hold; the empty string stands for "not applicable"). A flush adds to the
counters (an upsert), so two flushes booking the same minute, e.g. around a restart, add up.

The primary key leads with (site, destination, minute), so a dashboard read of one site and
destination over a time range is one index range per destination (and one for the site-wide
rows, destination ""); the index on ``minute`` serves reads of every site and the retention
compaction, which deletes whole minutes in chunks so a long backlog never holds the writer
long.

Schema version 12 adds the ``dedup_pair`` booking (`book_pairs_tx`): ``pairs_booked`` is the
copy of the per-route pair counters (``dedup_counts``, which the append path keeps) as the last
booking read them, ``pairs_booked_at`` the minute of that booking (no row: none yet). A booking
runs in the writer's ``BEGIN IMMEDIATE`` transaction, so the processes of `run --workers N` on
one file take turns: the first to flush after a duplicate books it, the others find the copy
equal to the counters. The append path does not touch these tables.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from functools import partial
from typing import Any, Final

from gateway.core.rollup import StatRow, pair_rows
from gateway.store.base import StatsQuery
from gateway.store.sql import BOOKED_MINUTE
from gateway.store.sqlite_host import SqliteHost

STATS_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS stats_minute(
    site        TEXT NOT NULL,
    destination TEXT NOT NULL,
    minute      INTEGER NOT NULL,
    event       TEXT NOT NULL,
    metric      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    value       INTEGER NOT NULL,
    PRIMARY KEY(site, destination, minute, event, metric, detail)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS stats_minute_time ON stats_minute(minute)
"""
"""Schema version 8 (migration 7): the per-minute stats rollups."""

PAIRS_BOOKED_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS pairs_booked(
    route       TEXT NOT NULL,
    pair        TEXT NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY(route, pair)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pairs_booked_at(
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    minute      INTEGER NOT NULL
)
"""
"""Schema version 12 (migration 11): the ``dedup_pair`` booking's copy of the pair counters."""

COMPACT_MINUTES: Final = 60
"""Minutes deleted per compaction transaction."""

_UPSERT: Final = (
    "INSERT INTO stats_minute(site, destination, minute, event, metric, detail, value)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT(site, destination, minute, event, metric, detail)"
    " DO UPDATE SET value = value + excluded.value"
)


def write_stats_tx(conn: sqlite3.Connection, *, rows: Sequence[StatRow]) -> None:
    """Add every row to its counter."""
    conn.executemany(
        _UPSERT,
        [(r.site, r.destination, r.minute, r.event, r.metric, r.detail, r.value) for r in rows],
    )


def read_stats_tx(conn: sqlite3.Connection, *, query: StatsQuery) -> list[StatRow]:
    """Sum the rows of the range per step and key."""
    where = ["minute >= :start", "minute < :end"]
    params: dict[str, Any] = {"start": query.start, "end": query.end, "step": query.step}
    if query.site is not None:
        where.append("site = :site")
        params["site"] = query.site
    if query.destination is not None:
        where.append("destination IN (:destination, '')")
        params["destination"] = query.destination
    if query.metrics:
        names = [f":metric{i}" for i in range(len(query.metrics))]
        where.append(f"metric IN ({', '.join(names)})")
        params.update((name[1:], metric) for name, metric in zip(names, query.metrics, strict=True))
    # The WHERE terms are constant text; every value is a bound parameter.
    sql = (
        "SELECT :start + ((minute - :start) / :step) * :step AS slot, site, destination, event,"  # noqa: S608
        " metric, detail, sum(value) FROM stats_minute"
        f" WHERE {' AND '.join(where)}"
        " GROUP BY slot, site, destination, event, metric, detail HAVING sum(value) != 0"
        " ORDER BY slot, site, destination, event, metric, detail"
    )
    return [StatRow(*row) for row in conn.execute(sql, params)]


def compact_stats_tx(conn: sqlite3.Connection, *, before: int) -> tuple[int, bool]:
    """Delete up to COMPACT_MINUTES minutes older than `before`; return (rows, more left)."""
    (oldest,) = conn.execute(
        "SELECT min(minute) FROM stats_minute WHERE minute < ?", (before,)
    ).fetchone()
    if oldest is None:
        return 0, False
    upto = min(before, oldest + COMPACT_MINUTES * 60)
    deleted = conn.execute("DELETE FROM stats_minute WHERE minute < ?", (upto,)).rowcount
    return deleted, upto < before


Pairs = dict[tuple[str, str], int]


def _pairs(conn: sqlite3.Connection, table: str) -> Pairs:
    # `table` is one of two constant names, never input.
    sql = f"SELECT route, pair, n FROM {table}"  # noqa: S608
    return {(route, pair): n for route, pair, n in conn.execute(sql)}


def _due(conn: sqlite3.Connection, *, minute: int, stale_before: int) -> tuple[Pairs, Pairs, bool]:
    """The counters, the booked copy, and whether their difference is to be booked (a copy
    exists and is not stale)."""
    found = conn.execute(BOOKED_MINUTE).fetchone()
    live = found is not None and found[0] >= stale_before
    return _pairs(conn, "dedup_counts"), _pairs(conn, "pairs_booked"), live


def book_pairs_tx(conn: sqlite3.Connection, *, minute: int, stale_before: int) -> list[StatRow]:
    """Book the pair counters' increase since the copy as ``dedup_pair`` rows of `minute`
    and keep the counters as the new copy (`StatsStore.book_pairs`); return the rows."""
    counts, booked, live = _due(conn, minute=minute, stale_before=stale_before)
    rows = pair_rows(counts, booked, minute) if live else []
    write_stats_tx(conn, rows=rows)
    conn.executemany(
        "INSERT INTO pairs_booked(route, pair, n) VALUES (?, ?, ?)"
        " ON CONFLICT(route, pair) DO UPDATE SET n = excluded.n",
        [(route, pair, n) for (route, pair), n in counts.items() if booked.get((route, pair)) != n],
    )
    conn.executemany(
        "DELETE FROM pairs_booked WHERE route = ? AND pair = ?",
        [key for key in booked if key not in counts],
    )
    conn.execute(
        "INSERT INTO pairs_booked_at(id, minute) VALUES (1, ?)"
        " ON CONFLICT(id) DO UPDATE SET minute = max(minute, excluded.minute)",
        (minute,),
    )
    return rows


def unbooked_pairs_tx(conn: sqlite3.Connection, *, minute: int, stale_before: int) -> list[StatRow]:
    """The rows `book_pairs_tx` would add now (a read)."""
    counts, booked, live = _due(conn, minute=minute, stale_before=stale_before)
    return pair_rows(counts, booked, minute) if live else []


class SqliteStats:
    """`StatsStore` on SQLite: a mixin of `SqliteStore`."""

    async def write_stats(self: SqliteHost, rows: Sequence[StatRow]) -> None:
        if rows:
            await self._write(partial(write_stats_tx, rows=tuple(rows)))

    async def read_stats(self: SqliteHost, query: StatsQuery) -> list[StatRow]:
        if query.end <= query.start or query.step <= 0:
            return []
        return await self._read(partial(read_stats_tx, query=query))

    async def compact_stats(self: SqliteHost, before: int) -> int:
        total = 0
        while True:
            deleted, more = await self._write(partial(compact_stats_tx, before=before))
            total += deleted
            if not more:
                return total

    async def book_pairs(self: SqliteHost, minute: int, stale_before: int) -> list[StatRow]:
        return await self._write(partial(book_pairs_tx, minute=minute, stale_before=stale_before))

    async def unbooked_pairs(self: SqliteHost, minute: int, stale_before: int) -> list[StatRow]:
        return await self._read(
            partial(unbooked_pairs_tx, minute=minute, stale_before=stale_before)
        )
