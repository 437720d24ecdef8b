"""The SQLite outbox's transactions after the append: lease, mark, release, compact, reads.

Each function runs inside the writer's transaction or the reader's snapshot (see
gateway/store/sqlite_writer.py) and relies on the one ``(route, state, not_before)`` index that
the state machine of gateway/store/sqlite.py describes; the heartbeat `_ping_tx` and the
recovery `_probe_tx` are the store's readiness writes.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Sequence
from typing import Any, Final

from gateway.store.base import Backlog, Delivery, DeliveryInfo, DeliveryState
from gateway.store.sql import DELIVERY_INFO, ROUTES
from gateway.store.sqlite_orders import keep_done_orders_tx

_LEASE_CANDIDATES: Final = """
SELECT id FROM (
    SELECT id FROM deliveries
    WHERE route = :route AND state = 'pending' AND not_before <= :now
    ORDER BY not_before, id LIMIT :limit)
UNION ALL
SELECT id FROM (
    SELECT id FROM deliveries
    WHERE route = :route AND state = 'retry' AND not_before <= :now
    ORDER BY not_before, id LIMIT :limit)
UNION ALL
SELECT id FROM (
    SELECT id FROM deliveries
    WHERE route = :route AND state = 'leased' AND not_before <= :now
    ORDER BY not_before, id LIMIT :limit)
ORDER BY id LIMIT :limit
"""

_RECENT: Final = DELIVERY_INFO + "ORDER BY d.updated_at DESC, d.id DESC LIMIT ?"
_RECENT_ROUTE: Final = (
    DELIVERY_INFO + "WHERE d.route = ? ORDER BY d.updated_at DESC, d.id DESC LIMIT ?"
)
_DEAD_LETTERS: Final = (
    DELIVERY_INFO
    + "WHERE d.route = ? AND d.state = 'dead' ORDER BY d.not_before DESC, d.id DESC LIMIT ?"
)


def _ping_tx(conn: sqlite3.Connection, *, now: float) -> None:
    conn.execute(
        "INSERT INTO heartbeat(id, at) VALUES (1, ?)"
        " ON CONFLICT(id) DO UPDATE SET at = excluded.at",
        (now,),
    )


PROBE_MAX_BYTES: Final = 8 << 20
"""Largest blob the recovery probe writes (`_probe_tx`)."""


def _probe_tx(conn: sqlite3.Connection, *, now: float) -> None:
    """`_ping_tx`, and grow the file past its free pages by two pages, then free them: fails
    with SQLITE_FULL / a disk I/O error while the store cannot grow (the pages stay free for
    the next appends once it can)."""
    _ping_tx(conn, now=now)
    (free,) = conn.execute("PRAGMA freelist_count").fetchone()
    (page,) = conn.execute("PRAGMA page_size").fetchone()
    size = min(PROBE_MAX_BYTES, (int(free) + 2) * int(page))
    row = conn.execute(
        "INSERT INTO events(site, event_name, event_id, event_time, record, created_at)"
        " VALUES ('', '', '', 0, zeroblob(?), 0)",
        (size,),
    ).lastrowid
    conn.execute("DELETE FROM events WHERE id = ?", (row,))


def _lease_tx(
    conn: sqlite3.Connection, *, route: str, limit: int, now: float, until: float
) -> list[Delivery]:
    ids = [
        row[0]
        for row in conn.execute(_LEASE_CANDIDATES, {"route": route, "limit": limit, "now": now})
    ]
    if not ids:
        return []
    id_list = json.dumps(ids)
    conn.execute(
        "UPDATE deliveries SET state = 'leased', not_before = ?1, lease_until = ?1,"
        " updated_at = ?2 WHERE id IN (SELECT value FROM json_each(?3))",
        (until, now, id_list),
    )
    rows = conn.execute(
        "SELECT d.id, d.route, e.event_name, e.event_id, e.event_time, e.record, d.attempts,"
        " e.created_at FROM deliveries d JOIN events e ON e.id = d.event_ref"
        " WHERE d.id IN (SELECT value FROM json_each(?)) ORDER BY d.id",
        (id_list,),
    )
    return [
        Delivery(
            id=r[0],
            route=r[1],
            event_name=r[2],
            event_id=r[3],
            event_time=r[4],
            record=bytes(r[5]),
            attempts=r[6],
            created_at=r[7],
        )
        for r in rows
    ]


def _release_waiting_tx(conn: sqlite3.Connection, *, route: str, now: float) -> int:
    # One statement, a range of the (route, state, not_before) index.
    cur = conn.execute(
        "UPDATE deliveries SET not_before = ?1 WHERE route = ?2 AND state = 'retry'"
        " AND not_before > ?1",
        (now, route),
    )
    return cur.rowcount


def _mark_tx(conn: sqlite3.Connection, *, sql: str, rows: list[tuple[object, ...]]) -> None:
    conn.executemany(sql, rows)


def _compact_tx(conn: sqlite3.Connection, *, done_cutoff: float, budget: int) -> tuple[int, bool]:
    """Delete up to `budget` done rows; return (rows deleted, whether more may be left)."""
    deleted = 0
    routes = [row[0] for row in conn.execute(ROUTES)]
    for route in routes:
        rows = conn.execute(
            "SELECT id, event_ref FROM deliveries"
            " WHERE route = ? AND state = 'done' AND not_before < ? ORDER BY not_before LIMIT ?",
            (route, done_cutoff, budget - deleted),
        ).fetchall()
        if not rows:
            continue
        keep_done_orders_tx(conn, route=route, event_refs=[r[1] for r in rows])
        conn.executemany("DELETE FROM deliveries WHERE id = ?", [(r[0],) for r in rows])
        conn.execute(
            "INSERT INTO compacted_counts(route, state, n) VALUES (?, 'done', ?)"
            " ON CONFLICT(route, state) DO UPDATE SET n = n + excluded.n",
            (route, len(rows)),
        )
        conn.executemany(
            "DELETE FROM events WHERE id = ?1"
            " AND NOT EXISTS (SELECT 1 FROM deliveries WHERE event_ref = ?1)",
            [(ref,) for ref in sorted({r[1] for r in rows})],
        )
        deleted += len(rows)
        if deleted >= budget:
            return deleted, True
    return deleted, False


def _counts_tx(conn: sqlite3.Connection) -> dict[tuple[str, DeliveryState], int]:
    counts: dict[tuple[str, DeliveryState], int] = {}
    rows = itertools.chain(
        conn.execute("SELECT route, state, count(*) FROM deliveries GROUP BY route, state"),
        conn.execute("SELECT route, state, n FROM compacted_counts"),
    )
    for route, state, n in rows:
        key = (route, DeliveryState(state))
        counts[key] = counts.get(key, 0) + n
    return {key: n for key, n in counts.items() if n}


_BACKLOG: Final = (
    "SELECT count(*), min(id) FROM (SELECT id FROM deliveries"
    " WHERE route = ? AND state IN ('pending', 'leased', 'retry') LIMIT ?)"
)
"""Waiting rows of a route, read through the (route, state, …) index and capped."""


def _backlog_tx(
    conn: sqlite3.Connection, *, routes: tuple[str, ...], limit: int
) -> dict[str, Backlog]:
    out: dict[str, Backlog] = {}
    for route in routes:
        depth, first = conn.execute(_BACKLOG, (route, limit)).fetchone()
        oldest = None
        if first is not None:
            (oldest,) = conn.execute(
                "SELECT e.created_at FROM deliveries d JOIN events e ON e.id = d.event_ref"
                " WHERE d.id = ?",
                (first,),
            ).fetchone()
        out[route] = Backlog(depth, oldest)
    return out


def _info(row: Sequence[Any]) -> DeliveryInfo:
    return DeliveryInfo(
        id=row[0],
        route=row[1],
        event_name=row[2],
        event_id=row[3],
        state=DeliveryState(row[4]),
        attempts=row[5],
        reason=row[6],
        updated_at=row[7],
    )


def _recent_tx(conn: sqlite3.Connection, *, limit: int, route: str | None) -> list[DeliveryInfo]:
    if route is None:
        rows = conn.execute(_RECENT, (limit,))
    else:
        rows = conn.execute(_RECENT_ROUTE, (route, limit))
    return [_info(row) for row in rows]


def _dead_letters_tx(conn: sqlite3.Connection, *, route: str, limit: int) -> list[DeliveryInfo]:
    return [_info(row) for row in conn.execute(_DEAD_LETTERS, (route, limit))]
