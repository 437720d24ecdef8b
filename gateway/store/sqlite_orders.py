"""The order ledger of the SQLite store (schema version 10): the conversion gap's memory.

Table ``order_ledger`` holds ONE row per backend order event (`gateway.core.orders.OrderEntry`),
written in the same transaction as the event's append (`record_orders_tx`): the site's routes
at that moment (``routes``, a JSON array), the routes that were not sent with their fate
(``unsent``, a JSON object, NULL when every route was sent: the usual case), the order id and
event id, the event's name and time and three flags (hashed e-mail present, value present,
currency present): no identifier of the buyer. So an order costs one row (a table append and
two index entries) whatever the number of destinations; version 8 wrote one row per route.

`order_rows_tx` expands a row into one `OrderRow` per route. A sent route's delivery is the
event's own delivery row for that route (``event_ref``: the event's own row, NULL when it was
deduplicated on every route) or else, when the event was deduplicated into an earlier copy,
the delivery row of the event its route's dedup key (route, event name, event id) names.

Three rarer writes find a ledger row by its event's key (site, event id, event name), through
the unique index: ``paired`` (the routes on which a browser copy of the same event met it in
the dedup table, in either order of arrival: `gateway.store.sqlite_append._merge_duplicates` reports
both), ``done`` (when compaction deletes a delivered row, the ledger keeps the delivery time
per route, `keep_done_orders_tx`, so the gap outlives the debug window of delivered rows) and
erasure (`erase_orders_tx` deletes the rows of every order whose event it erased). Rows live
as long as the outbox remembers an event (the longer of the dedup window and the delivered
rows' window: `expire_orders_tx`, run by `compact`, walks the rows in write order).

`LEDGER_V8_SCHEMA` is the version-8 layout, kept for the migrations; `LEDGER_SCHEMA` (migration
9) converts its rows, one per order event.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Mapping, Sequence
from functools import lru_cache, partial
from typing import Any, Final

from gateway.core.jsoncodec import dumps, loads
from gateway.core.orders import Fate, OrderEntry, OrderRow
from gateway.store.base import AppendResult, NewEvent
from gateway.store.sqlite_host import SqliteHost

LEDGER_V8_SCHEMA: Final = """
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
"""Schema version 8 (migration 7): the first order ledger, one row per order event and route."""

LEDGER_SCHEMA: Final = """
DROP INDEX IF EXISTS order_ledger_time;
DROP INDEX IF EXISTS order_ledger_ref;
DROP INDEX IF EXISTS order_ledger_created;
ALTER TABLE order_ledger RENAME TO order_ledger_v8;
CREATE TABLE order_ledger(
    id           INTEGER PRIMARY KEY,
    site         TEXT NOT NULL,
    order_id     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    event_name   TEXT NOT NULL,
    event_time   REAL NOT NULL,
    routes       TEXT NOT NULL,
    unsent       TEXT,
    paired       TEXT,
    done         TEXT,
    event_ref    INTEGER,
    has_email    INTEGER NOT NULL,
    has_value    INTEGER NOT NULL,
    has_currency INTEGER NOT NULL,
    created_at   REAL NOT NULL
);
INSERT INTO order_ledger(site, order_id, event_id, event_name, event_time, routes, unsent,
    paired, done, event_ref, has_email, has_value, has_currency, created_at)
SELECT site, order_id, event_id, min(event_name), min(event_time), json_group_array(route),
    nullif(json_group_object(route, fate) FILTER (WHERE fate != 'sent'), '{}'),
    nullif(json_group_array(route) FILTER (WHERE paired AND fate = 'sent'), '[]'),
    nullif(json_group_object(route, done_at) FILTER (WHERE done_at IS NOT NULL), '{}'),
    min(event_ref), max(has_email), max(has_value), max(has_currency), min(created_at)
FROM (SELECT * FROM order_ledger_v8 ORDER BY site, order_id, event_id, route)
GROUP BY site, order_id, event_id
ORDER BY min(created_at);
DROP TABLE order_ledger_v8;
CREATE UNIQUE INDEX order_ledger_key ON order_ledger(site, event_id, order_id);
CREATE INDEX order_ledger_time ON order_ledger(site, event_time)
"""
"""Schema version 10 (migration 9): one ledger row per order event. A version-8 row pointed
at the event holding its route's delivery (`event_ref`); the converted row keeps one of them,
and the others are found through the dedup keys like any deduplicated order's."""

EXPIRE_CHUNK: Final = 1000
"""Ledger rows deleted per retention transaction."""

_INSERT: Final = (
    "INSERT OR IGNORE INTO order_ledger(site, order_id, event_id, event_name, event_time, routes,"
    " unsent, paired, event_ref, has_email, has_value, has_currency, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
"""A second entry of the same order event (site, event id, order id) keeps the first."""

EventKey = tuple[str, str, str]
"""(site, event name, event id) of an appended event."""


@lru_cache(maxsize=64)
def _routes_text(routes: tuple[str, ...]) -> str:
    """The JSON array of a site's routes (one shared tuple per site: encoded once)."""
    return dumps(list(routes)).decode()


def _unsent_text(order: OrderEntry) -> str | None:
    if not order.denied and not order.away:
        return None
    return dumps({r: f.value for r, f in order.fates() if f is not Fate.SENT}).decode()


def _paired_text(order: OrderEntry, paired: Collection[tuple[str, str, str]]) -> str | None:
    if not paired:
        return None
    routes = [
        r
        for r, f in order.fates()
        if f is Fate.SENT and (r, order.event_name, order.event_id) in paired
    ]
    return dumps(routes).decode() if routes else None


def record_orders_tx(
    conn: sqlite3.Connection,
    *,
    orders: Sequence[OrderEntry],
    now: float,
    paired: Collection[tuple[str, str, str]] = (),
    refs: Mapping[EventKey, int] | None = None,
) -> None:
    """Write the ledger rows, after the append in the same transaction. `paired` holds the
    (route, event name, event id) keys the append found held by a browser copy; `refs` the
    row id of each event the append stored."""
    refs = refs or {}
    conn.executemany(
        _INSERT,
        [
            (
                o.site,
                o.order_id,
                o.event_id,
                o.event_name,
                o.event_time,
                _routes_text(o.routes),
                _unsent_text(o),
                _paired_text(o, paired),
                refs.get((o.site, o.event_name, o.event_id)),
                o.has_email,
                o.has_value,
                o.has_currency,
                now,
            )
            for o in orders
            if o.routes
        ],
    )


def _sent(routes: str, unsent: str | None, route: str) -> bool:
    """Whether a row's `route` is one of its routes and was sent."""
    return route in loads(routes) and (unsent is None or route not in loads(unsent))


def mark_paired_tx(
    conn: sqlite3.Connection, *, site: str, event_name: str, event_id: str, route: str
) -> None:
    """A browser copy with this key was deduplicated into a backend copy on `route`: the
    order event's row is paired there (when `route` was sent)."""
    rows = conn.execute(
        "SELECT id, routes, unsent, paired FROM order_ledger"
        " WHERE site = ? AND event_id = ? AND event_name = ?",
        (site, event_id, event_name),
    ).fetchall()
    for row_id, routes, unsent, paired in rows:
        have: list[str] = loads(paired) if paired else []
        if route not in have and _sent(routes, unsent, route):
            conn.execute(
                "UPDATE order_ledger SET paired = ? WHERE id = ?",
                (dumps([*have, route]).decode(), row_id),
            )


_ROWS: Final = (
    "SELECT l.order_id, l.event_id, r.value, l.unsent, l.event_time, l.has_email, l.has_value,"
    " l.has_currency, l.paired, l.done, d.state, d.attempts, d.not_before, d.reason, d.updated_at"
    " FROM (SELECT * FROM order_ledger WHERE site = ?1 AND event_time >= ?2 AND event_time < ?3"
    " ORDER BY event_time, order_id, event_id LIMIT ?4) l"
    " JOIN json_each(l.routes) r"
    " LEFT JOIN deliveries d ON d.id = coalesce("
    "(SELECT o.id FROM deliveries o JOIN events oe ON oe.id = o.event_ref"
    " WHERE o.event_ref = l.event_ref AND o.route = r.value AND oe.event_id = l.event_id),"
    " (SELECT x.id FROM dedup k CROSS JOIN deliveries x ON x.event_ref = k.event_ref"
    " AND x.route = r.value CROSS JOIN events xe ON xe.id = k.event_ref"
    " AND xe.event_id = k.event_id"
    " WHERE k.event_name = l.event_name AND k.event_id = l.event_id"
    " AND instr(k.routes, char(31) || r.value || char(31)) > 0"
    " ORDER BY k.first_seen DESC LIMIT 1))"
    " ORDER BY l.event_time, l.order_id, l.event_id, r.value LIMIT ?4"
)
"""Each ledger row of the period once per route, with the delivery row of the route: the
event's own, or else the one of the event whose newest dedup row holds the route's key
(sqlite_dedup.py); either event must still be the one with the order event's id (a row id
freed by compaction may be reused)."""


class _Decoded:
    """JSON columns decoded once per distinct text (rows of one read share most of them)."""

    def __init__(self) -> None:
        self._seen: dict[str, Any] = {}

    def __call__(self, text: str | None) -> Any:
        if text is None:
            return None
        value = self._seen.get(text)
        if value is None:
            value = self._seen[text] = loads(text)
        return value


def order_rows_tx(
    conn: sqlite3.Connection, *, site: str, since: float, until: float, limit: int
) -> list[OrderRow]:
    """One row per order event of the site timed in [since, until) and route of its site,
    with its delivery row's state, oldest first, at most `limit`."""
    decoded = _Decoded()
    out: list[OrderRow] = []
    for r in conn.execute(_ROWS, (site, since, until, limit)):
        route = r[2]
        unsent = decoded(r[3])
        fate = unsent.get(route, Fate.SENT.value) if unsent else Fate.SENT.value
        paired = decoded(r[8])
        if fate != Fate.SENT.value:
            out.append(
                OrderRow(
                    r[0],
                    r[1],
                    route,
                    fate,
                    r[4],
                    bool(r[5]),
                    bool(r[6]),
                    bool(r[7]),
                    False,
                    None,
                    0,
                    0.0,
                    None,
                    0.0,
                )
            )
            continue
        done = decoded(r[9])
        done_at = done.get(route) if done else None
        state = r[10] if r[10] is not None else None if done_at is None else "done"
        out.append(
            OrderRow(
                order_id=r[0],
                event_id=r[1],
                route=route,
                fate=fate,
                event_time=r[4],
                has_email=bool(r[5]),
                has_value=bool(r[6]),
                has_currency=bool(r[7]),
                paired=bool(paired) and route in paired,
                state=state,
                attempts=r[11] or 0,
                not_before=r[12] or 0.0,
                reason=r[13],
                updated_at=r[14] if r[14] is not None else done_at or 0.0,
            )
        )
    return out


_DONE_ROWS: Final = (
    "SELECT l.id, l.routes, l.unsent, l.done, d.not_before FROM json_each(?1) j"
    " CROSS JOIN events e ON e.id = j.value"
    " CROSS JOIN order_ledger l ON l.site = e.site AND l.event_id = e.event_id"
    " AND l.event_name = e.event_name"
    " CROSS JOIN deliveries d ON d.event_ref = e.id AND d.route = ?2 AND d.state = 'done'"
)


def keep_done_orders_tx(conn: sqlite3.Connection, *, route: str, event_refs: Sequence[int]) -> None:
    """Compaction is about to delete the delivered rows of `route` of these events: the order
    events among them keep the time of delivery (`done`), so the gap still counts them
    delivered afterwards. An order deduplicated into a browser copy is found by the copy's
    key, which is its own."""
    rows = conn.execute(_DONE_ROWS, (dumps(sorted(set(event_refs))).decode(), route)).fetchall()
    for row_id, routes, unsent, done, at in rows:
        if _sent(routes, unsent, route):
            kept: dict[str, float] = loads(done) if done else {}
            kept[route] = at
            conn.execute(
                "UPDATE order_ledger SET done = ? WHERE id = ?", (dumps(kept).decode(), row_id)
            )


def expire_orders_tx(conn: sqlite3.Connection, *, cutoff: float) -> tuple[int, bool]:
    """Delete up to EXPIRE_CHUNK ledger rows written before `cutoff`, in write order (the
    oldest rows first: no index on the write time); return (deleted, more)."""
    last = None
    for row_id, created_at in conn.execute(
        "SELECT id, created_at FROM order_ledger ORDER BY id LIMIT ?", (EXPIRE_CHUNK,)
    ):
        if created_at >= cutoff:
            break
        last = row_id
    if last is None:
        return 0, False
    deleted = conn.execute(
        "DELETE FROM order_ledger WHERE id <= ? AND created_at < ?", (last, cutoff)
    ).rowcount
    return deleted, deleted >= EXPIRE_CHUNK


def erase_orders_tx(conn: sqlite3.Connection, *, event_ref: int) -> None:
    """Erasure: delete every ledger row of the orders whose event (by its key) `event_ref`
    holds: the order event itself, or one deduplicated into it."""
    conn.execute(
        "DELETE FROM order_ledger WHERE (site, order_id) IN"
        " (SELECT l.site, l.order_id FROM events e JOIN order_ledger l ON l.site = e.site"
        " AND l.event_id = e.event_id AND l.event_name = e.event_name WHERE e.id = ?)",
        (event_ref,),
    )


class SqliteOrders:
    """`OrderStore` on SQLite: a mixin of `SqliteStore` (the ledger rows join the append's
    transaction, `record_orders_tx`)."""

    async def append_orders(
        self: SqliteHost, events: Sequence[NewEvent], orders: Sequence[OrderEntry], now: float
    ) -> list[AppendResult]:
        """`append`, and write the order ledger rows in the same transaction (sqlite_orders);
        it joins the batch's merged insert like any append."""
        if not orders:
            return await self.append(events, now)
        return await self._append(tuple(events), tuple(orders), now)

    async def order_rows(
        self: SqliteHost, site: str, since: float, until: float, limit: int
    ) -> list[OrderRow]:
        if limit <= 0 or until <= since:
            return []
        return await self._read(
            partial(order_rows_tx, site=site, since=since, until=until, limit=limit)
        )
