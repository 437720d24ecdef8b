"""The order ledger of the PostgreSQL store (`OrderStore`): the conversion gap's memory.

The layout is the SQLite store's lean ledger (gateway/store/sqlite_orders.py): ONE row per
backend order event (`gateway.core.orders.OrderEntry`), written by the same transaction as the
event's append, with the site's routes at that moment (``routes``), the routes consent denied
(``denied``) and those routing turned away (``away``) as arrays (the other routes were sent),
the order and event ids, the event's name and time and three flags: no identifier of the buyer.
A batch of entries is one ``INSERT … SELECT FROM unnest(…)``; an entry already written for the
same (site, event id, order id), e.g. by a retried request on another replica, is kept
(``ON CONFLICT DO NOTHING``).

`order_rows` expands a row into one `OrderRow` per route. A sent route's delivery is the
delivery row of ``event_ref`` for that route, or else the one of the event its route's dedup
key (route, event name, event id) names. ``event_ref`` is set at write time, in the append's
transaction, to the newest event the dedup keys of its sent routes name: the order event itself
when it won a key, else the copy it was deduplicated into.

Three rarer writes find a ledger row by its event's key (site, event id, event name), through
the unique index: ``paired`` (the routes on which a browser copy of the same event met it in the
dedup table, in either order of arrival), ``done`` (compaction deleted a delivered row: the
route's delivery time is kept, so the gap outlives the debug window of delivered rows) and
erasure (`erase_orders_tx`); compaction, which may have deleted the event row already, also
finds the rows by ``event_ref``. Rows live as long as the outbox remembers an event (the longer of
the dedup window and the delivered rows' window), deleted in chunks in write order by
`compact` (`_on_compact`).

The store's outbox calls this module through its hooks (gateway/store/postgres.py and
postgres_writer.py: ``_append_job(orders=…)`` then ``_on_orders`` once per group commit,
``_on_paired``, ``_on_compacted``, ``_on_compact``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from functools import partial
from typing import Final

from gateway.core.orders import Fate, OrderEntry, OrderRow
from gateway.store.base import AppendResult, NewEvent
from gateway.store.postgres_conn import Conn, Record
from gateway.store.postgres_tx import PgHost, again, retrying

ORDERS_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS order_ledger(
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site         text NOT NULL,
    order_id     text NOT NULL,
    event_id     text NOT NULL,
    event_name   text NOT NULL,
    event_time   double precision NOT NULL,
    routes       text[] NOT NULL,
    denied       text[] NOT NULL DEFAULT '{}',
    away         text[] NOT NULL DEFAULT '{}',
    paired       text[] NOT NULL DEFAULT '{}',
    done         jsonb,
    event_ref    bigint,
    has_email    boolean NOT NULL,
    has_value    boolean NOT NULL,
    has_currency boolean NOT NULL,
    created_at   double precision NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS order_ledger_key ON order_ledger(site, event_id, order_id);
CREATE INDEX IF NOT EXISTS order_ledger_time ON order_ledger(site, event_time);
CREATE INDEX IF NOT EXISTS order_ledger_ref ON order_ledger(event_ref)
"""
"""The order ledger, one row per order event (idempotent: a migration that may run again)."""

EXPIRE_CHUNK: Final = 1000
"""Ledger rows deleted per retention statement."""

SEPARATOR: Final = "\x1f"
"""Joins a row's routes into one text value of the insert's arrays (routes never hold it)."""

_INSERT: Final = """
INSERT INTO order_ledger(site, order_id, event_id, event_name, event_time, routes, denied, away,
                         paired, event_ref, has_email, has_value, has_currency, created_at)
SELECT o.site, o.order_id, o.event_id, o.event_name, o.event_time,
       string_to_array(o.routes, chr(31)), string_to_array(o.denied, chr(31)),
       string_to_array(o.away, chr(31)), string_to_array(o.paired, chr(31)),
       (SELECT max(k.event_ref) FROM unnest(string_to_array(o.routes, chr(31))) AS r(route)
        JOIN dedup AS k
          ON k.route = r.route AND k.event_name = o.event_name AND k.event_id = o.event_id
        WHERE r.route <> ALL(string_to_array(o.denied, chr(31)))
          AND r.route <> ALL(string_to_array(o.away, chr(31)))),
       o.has_email, o.has_value, o.has_currency, $13
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::text[],
            $7::text[], $8::text[], $9::text[], $10::bool[], $11::bool[], $12::bool[])
     AS o(site, order_id, event_id, event_name, event_time, routes, denied, away, paired,
          has_email, has_value, has_currency)
ORDER BY o.site, o.event_id, o.order_id
ON CONFLICT (site, event_id, order_id) DO NOTHING
"""
"""Write a batch of entries (in key order: two replicas never wait on each other in a circle);
each points at the newest event the dedup keys of its sent routes name (itself, or the copy it
joined)."""

_PAIR: Final = """
WITH found AS (
    SELECT e.site, e.event_name, e.event_id, array_agg(DISTINCT u.route) AS routes
    FROM unnest($1::bigint[], $2::text[]) AS u(ref, route) JOIN events AS e ON e.id = u.ref
    GROUP BY e.site, e.event_name, e.event_id
)
UPDATE order_ledger AS l
SET paired = ARRAY(SELECT DISTINCT r FROM unnest(l.paired || found.routes) AS r ORDER BY r)
FROM found
WHERE l.site = found.site AND l.event_id = found.event_id AND l.event_name = found.event_name
"""
"""A browser copy was deduplicated into these backend events ($1) on these routes ($2)."""

_DONE: Final = """
WITH gone AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::float8[]) AS u(route, ref, at)
), hit AS (
    SELECT l.id, gone.route, gone.at FROM gone JOIN order_ledger AS l ON l.event_ref = gone.ref
    UNION
    SELECT l.id, gone.route, gone.at FROM gone JOIN events AS e ON e.id = gone.ref
    JOIN order_ledger AS l
      ON l.site = e.site AND l.event_id = e.event_id AND l.event_name = e.event_name
), kept AS (
    SELECT id, jsonb_object_agg(route, at) AS done FROM hit GROUP BY id
)
UPDATE order_ledger AS l SET done = coalesce(l.done, '{}'::jsonb) || kept.done
FROM kept WHERE l.id = kept.id
"""
"""Compaction deleted these delivered (route $1, event $2, done at $3) rows: the order events
they delivered keep the delivery time. Such an order is found by its ``event_ref`` (itself,
or the copy it joined) and, while the event row is still there, by the event's key (an order
deduplicated into it on some routes only)."""

_EXPIRE: Final = """
WITH head AS (SELECT id, created_at FROM order_ledger ORDER BY id LIMIT $2),
gone AS (
    DELETE FROM order_ledger WHERE id IN (SELECT id FROM head WHERE created_at < $1)
    RETURNING 1
)
SELECT count(*) FROM gone
"""
"""Delete the rows written before $1 among the $2 oldest (in write order: no index on the
write time)."""

_ERASE: Final = """
DELETE FROM order_ledger WHERE (site, order_id) IN (
    SELECT l.site, l.order_id FROM events AS e
    JOIN order_ledger AS l
      ON l.site = e.site AND l.event_id = e.event_id AND l.event_name = e.event_name
    WHERE e.id = ANY($1::bigint[])
)
"""

_ROWS: Final = """
SELECT l.order_id, l.event_id, r.route, l.denied, l.away, l.event_time, l.has_email,
       l.has_value, l.has_currency, l.paired, (l.done ->> r.route)::float8,
       d.state, d.attempts, d.not_before, d.reason, d.updated_at
FROM (
    SELECT * FROM order_ledger WHERE site = $1 AND event_time >= $2 AND event_time < $3
    ORDER BY event_time, order_id COLLATE "C", event_id COLLATE "C" LIMIT $4
) AS l
CROSS JOIN LATERAL unnest(l.routes) AS r(route)
LEFT JOIN deliveries AS d ON d.id = coalesce(
    (SELECT o.id FROM deliveries AS o WHERE o.event_ref = l.event_ref AND o.route = r.route
     LIMIT 1),
    (SELECT x.id FROM dedup AS k
     JOIN deliveries AS x ON x.event_ref = k.event_ref AND x.route = k.route
     WHERE k.route = r.route AND k.event_name = l.event_name AND k.event_id = l.event_id
     LIMIT 1))
ORDER BY l.event_time, l.order_id COLLATE "C", l.event_id COLLATE "C", r.route COLLATE "C"
LIMIT $4
"""
"""Each ledger row of the period once per route, with the delivery row of the route: the one
of ``event_ref``, or else the one of the event its route's dedup key names."""


def _joined(routes: Collection[str]) -> str:
    return SEPARATOR.join(routes)


async def record_orders_tx(
    conn: Conn,
    *,
    orders: Sequence[OrderEntry],
    now: float,
    paired: Collection[tuple[str, str, str]] = frozenset(),
) -> None:
    """Write the entries, after their events' append in the same transaction. `paired` holds
    the (route, event name, event id) keys the append found held by a browser copy."""
    kept = [o for o in orders if o.routes]
    if not kept:
        return
    await conn.execute(
        _INSERT,
        [o.site for o in kept],
        [o.order_id for o in kept],
        [o.event_id for o in kept],
        [o.event_name for o in kept],
        [o.event_time for o in kept],
        [_joined(o.routes) for o in kept],
        [_joined(o.denied) for o in kept],
        [_joined(o.away) for o in kept],
        [
            _joined(
                [
                    r
                    for r, fate in o.fates()
                    if fate is Fate.SENT and (r, o.event_name, o.event_id) in paired
                ]
                if paired
                else ()
            )
            for o in kept
        ],
        [o.has_email for o in kept],
        [o.has_value for o in kept],
        [o.has_currency for o in kept],
        now,
    )


async def pair_orders_tx(conn: Conn, *, pairs: Sequence[tuple[int, str]]) -> None:
    """A browser copy was deduplicated into these (event ref, route) backend events."""
    if pairs:
        await conn.execute(_PAIR, [p[0] for p in pairs], [p[1] for p in pairs])


async def keep_done_orders_tx(conn: Conn, *, rows: Sequence[tuple[str, int, float]]) -> None:
    """Compaction deletes these delivered (route, event ref, done at) rows; see `_DONE`."""
    if rows:
        await conn.execute(_DONE, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])


async def expire_orders_tx(conn: Conn, *, cutoff: float) -> tuple[int, bool]:
    """Delete up to EXPIRE_CHUNK rows written before `cutoff`; return (deleted, more)."""
    deleted = int(await conn.fetchval(_EXPIRE, cutoff, EXPIRE_CHUNK))
    return deleted, deleted >= EXPIRE_CHUNK


async def erase_orders_tx(conn: Conn, *, event_refs: Sequence[int]) -> None:
    """Erasure: delete every ledger row of the orders whose event (by its key) one of
    `event_refs` holds: the order event itself, or one deduplicated into it."""
    if event_refs:
        await conn.execute(_ERASE, sorted(set(event_refs)))


def _fate(route: str, denied: Sequence[str], away: Sequence[str]) -> Fate:
    if route in denied:
        return Fate.CONSENT_DENIED
    if route in away:
        return Fate.ROUTED_AWAY
    return Fate.SENT


def _unsent(r: Record, route: str, fate: Fate) -> OrderRow:
    """A route the event was not sent to: no delivery to read."""
    return OrderRow(
        order_id=r[0],
        event_id=r[1],
        route=route,
        fate=fate.value,
        event_time=r[5],
        has_email=r[6],
        has_value=r[7],
        has_currency=r[8],
        paired=False,
        state=None,
        attempts=0,
        not_before=0.0,
        reason=None,
        updated_at=0.0,
    )


async def order_rows_tx(
    conn: Conn, *, site: str, since: float, until: float, limit: int
) -> list[OrderRow]:
    """One row per order event of the site timed in [since, until) and route of its entry,
    with the route's delivery state, at most `limit`."""
    out: list[OrderRow] = []
    for r in await conn.fetch(_ROWS, site, since, until, limit):
        route: str = r[2]
        fate = _fate(route, r[3], r[4])
        if fate is not Fate.SENT:
            out.append(_unsent(r, route, fate))
            continue
        done_at: float | None = r[10]
        state: str | None = r[11] if r[11] is not None else None if done_at is None else "done"
        out.append(
            OrderRow(
                order_id=r[0],
                event_id=r[1],
                route=route,
                fate=fate.value,
                event_time=r[5],
                has_email=r[6],
                has_value=r[7],
                has_currency=r[8],
                paired=route in r[9],
                state=state,
                attempts=r[12] or 0,
                not_before=r[13] or 0.0,
                reason=r[14],
                updated_at=r[15] if r[15] is not None else done_at or 0.0,
            )
        )
    return out


class PostgresOrders:
    """`OrderStore` on PostgreSQL, and the outbox hooks that keep the ledger: a mixin of
    `PostgresStore`."""

    async def append_orders(
        self: PgHost, events: Sequence[NewEvent], orders: Sequence[OrderEntry], now: float
    ) -> list[AppendResult]:
        entries = tuple(orders)
        if not events:
            if entries:
                await retrying(self._tx, partial(record_orders_tx, orders=entries, now=now))
            return []

        if not entries:
            return await self._append_job(tuple(events), now)
        # The writer gathers the entries of every append job of its batch into one
        # `_on_orders` call: one ledger statement per group commit, not one per request.
        return await again(lambda: self._append_job(tuple(events), now, orders=entries))

    async def _on_orders(
        self,
        conn: Conn,
        orders: Sequence[OrderEntry],
        now: float,
        paired: frozenset[tuple[str, str, str]],
    ) -> None:
        await record_orders_tx(conn, orders=orders, now=now, paired=paired)

    async def order_rows(
        self: PgHost, site: str, since: float, until: float, limit: int
    ) -> list[OrderRow]:
        if limit <= 0 or until <= since:
            return []
        async with self._pool.acquire() as conn:
            return await order_rows_tx(conn, site=site, since=since, until=until, limit=limit)

    async def _on_paired(self, conn: Conn, pairs: Sequence[tuple[int, str]]) -> None:
        await pair_orders_tx(conn, pairs=pairs)

    async def _on_compacted(self, conn: Conn, rows: Sequence[tuple[str, int, float]]) -> None:
        await keep_done_orders_tx(conn, rows=rows)

    async def _on_compact(
        self: PgHost, now: float, keep_done_seconds: float, dedup_seconds: float
    ) -> None:
        cutoff = now - max(keep_done_seconds, dedup_seconds)
        while (await retrying(self._tx, partial(expire_orders_tx, cutoff=cutoff)))[1]:
            pass
