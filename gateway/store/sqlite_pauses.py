"""Shared resumes of the SQLite store (`PauseStore`, schema version 13).

Table ``route_resumes`` holds one row per route: when an operator last lifted the route's
credentials pause (``POST /v1/admin/resume``). The processes of `run --workers N` share the
file, so the worker that took the request records the resume and every other worker, whose
paused route polls `resumed_since` (gateway/delivery/resuming.py), lifts its own pause too.
A resume is an upsert that keeps the later time (newest wins, so a late write of an older
resume never hides a newer one). The table never grows past the number of routes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Final

from gateway.store.sqlite_host import SqliteHost

PAUSES_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS route_resumes(
    route       TEXT PRIMARY KEY,
    resumed_at  REAL NOT NULL
) WITHOUT ROWID
"""
"""Schema version 13 (migration 12): the last operator resume of each route."""


def lift_pause_tx(conn: sqlite3.Connection, *, route: str, now: float) -> None:
    """Record that `route` was resumed at `now`, unless a later resume is recorded."""
    conn.execute(
        "INSERT INTO route_resumes(route, resumed_at) VALUES (?, ?)"
        " ON CONFLICT(route) DO UPDATE SET resumed_at = max(resumed_at, excluded.resumed_at)",
        (route, now),
    )


def resumed_since_tx(
    conn: sqlite3.Connection, *, routes: tuple[str, ...], since: float
) -> dict[str, float]:
    """The routes of `routes` resumed after `since`, with the time of their last resume."""
    marks = ", ".join("?" * len(routes))
    # `marks` is placeholders only; every value is a bound parameter.
    sql = (
        "SELECT route, resumed_at FROM route_resumes"  # noqa: S608
        f" WHERE route IN ({marks}) AND resumed_at > ?"
    )
    return {route: at for route, at in conn.execute(sql, (*routes, since))}


class SqlitePauses:
    """`PauseStore` on SQLite: a mixin of `SqliteStore`."""

    async def lift_pause(self: SqliteHost, route: str, now: float) -> None:
        await self._write(partial(lift_pause_tx, route=route, now=now))

    async def resumed_since(
        self: SqliteHost, routes: Sequence[str], since: float
    ) -> Mapping[str, float]:
        if not routes:
            return {}
        return await self._read(partial(resumed_since_tx, routes=tuple(routes), since=since))
