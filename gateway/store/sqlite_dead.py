"""Dead-letter transactions of the SQLite store: evidence, the filtered listing and replay.

Table ``dead_letters`` (schema version 7) keeps, for each dead ``deliveries`` row, what the
worker knew when it gave the row up: the platform's HTTP status (NULL when the gateway's own
check refused the event unsent), a bounded excerpt of the platform's error for that event and
the request body the destination built for that one event. The body is stored at dead time
rather than rebuilt from the record at listing time: it is then exactly what was sent, whatever
the destination's settings (API version, hashing rules, field mapping) have become since, and
the listing needs no destination objects. It holds hashed identifiers only (raw PII never
reaches the store) and no token (tokens travel in headers or the query string, never the body).

A partial index on ``(route, id) WHERE state = 'dead'`` holds the dead rows only: the listing
and the replay page through it in id order without visiting the delivered backlog, and rows in
other states cost it nothing.

Replay makes rows pending again exactly as `append` creates them (attempts 0, ``not_before`` 0,
so the next lease of the route takes them first in id order) and deletes their evidence. Only
rows that are dead *now* change, so replaying a row that was delivered since sends nothing.
Rows dead for consent or erasure are never revived (`NOT_REPLAYABLE`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, Final

from gateway.core.jsoncodec import dumps
from gateway.store.base import (
    NOT_REPLAYABLE,
    DeadEvidence,
    DeadLetter,
    DeadPage,
    DeadQuery,
    DeliveryInfo,
    DeliveryState,
    ReplayResult,
    ReplaySelection,
)
from gateway.store.sqlite_host import SqliteHost

DEAD_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS dead_letters(
    delivery_id INTEGER PRIMARY KEY,
    status      INTEGER,
    answer      TEXT NOT NULL,
    payload     BLOB
);
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries(route, id) WHERE state = 'dead'
"""
"""Schema version 7 (migration 6): dead-letter evidence and the index of dead rows."""

MAX_ANSWER: Final = 1000
"""Characters of the platform's error kept per dead letter."""
MAX_PAYLOAD: Final = 65536
"""Bytes of the request body kept per dead letter (one event's body is far smaller)."""

_CODE: Final = (
    "CASE WHEN instr(d.reason, ':') > 0 THEN substr(d.reason, 1, instr(d.reason, ':') - 1)"
    " ELSE d.reason END"
)
"""The DeadReason value of a dead row (`reason` holds "<value>: <detail>" or "<value>")."""

_REPLAYABLE: Final = f"{_CODE} NOT IN ({', '.join(repr(str(r)) for r in sorted(NOT_REPLAYABLE))})"


def mark_dead_tx(
    conn: sqlite3.Connection,
    *,
    ids: Sequence[int],
    text: str,
    now: float,
    evidence: Mapping[int, DeadEvidence],
) -> None:
    """Give the leased rows up (others are left alone) and keep their evidence."""
    conn.executemany(
        "UPDATE deliveries SET state = 'dead', not_before = ?, lease_until = NULL,"
        " reason = ?, updated_at = ? WHERE id = ? AND state = 'leased'",
        [(now, text, now, i) for i in ids],
    )
    kept = [
        (i, e.status, e.answer[:MAX_ANSWER], None if e.payload is None else e.payload[:MAX_PAYLOAD])
        for i, e in evidence.items()
    ]
    if kept:
        conn.executemany(
            "INSERT OR REPLACE INTO dead_letters(delivery_id, status, answer, payload)"
            " SELECT ?1, ?2, ?3, ?4 WHERE EXISTS"
            " (SELECT 1 FROM deliveries WHERE id = ?1 AND state = 'dead')",
            kept,
        )


_PAGE: Final = (
    "SELECT d.id, d.route, e.event_name, e.event_id, d.state, d.attempts, d.reason,"
    " d.updated_at, e.event_time, x.delivery_id, x.status, x.answer, x.payload"
    " FROM deliveries d JOIN events e ON e.id = d.event_ref"
    " LEFT JOIN dead_letters x ON x.delivery_id = d.id"
)


def _filters(
    route: str | None, reason: str | None, since: float | None
) -> tuple[list[str], dict[str, Any]]:
    """Return WHERE terms and their parameters. The terms are constant SQL text (the queries
    join them); every value is a bound parameter, never part of the text."""
    where = ["d.state = 'dead'"]
    params: dict[str, Any] = {}
    if route is not None:
        where.append("d.route = :route")
        params["route"] = route
    if reason is not None:
        where.append(f"{_CODE} = :reason")
        params["reason"] = reason
    if since is not None:
        where.append("d.not_before >= :since")
        params["since"] = since
    return where, params


def dead_page_tx(conn: sqlite3.Connection, *, query: DeadQuery) -> DeadPage:
    """One page of dead letters with their evidence, in id order (ids above `query.after`)."""
    where, params = _filters(query.route, query.reason, query.since)
    where.append("d.id > :after")
    params.update(after=query.after, limit=query.limit + 1)
    sql = _PAGE + f" WHERE {' AND '.join(where)} ORDER BY d.id LIMIT :limit"
    rows = conn.execute(sql, params).fetchall()
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    letters = tuple(
        DeadLetter(
            info=DeliveryInfo(
                id=r[0],
                route=r[1],
                event_name=r[2],
                event_id=r[3],
                state=DeliveryState(r[4]),
                attempts=r[5],
                reason=r[6],
                updated_at=r[7],
            ),
            event_time=r[8],
            evidence=None
            if r[9] is None
            else DeadEvidence(
                status=r[10], answer=r[11], payload=None if r[12] is None else bytes(r[12])
            ),
        )
        for r in rows
    )
    return DeadPage(letters, letters[-1].info.id if more and letters else None)


def replay_tx(conn: sqlite3.Connection, *, selection: ReplaySelection, now: float) -> ReplayResult:
    """Make the selected replayable dead rows pending again; see the module docstring."""
    where, params = _filters(selection.route, selection.reason, None)
    where.append(_REPLAYABLE)
    if selection.ids is not None:
        where.append("d.id IN (SELECT value FROM json_each(:ids))")
        params["ids"] = dumps(sorted(set(selection.ids))).decode()
    else:
        where.append("d.id > :after")
        params["after"] = selection.after
    condition = " AND ".join(where)
    ids = [
        row[0]
        for row in conn.execute(
            f"SELECT d.id FROM deliveries d WHERE {condition} ORDER BY d.id LIMIT :limit",  # noqa: S608
            {**params, "limit": selection.limit if selection.ids is None else -1},
        )
    ]
    if ids:
        id_list = dumps(ids).decode()
        conn.execute(
            "UPDATE deliveries SET state = 'pending', attempts = 0, not_before = 0,"
            " lease_until = NULL, reason = 'replayed', updated_at = ?1"
            " WHERE id IN (SELECT value FROM json_each(?2)) AND state = 'dead'",
            (now, id_list),
        )
        conn.execute(
            "DELETE FROM dead_letters WHERE delivery_id IN (SELECT value FROM json_each(?))",
            (id_list,),
        )
    if selection.ids is not None:
        asked = len(set(selection.ids))
        last = max(selection.ids, default=None)
        return ReplayResult(replayed=len(ids), skipped=asked - len(ids), last_id=last, remaining=0)
    last_id = ids[-1] if ids else None
    params["after"] = last_id if last_id is not None else selection.after
    (remaining,) = conn.execute(
        f"SELECT count(*) FROM deliveries d WHERE {condition}",  # noqa: S608 - see _filters
        params,
    ).fetchone()
    return ReplayResult(replayed=len(ids), skipped=0, last_id=last_id, remaining=int(remaining))


def erase_dead_tx(conn: sqlite3.Connection, *, event_ref: int, text: str, now: float) -> None:
    """Erasure: the event's dead rows become `erased` (never replayed: their record is gone)
    and lose their evidence, whose payload holds the event's hashed identifiers."""
    conn.execute(
        "UPDATE deliveries SET reason = ?, updated_at = ? WHERE event_ref = ? AND state = 'dead'",
        (text, now, event_ref),
    )
    conn.execute(
        "DELETE FROM dead_letters WHERE delivery_id IN"
        " (SELECT id FROM deliveries WHERE event_ref = ?)",
        (event_ref,),
    )


class SqliteDeadLetters:
    """`DeadLetterStore` on SQLite: a mixin of `SqliteStore`."""

    async def dead_page(self: SqliteHost, query: DeadQuery) -> DeadPage:
        if query.limit <= 0:
            return DeadPage((), None)
        return await self._read(partial(dead_page_tx, query=query))

    async def replay(self: SqliteHost, selection: ReplaySelection, now: float) -> ReplayResult:
        return await self._write(partial(replay_tx, selection=selection, now=now))
