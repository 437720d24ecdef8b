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
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final

from gateway.core.rollup import StatRow
from gateway.store.base import StatsQuery

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
