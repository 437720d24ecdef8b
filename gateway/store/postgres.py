"""PostgreSQL outbox: the `Store` protocol on a shared PostgreSQL, for many gateway processes.

Any number of gateway processes (workers of one machine, replicas on many) share one database
and behave as one gateway. The tables (gateway/store/postgres_schema.py) and the state machine
are those of the SQLite store (gateway/store/sqlite.py); what differs is how concurrency is
made safe without a single writer:

* *Dedup* (``INSERT … ON CONFLICT`` on the ``dedup`` primary key): of two processes appending
  the same (route, event_name, event_id), exactly one claims the key; the other waits for the
  first's commit and then finds it taken, so the event is delivered once per route and its
  duplicate merged once, whichever process each copy reached.
* *Leases* (``FOR UPDATE SKIP LOCKED``): a lease locks the rows it takes and skips rows another
  lease is taking at that moment, so two processes never lease the same row; a lease is a time
  (``lease_until``), so rows of a process that died come back once it has passed.
* *Merges* lock the original's delivery row (``FOR UPDATE``) before reading its state, so a
  duplicate is merged only into a record that no lease has taken yet.

Group commit (gateway/store/postgres_writer.py, the base class `GroupCommit`): every `append`
is a job for this process's one writer task, which writes all jobs queued at that moment with
ONE set-based statement (the events as arrays, ``unnest``ed server-side) and resolves their
futures once it committed; profile merges and order ledger rows join the batch's transaction.

Failures: a database that cannot be reached, is shutting down, refuses connections or stopped
answering (statements give up after `postgres_conn.STATEMENT_TIMEOUT`) makes the store
unavailable (`Availability`: 503 with Retry-After, `/readyz`); a broken connection is dropped
from the pool and a fresh one opened for the next statement.

Mixins (gateway/store/postgres_{profiles,dead,orders,stats,pauses}.py) add the other protocols of
`GatewayStore` and plug into the outbox through the ``_on_*`` hooks of `PostgresOutbox`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Final, Literal, TypeGuard, overload

from gateway.store.base import (
    AppendResult,
    Backlog,
    DeadEvidence,
    DeadLetterStore,
    DeadReason,
    Delivery,
    DeliveryInfo,
    DeliveryState,
    GatewayStore,
    NewEvent,
    OrderStore,
    ProfileStore,
    StatsStore,
    Store,
)
from gateway.store.postgres_conn import (
    Conn,
    PgPool,
    Record,
    status_count,
)
from gateway.store.postgres_dead import PostgresDeadLetters
from gateway.store.postgres_orders import PostgresOrders
from gateway.store.postgres_pauses import PostgresPauses
from gateway.store.postgres_profiles import PostgresProfiles
from gateway.store.postgres_schema import migrate
from gateway.store.postgres_stats import PostgresStats
from gateway.store.postgres_writer import GroupCommit, StoreClosedError
from gateway.store.sql import DEDUP_COUNTS, DELIVERY_INFO, ROUTES

__all__ = [
    "PostgresOutbox",
    "PostgresStore",
    "StoreClosedError",
    "gateway_store",
    "missing_methods",
]

COMPACT_CHUNK: Final = 1000
"""Done rows deleted per compaction transaction."""

SWEEP_CHUNK: Final = 2000
"""Dedup keys visited per sweep statement (see `PostgresOutbox.compact`)."""

SWEEP_FACTOR: Final = 2
"""A compaction visits at least this many dedup keys per key claimed since the last one."""

_LEASE: Final = """
WITH p AS (
    SELECT id FROM deliveries WHERE route = $1 AND state = 'pending' AND not_before <= $2
    ORDER BY not_before, id LIMIT $3 FOR UPDATE SKIP LOCKED
), r AS (
    SELECT id FROM deliveries WHERE route = $1 AND state = 'retry' AND not_before <= $2
    ORDER BY not_before, id LIMIT $3 FOR UPDATE SKIP LOCKED
), x AS (
    SELECT id FROM deliveries WHERE route = $1 AND state = 'leased' AND not_before <= $2
    ORDER BY not_before, id LIMIT $3 FOR UPDATE SKIP LOCKED
), c AS (
    SELECT id FROM p UNION ALL SELECT id FROM r UNION ALL SELECT id FROM x ORDER BY id LIMIT $3
), u AS (
    UPDATE deliveries SET state = 'leased', not_before = $4, lease_until = $4, updated_at = $2
    WHERE id = ANY(ARRAY(SELECT id FROM c))
    RETURNING id, event_ref, attempts
)
SELECT u.id, e.event_name, e.event_id, e.event_time, e.record, u.attempts, e.created_at
FROM u JOIN LATERAL (SELECT * FROM events WHERE events.id = u.event_ref) e ON true
ORDER BY u.id
"""
"""Lease the due rows of route $1 at $2, at most $3, until $4: the oldest pending rows, retry
rows and expired leases (each stream an index range, locked and skipped if another lease is
taking it), of those the lowest ids."""

_MARK_DONE: Final = (
    "UPDATE deliveries SET state = 'done', not_before = $2, lease_until = NULL, updated_at = $2"
    " WHERE id = ANY($1::int8[]) AND state = 'leased'"
)
_MARK_RETRY: Final = (
    "UPDATE deliveries SET state = 'retry', not_before = $2, lease_until = NULL, reason = $3,"
    " attempts = attempts + $4, updated_at = $5 WHERE id = ANY($1::int8[]) AND state = 'leased'"
)
_MARK_DEAD: Final = (
    "UPDATE deliveries SET state = 'dead', not_before = $3, lease_until = NULL, reason = $2,"
    " updated_at = $3 WHERE id = ANY($1::int8[]) AND state = 'leased'"
)
"""Marks change leased rows only: a late worker cannot resurrect a done, dead or waiting row."""

_COUNTS: Final = """
SELECT route, state, sum(n) FROM (
    SELECT route, state, count(*) AS n FROM deliveries GROUP BY route, state
    UNION ALL SELECT route, state, n FROM compacted_counts
) c GROUP BY route, state
"""

_RECENT: Final = DELIVERY_INFO + "ORDER BY d.updated_at DESC, d.id DESC LIMIT $1"
_RECENT_ROUTE: Final = (
    DELIVERY_INFO + "WHERE d.route = $1 ORDER BY d.updated_at DESC, d.id DESC LIMIT $2"
)
_DEAD_LETTERS: Final = (
    DELIVERY_INFO
    + "WHERE d.route = $1 AND d.state = 'dead' ORDER BY d.not_before DESC, d.id DESC LIMIT $2"
)

_BACKLOG: Final = """
SELECT r.route, b.depth,
    (SELECT e.created_at FROM deliveries d JOIN events e ON e.id = d.event_ref WHERE d.id = b.first)
FROM unnest($1::text[]) AS r(route)
CROSS JOIN LATERAL (
    SELECT count(*) AS depth, min(id) AS first FROM (
        SELECT id FROM deliveries
        WHERE route = r.route AND state IN ('pending', 'leased', 'retry') LIMIT $2
    ) w
) b
"""
"""Per route: the waiting rows (counted up to $2, read through the due index) and when the
oldest of them was appended."""

_COMPACT: Final = """
WITH picked AS (
    SELECT x.id FROM unnest($1::text[]) AS rt(route)
    CROSS JOIN LATERAL (
        SELECT id FROM deliveries
        WHERE route = rt.route AND state = 'done' AND not_before < $2
        ORDER BY not_before LIMIT $3
    ) x
    LIMIT $3
), gone AS (
    DELETE FROM deliveries d WHERE d.id = ANY(ARRAY(SELECT id FROM picked)) AND d.state = 'done'
    RETURNING d.id, d.route, d.event_ref, d.not_before
), counted AS (
    INSERT INTO compacted_counts(route, state, n)
    SELECT route, 'done', count(*) FROM gone GROUP BY route ORDER BY route
    ON CONFLICT (route, state) DO UPDATE SET n = compacted_counts.n + excluded.n
), freed AS (
    DELETE FROM events e WHERE e.id = ANY(ARRAY(SELECT event_ref FROM gone))
    AND NOT EXISTS (
        SELECT 1 FROM deliveries o
        WHERE o.event_ref = e.id AND o.id NOT IN (SELECT id FROM gone)
    )
)
SELECT route, event_ref, not_before FROM gone
"""
"""Delete up to $3 done rows older than $2 of the routes $1, count them, free their events
(those no other row refers to); return the (route, event_ref, done_at) deleted."""

_SWEEP: Final = """
WITH page AS (
    SELECT ctid AS at, route, event_name, event_id, first_seen FROM dedup
    WHERE (route, event_name, event_id) > ($1, $2, $3)
    ORDER BY route, event_name, event_id LIMIT $4
), gone AS (
    DELETE FROM dedup WHERE ctid = ANY(ARRAY(SELECT at FROM page WHERE first_seen < $5))
    AND first_seen < $5
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM page), l.route, l.event_name, l.event_id
FROM (SELECT 1) one LEFT JOIN LATERAL (
    SELECT route, event_name, event_id FROM page
    ORDER BY route DESC, event_name DESC, event_id DESC LIMIT 1
) l ON true
"""
"""Visit up to $4 dedup keys after ($1, $2, $3) in key order, delete those seen before $5;
return (deleted, visited, last key visited). The page's keys are deleted by their row address
(``ctid``): a key claimed again meanwhile is a newer row version, which the delete re-checks
against the cutoff and keeps."""


class PostgresOutbox(GroupCommit):
    """The `Store` protocol on PostgreSQL (see the module docstring); mixins add the rest."""

    def __init__(
        self,
        dsn: str,
        *,
        pool_min: int = 2,
        pool_max: int = 10,
        dedup_seconds: float = 172800.0,
        merge_seconds: float = 0.0,
    ) -> None:
        if pool_min < 1 or pool_max < pool_min:
            raise ValueError("pool_min must be >= 1 and pool_max >= pool_min")
        if dedup_seconds < 0 or merge_seconds < 0:
            raise ValueError("dedup_seconds and merge_seconds must be >= 0")
        super().__init__(
            PgPool(dsn, min_size=pool_min, max_size=pool_max),
            dedup_seconds=dedup_seconds,
            merge_seconds=merge_seconds,
        )
        self._sweep_from: tuple[str, str, str] | None = None
        """Where the dedup sweep goes on (None: from the first key)."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect the pool, migrate the schema, start the writer task."""
        if self._open:
            return
        await self._pool.open()
        try:
            async with self._pool.acquire() as conn:
                await migrate(conn)
        except BaseException:
            await self._pool.close()
            raise
        self._start_writer()

    async def close(self) -> None:
        """Write every append already submitted, stop the writer, close the pool."""
        await self._stop_writer()
        await self._pool.close()

    async def ping(self) -> None:
        """Raise unless a small write commits right now (readiness)."""
        await self._run(
            "INSERT INTO heartbeat(id, at) VALUES (1, extract(epoch FROM clock_timestamp()))"
            " ON CONFLICT (id) DO UPDATE SET at = excluded.at"
        )
        if self.availability.reason is not None:
            self.availability.succeeded()

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[Conn]:
        """A pooled connection inside one transaction (committed on exit)."""
        async with self._pool.tx() as conn:
            yield conn

    # -- hooks for the mixins (no-ops here; `GroupCommit` has the append's) -------------------

    async def _on_dead(
        self, conn: Conn, ids: Sequence[int], evidence: Mapping[int, DeadEvidence]
    ) -> None:
        """`mark_dead` made the leased ones of `ids` dead (in this transaction): keep the
        `evidence` of those (by id) for the dead-letter listing."""

    async def _on_compacted(self, conn: Conn, rows: Sequence[tuple[str, int, float]]) -> None:
        """Compaction deleted these delivered (route, event_ref, done_at) rows."""

    async def _on_compact(self, now: float, keep_done_seconds: float, dedup_seconds: float) -> None:
        """`compact` runs: expire what the mixins keep as long as the outbox remembers events."""

    # -- the Store protocol: writes ------------------------------------------------------------

    async def append(self, events: Sequence[NewEvent], now: float) -> list[AppendResult]:
        if not events:
            return []
        return await self._append_job(tuple(events), now)

    async def lease(
        self, route: str, limit: int, now: float, lease_seconds: float
    ) -> list[Delivery]:
        if limit <= 0:
            return []
        rows = await self._run(_LEASE, route, now, limit, now + lease_seconds, fetch=True)
        return [
            Delivery(
                id=r[0],
                route=route,
                event_name=r[1],
                event_id=r[2],
                event_time=r[3],
                record=bytes(r[4]),
                attempts=r[5],
                created_at=r[6],
            )
            for r in rows
        ]

    async def mark_done(self, ids: Sequence[int], now: float) -> None:
        if ids:
            await self._run(_MARK_DONE, list(ids), now)

    async def mark_retry(
        self, ids: Sequence[int], at: float, reason: str, now: float, *, count_attempt: bool = True
    ) -> None:
        if ids:
            await self._run(_MARK_RETRY, list(ids), at, reason, 1 if count_attempt else 0, now)

    async def release_waiting(self, route: str, now: float) -> int:
        status = await self._run(
            "UPDATE deliveries SET not_before = $1"
            " WHERE route = $2 AND state = 'retry' AND not_before > $1",
            now,
            route,
        )
        return status_count(status)

    async def mark_dead(
        self,
        ids: Sequence[int],
        reason: DeadReason,
        detail: str,
        now: float,
        *,
        evidence: Mapping[int, DeadEvidence] | None = None,
    ) -> None:
        if not ids:
            return
        text = f"{reason.value}: {detail}" if detail else reason.value
        try:
            async with self._tx() as conn:
                await conn.execute(_MARK_DEAD, list(ids), text, now)
                await self._on_dead(conn, tuple(ids), evidence or {})
        except Exception as exc:
            self._failed(exc)
            raise

    async def compact(self, now: float, keep_done_seconds: float, dedup_seconds: float) -> int:
        """Delete done rows older than `keep_done_seconds` (in chunks, their counts kept in
        ``compacted_counts``) with the events nothing refers to any more, then sweep the dedup
        keys as the SQLite store does (`SqliteStore.compact`): along the primary key from where
        the last compaction stopped, SWEEP_FACTOR keys per key claimed since (at least
        SWEEP_CHUNK), deleting those older than `dedup_seconds`. Returns the delivery rows plus
        dedup keys deleted."""
        await self._on_compact(now, keep_done_seconds, dedup_seconds)
        total = 0
        async with self._pool.acquire() as conn:
            routes = [r[0] for r in await conn.fetch(ROUTES)]
        while routes:
            async with self._tx() as conn:
                gone = await conn.fetch(_COMPACT, routes, now - keep_done_seconds, COMPACT_CHUNK)
                if gone:
                    await self._on_compacted(conn, [(r[0], r[1], r[2]) for r in gone])
            total += len(gone)
            if len(gone) < COMPACT_CHUNK:
                break
        budget = max(SWEEP_CHUNK, SWEEP_FACTOR * self._sweep_debt)
        self._sweep_debt = 0
        while budget > 0:
            start = self._sweep_from or ("", "", "")
            async with self._pool.acquire() as conn:
                row = await conn.fetchrow(
                    _SWEEP, *start, min(budget, SWEEP_CHUNK), now - dedup_seconds
                )
            assert row is not None
            total += int(row[0])
            budget -= SWEEP_CHUNK
            if int(row[1]) < SWEEP_CHUNK or row[2] is None:
                self._sweep_from = None  # a whole pass: the next one starts from the first key
                break
            self._sweep_from = (row[2], row[3], row[4])
        return total

    # -- the Store protocol: reads -------------------------------------------------------------

    async def counts(self) -> Mapping[tuple[str, DeliveryState], int]:
        rows = await self._run(_COUNTS, fetch=True)
        return {(r[0], DeliveryState(r[1])): int(r[2]) for r in rows if r[2]}

    async def dedup_counts(self) -> Mapping[tuple[str, str], int]:
        rows = await self._run(DEDUP_COUNTS, fetch=True)
        return {(r[0], r[1]): int(r[2]) for r in rows}

    async def recent(self, limit: int, route: str | None = None) -> list[DeliveryInfo]:
        if limit <= 0:
            return []
        if route is None:
            rows = await self._run(_RECENT, limit, fetch=True)
        else:
            rows = await self._run(_RECENT_ROUTE, route, limit, fetch=True)
        return [_info(r) for r in rows]

    async def dead_letters(self, route: str, limit: int) -> list[DeliveryInfo]:
        if limit <= 0:
            return []
        return [_info(r) for r in await self._run(_DEAD_LETTERS, route, limit, fetch=True)]

    async def backlog(self, routes: Sequence[str], limit: int) -> Mapping[str, Backlog]:
        if limit <= 0 or not routes:
            return {}
        rows = await self._run(_BACKLOG, list(routes), limit, fetch=True)
        return {r[0]: Backlog(int(r[1]), r[2]) for r in rows}

    # -- machinery -----------------------------------------------------------------------------

    @overload
    async def _run(self, sql: str, *args: object, fetch: Literal[True]) -> list[Record]: ...

    @overload
    async def _run(self, sql: str, *args: object, fetch: Literal[False] = False) -> str: ...

    async def _run(self, sql: str, *args: object, fetch: bool = False) -> list[Record] | str:
        """One statement on a pooled connection (it commits by itself)."""
        try:
            async with self._pool.acquire() as conn:
                if fetch:
                    return await conn.fetch(sql, *args)
                return await conn.execute(sql, *args)
        except Exception as exc:
            self._failed(exc)
            raise


def _info(row: Record) -> DeliveryInfo:
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


class PostgresStore(
    PostgresProfiles,
    PostgresDeadLetters,
    PostgresOrders,
    PostgresStats,
    PostgresPauses,
    PostgresOutbox,
):
    """Everything the gateway needs from storage, on PostgreSQL: the outbox (`PostgresOutbox`)
    and, as mixins listed before it, profiles, dead letters, orders, stats and shared resumes."""


_PROTOCOLS: Final = (Store, ProfileStore, DeadLetterStore, OrderStore, StatsStore)
"""The protocols `GatewayStore` is made of."""


def missing_methods() -> list[str]:
    """The methods of `GatewayStore` that `PostgresStore` lacks (empty once it is complete)."""
    needed = {
        name
        for proto in _PROTOCOLS
        for name, member in vars(proto).items()
        if callable(member) and not name.startswith("_")
    }
    return sorted(name for name in needed if not callable(getattr(PostgresStore, name, None)))


def _complete(store: object) -> TypeGuard[GatewayStore]:
    return not missing_methods()


def gateway_store(
    dsn: str, *, pool_min: int, pool_max: int, dedup_seconds: float, merge_seconds: float
) -> GatewayStore:
    """A `PostgresStore` (not yet opened) as the gateway's store; ValueError if this build's
    PostgresStore does not implement all of `GatewayStore` yet (config validation says so
    first: `storage.backend`)."""
    store = PostgresStore(
        dsn,
        pool_min=pool_min,
        pool_max=pool_max,
        dedup_seconds=dedup_seconds,
        merge_seconds=merge_seconds,
    )
    if not _complete(store):
        raise ValueError("the PostgreSQL store lacks " + ", ".join(missing_methods()))
    return store
