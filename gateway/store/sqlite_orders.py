"""The order ledger of the SQLite store (schema version 8): the conversion gap's memory.

Table ``order_ledger`` holds one row per backend order event and route of its site, written in
the same transaction as the event's append (`record_orders_tx`), with the route's fate on the
request path (gateway/core/orders.py: sent, consent_denied, routed_away). A sent row points at
the event row that holds its delivery (``event_ref``: the event itself, or the earlier copy it
was deduplicated into, found through the dedup key), so `order_rows_tx` reads the delivery's
state with one indexed join. ``paired`` is set when a browser copy of the same event meets it
in the dedup table, in either order of arrival (`gateway.store.sqlite._merge_duplicates`
reports both).

The ledger keeps the order id and event id, the event's name and time and three flags (hashed
e-mail present, value present, currency present): no identifier of the buyer. When compaction
deletes a delivered row, its ledger rows keep the delivery time (``done_at``,
`keep_done_orders_tx`), so the gap outlives the debug window of delivered rows. Ledger rows
live as long as the outbox remembers an event (the longer of the dedup window and the
delivered rows' window: `expire_orders_tx`, run by `compact`), and an erasure deletes the rows
of every order whose event it erased (`erase_orders_tx`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from typing import Final

from gateway.core.jsoncodec import dumps
from gateway.core.orders import OrderEntry, OrderRow

ORDERS_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS order_ledger(
    site         TEXT NOT NULL,
    order_id     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    route        TEXT NOT NULL,
    event_name   TEXT NOT NULL,
    event_time   REAL NOT NULL,
    fate         TEXT NOT NULL,
    event_ref    INTEGER,
    paired       INTEGER NOT NULL DEFAULT 0,
    has_email    INTEGER NOT NULL,
    has_value    INTEGER NOT NULL,
    has_currency INTEGER NOT NULL,
    done_at      REAL,
    created_at   REAL NOT NULL,
    PRIMARY KEY(site, order_id, event_id, route)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS order_ledger_time ON order_ledger(site, event_time);
CREATE INDEX IF NOT EXISTS order_ledger_ref ON order_ledger(event_ref) WHERE event_ref IS NOT NULL;
CREATE INDEX IF NOT EXISTS order_ledger_created ON order_ledger(created_at)
"""
"""Schema version 8 (migration 7): the order ledger."""

EXPIRE_CHUNK: Final = 1000
"""Ledger rows deleted per retention transaction."""

_INSERT: Final = (
    "INSERT OR IGNORE INTO order_ledger(site, order_id, event_id, route, event_name, event_time,"
    " fate, event_ref, paired, has_email, has_value, has_currency, created_at)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, CASE WHEN ?7 = 'sent' THEN (SELECT event_ref FROM dedup"
    " WHERE route = ?4 AND event_name = ?5 AND event_id = ?3) END, ?8, ?9, ?10, ?11, ?12)"
)
"""A sent row points at the event its route's dedup key names: the event itself, or the earlier
copy it was deduplicated into (which holds the route's delivery)."""


def record_orders_tx(
    conn: sqlite3.Connection,
    *,
    orders: Sequence[OrderEntry],
    now: float,
    paired: Collection[tuple[str, str, str]] = (),
) -> None:
    """Write the ledger rows, after the append in the same transaction. `paired` holds the
    (route, event name, event id) keys the append found held by a browser copy."""
    conn.executemany(
        _INSERT,
        [
            (
                o.site,
                o.order_id,
                o.event_id,
                o.route,
                o.event_name,
                o.event_time,
                o.fate.value,
                int((o.route, o.event_name, o.event_id) in paired),
                int(o.has_email),
                int(o.has_value),
                int(o.has_currency),
                now,
            )
            for o in orders
        ],
    )


def mark_paired_tx(conn: sqlite3.Connection, *, event_ref: int, route: str) -> None:
    """A browser copy was deduplicated into the event `event_ref` on `route`."""
    conn.execute(
        "UPDATE order_ledger SET paired = 1 WHERE event_ref = ? AND route = ? AND paired = 0",
        (event_ref, route),
    )


_ROWS: Final = (
    "SELECT l.order_id, l.event_id, l.route, l.fate, l.event_time, l.has_email, l.has_value,"
    " l.has_currency, l.paired, coalesce(d.state, CASE WHEN l.done_at IS NOT NULL THEN 'done' END),"
    " d.attempts, d.not_before, d.reason, coalesce(d.updated_at, l.done_at)"
    " FROM order_ledger l"
    " LEFT JOIN deliveries d ON d.event_ref = l.event_ref AND d.route = l.route"
    " WHERE l.site = ? AND l.event_time >= ? AND l.event_time < ?"
    " ORDER BY l.event_time, l.order_id, l.event_id, l.route LIMIT ?"
)


def order_rows_tx(
    conn: sqlite3.Connection, *, site: str, since: float, until: float, limit: int
) -> list[OrderRow]:
    """The ledger rows of a site's order events timed in [since, until), with their delivery
    rows' state, oldest first, at most `limit`."""
    return [
        OrderRow(
            order_id=r[0],
            event_id=r[1],
            route=r[2],
            fate=r[3],
            event_time=r[4],
            has_email=bool(r[5]),
            has_value=bool(r[6]),
            has_currency=bool(r[7]),
            paired=bool(r[8]),
            state=r[9],
            attempts=r[10] or 0,
            not_before=r[11] or 0.0,
            reason=r[12],
            updated_at=r[13] or 0.0,
        )
        for r in conn.execute(_ROWS, (site, since, until, limit))
    ]


def keep_done_orders_tx(conn: sqlite3.Connection, *, route: str, event_refs: Sequence[int]) -> None:
    """Compaction is about to delete these delivered rows of `route`: their orders keep the
    time of delivery (`done_at`), so the gap still counts them delivered afterwards."""
    conn.execute(
        "UPDATE order_ledger SET done_at = (SELECT d.not_before FROM deliveries d"
        " WHERE d.event_ref = order_ledger.event_ref AND d.route = order_ledger.route"
        " AND d.state = 'done')"
        " WHERE event_ref IN (SELECT value FROM json_each(?1)) AND route = ?2",
        (dumps(sorted(set(event_refs))).decode(), route),
    )


def expire_orders_tx(conn: sqlite3.Connection, *, cutoff: float) -> tuple[int, bool]:
    """Delete up to EXPIRE_CHUNK ledger rows written before `cutoff`; return (deleted, more)."""
    deleted = conn.execute(
        "DELETE FROM order_ledger WHERE (site, order_id, event_id, route) IN"
        " (SELECT site, order_id, event_id, route FROM order_ledger WHERE created_at < ? LIMIT ?)",
        (cutoff, EXPIRE_CHUNK),
    ).rowcount
    return deleted, deleted >= EXPIRE_CHUNK


def erase_orders_tx(conn: sqlite3.Connection, *, event_ref: int) -> None:
    """Erasure: delete every ledger row of the orders whose event `event_ref` holds."""
    conn.execute(
        "DELETE FROM order_ledger WHERE (site, order_id) IN"
        " (SELECT site, order_id FROM order_ledger WHERE event_ref = ?)",
        (event_ref,),
    )
