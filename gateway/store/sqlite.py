"""SQLite outbox: the embedded, durable `Store` (one file, WAL mode, one writer).

State machine (one ``deliveries`` row per accepted event and route)::

    append ──► pending ──lease──► leased ──mark_done──► done ──compact──► compacted_counts
                                 ▲ ▲  │ └──mark_dead──► dead   (reason "invalid_field: <detail>")
                                 │ │  └───mark_retry──► retry  (not_before = at, attempts + 1)
                                 │ └── lease again once lease_until <= now (its worker died)
                                 └──── lease once a retry row's not_before <= now

`release_waiting` makes every retry row of one route due at once (its circuit breaker closed).
`replay` makes chosen dead rows pending again and `mark_dead` keeps each dead row's evidence
(gateway/store/sqlite_dead.py).

Pending is only ever the initial state. Lease takes the due rows of one route oldest first:
pending rows in id order, retry rows and expired leases in due-time order; of those candidates
the lowest ids win (every candidate stream is an index range, never a scan of the backlog).

`mark_done` / `mark_retry` / `mark_dead` change only rows that are currently ``leased`` and
silently ignore other ids. So a late worker cannot resurrect a row that is already done, dead or
waiting for a retry (which would deliver it twice or lose its dead reason). The protocol carries no
lease token, so a worker whose lease expired *and* whose row was leased again by another worker
can still mark that row; delivery is at-least-once and platforms deduplicate by event_id.

Column ``not_before`` is the time key of the row's state, so one index
``(route, state, not_before)`` serves every hot query: 0 for pending rows (so pending rows are in
id order inside the index), the retry time for retry rows, ``lease_until`` for leased rows (an
expired lease is a range scan) and the time of the change for done / dead rows (compaction and
the dead-letter listing are range scans too).

Durability argument
-------------------
*WAL + synchronous=NORMAL survives kill -9.* In WAL mode a commit appends the transaction's pages
and a commit frame to the ``-wal`` file with ``write()``; with NORMAL it does not fsync at
commit. Once ``write()`` returned, the bytes are in the OS page cache, which belongs to the kernel,
not to our process: killing the process (SIGKILL, OOM killer, a crash) cannot take them back.
The next opener replays every WAL frame up to the last valid commit frame (checksummed), so each
transaction is there completely or not at all. Only an OS crash or power loss can lose the last
commits under NORMAL; ``synchronous="FULL"`` fsyncs the WAL at every commit to cover that too.

*2xx means committed.* `append` resolves its future only after the ``COMMIT`` of the transaction
that holds its rows returned, and the HTTP answer awaits `append`.

*Group commit* (gateway/store/sqlite_writer.py, the base class `SqliteGroupCommit`): every write
is a job for the one writer, which runs all jobs queued at that moment in one transaction, on
the event loop's thread (``writer="loop"``, the default) or on a writer thread; reads run on a
reader thread (gateway/store/sqlite_workers.py runs the jobs, gateway/store/sqlite_conn.py
opens the connections).

Mixins (gateway/store/sqlite_{profiles,dead,orders,stats,pauses}.py) add the other protocols of
`GatewayStore`; the transactions are in gateway/store/sqlite_append.py (the append) and
gateway/store/sqlite_outbox.py (everything else of the outbox), the schema in
gateway/store/sqlite_schema.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Final

from gateway.core.orders import OrderEntry
from gateway.store.base import (
    AppendResult,
    Backlog,
    DeadEvidence,
    DeadReason,
    Delivery,
    DeliveryInfo,
    DeliveryState,
    NewEvent,
)
from gateway.store.sql import DEDUP_COUNTS
from gateway.store.sqlite_append import _append_orders_tx, _append_tx
from gateway.store.sqlite_dead import SqliteDeadLetters, mark_dead_tx
from gateway.store.sqlite_dedup import sweep_tx
from gateway.store.sqlite_orders import SqliteOrders, expire_orders_tx
from gateway.store.sqlite_outbox import (
    _backlog_tx,
    _compact_tx,
    _counts_tx,
    _dead_letters_tx,
    _lease_tx,
    _mark_tx,
    _ping_tx,
    _probe_tx,
    _recent_tx,
    _release_waiting_tx,
)
from gateway.store.sqlite_pauses import SqlitePauses
from gateway.store.sqlite_profiles import SqliteProfiles
from gateway.store.sqlite_stats import SqliteStats
from gateway.store.sqlite_workers import _Job
from gateway.store.sqlite_writer import SqliteGroupCommit

__all__ = ["SqliteOutbox", "SqliteStore"]

COMPACT_CHUNK: Final = 1000
"""Rows deleted per compaction transaction, so appends interleave with a long compaction."""

SWEEP_CHUNK: Final = 2000
"""Dedup keys visited per sweep transaction (see `SqliteStore.compact`)."""

SWEEP_FACTOR: Final = 2
"""A compaction visits at least this many dedup keys per key claimed since the last one."""


class SqliteOutbox(SqliteGroupCommit):
    """The `Store` protocol on one SQLite file (see the module docstring); mixins add the rest."""

    async def ping(self) -> None:
        """Raise unless a small write transaction commits right now.

        While the store is unavailable (a write failed for want of space or permission), the
        ping also makes the file grow by a few pages and frees them again, so /readyz can
        tell when space has returned even when no request is writing.
        """
        if self.availability.reason is None:
            await self._write(partial(_ping_tx, now=time.time()))
            return
        await self._write(partial(_probe_tx, now=time.time()))
        self.availability.succeeded()

    # -- writes ------------------------------------------------------------------------------

    async def append(self, events: Sequence[NewEvent], now: float) -> list[AppendResult]:
        if not events:
            return []
        return await self._append(tuple(events), (), now)

    async def _append(
        self, batch: tuple[NewEvent, ...], orders: tuple[OrderEntry, ...], now: float
    ) -> list[AppendResult]:
        cutoff = now - self.dedup_seconds
        if batch:
            self._sweep_debt += len(batch)  # one dedup row per event (sqlite_dedup.py)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[AppendResult]] = loop.create_future()
        merge = self.merge_seconds
        fn: Callable[[sqlite3.Connection], list[AppendResult]]
        if orders:
            fn = partial(
                _append_orders_tx,
                events=batch,
                orders=orders,
                now=now,
                cutoff=cutoff,
                merge_seconds=merge,
            )
        else:
            fn = partial(_append_tx, events=batch, now=now, cutoff=cutoff, merge_seconds=merge)
        job = _Job(fn, loop, future)
        job.events, job.now, job.orders = batch, now, orders
        self._writer.submit(job)
        try:
            results = await future
        except (sqlite3.Error, OSError) as exc:
            self.availability.failed(exc)
            raise
        if self.availability.reason is not None:
            self.availability.succeeded()
        return results

    async def lease(
        self, route: str, limit: int, now: float, lease_seconds: float
    ) -> list[Delivery]:
        if limit <= 0:
            return []
        return await self._write(
            partial(_lease_tx, route=route, limit=limit, now=now, until=now + lease_seconds)
        )

    async def mark_done(self, ids: Sequence[int], now: float) -> None:
        if ids:
            await self._write(
                partial(
                    _mark_tx,
                    sql="UPDATE deliveries SET state = 'done', not_before = ?, lease_until = NULL,"
                    " updated_at = ? WHERE id = ? AND state = 'leased'",
                    rows=[(now, now, i) for i in ids],
                )
            )

    async def mark_retry(
        self, ids: Sequence[int], at: float, reason: str, now: float, *, count_attempt: bool = True
    ) -> None:
        if ids:
            inc = 1 if count_attempt else 0
            await self._write(
                partial(
                    _mark_tx,
                    sql="UPDATE deliveries SET state = 'retry', not_before = ?, lease_until = NULL,"
                    " reason = ?, attempts = attempts + ?, updated_at = ?"
                    " WHERE id = ? AND state = 'leased'",
                    rows=[(at, reason, inc, now, i) for i in ids],
                )
            )

    async def release_waiting(self, route: str, now: float) -> int:
        return await self._write(partial(_release_waiting_tx, route=route, now=now))

    async def mark_dead(
        self,
        ids: Sequence[int],
        reason: DeadReason,
        detail: str,
        now: float,
        *,
        evidence: Mapping[int, DeadEvidence] | None = None,
    ) -> None:
        if ids:
            text = f"{reason.value}: {detail}" if detail else reason.value
            await self._write(
                partial(mark_dead_tx, ids=tuple(ids), text=text, now=now, evidence=evidence or {})
            )

    async def compact(self, now: float, keep_done_seconds: float, dedup_seconds: float) -> int:
        """Delete old done rows, events nothing refers to and old dedup keys, in chunks.

        Returns the delivery rows plus dedup keys deleted (event records freed along the way are
        storage detail and not counted). Expired dedup keys are found by a sweep along the
        primary key that goes on where the last compaction stopped: each compaction visits
        SWEEP_FACTOR keys per key claimed since the previous one (at least SWEEP_CHUNK), so
        the sweep passes the whole table faster than new keys arrive, and an expired key is
        deleted within about one dedup window of expiring. Until then it only takes space:
        a claim treats a key older than the window as free (sqlite_dedup.py).
        """
        total = 0
        ledger_cutoff = now - max(keep_done_seconds, dedup_seconds)
        while (await self._write(partial(expire_orders_tx, cutoff=ledger_cutoff)))[1]:
            pass  # the order ledger: as long as the outbox remembers events (not counted)
        while True:
            deleted, more = await self._write(
                partial(_compact_tx, done_cutoff=now - keep_done_seconds, budget=COMPACT_CHUNK)
            )
            total += deleted
            if not more:
                break
        budget = max(SWEEP_CHUNK, SWEEP_FACTOR * self._sweep_debt)
        self._sweep_debt = 0
        while budget > 0:
            deleted, self._sweep_from = await self._write(
                partial(
                    sweep_tx,
                    cutoff=now - dedup_seconds,
                    start=self._sweep_from,
                    limit=min(budget, SWEEP_CHUNK),
                )
            )
            total += deleted
            budget -= SWEEP_CHUNK
            if self._sweep_from is None:
                break  # a whole pass: the next compaction starts from the first key again
        return total

    # -- reads -------------------------------------------------------------------------------

    async def dedup_counts(self) -> Mapping[tuple[str, str], int]:
        return await self._read(lambda c: {(r, p): n for r, p, n in c.execute(DEDUP_COUNTS)})

    async def counts(self) -> Mapping[tuple[str, DeliveryState], int]:
        return await self._read(_counts_tx)

    async def backlog(self, routes: Sequence[str], limit: int) -> Mapping[str, Backlog]:
        if limit <= 0 or not routes:
            return {}
        return await self._read(partial(_backlog_tx, routes=tuple(routes), limit=limit))

    async def recent(self, limit: int, route: str | None = None) -> list[DeliveryInfo]:
        if limit <= 0:
            return []
        return await self._read(partial(_recent_tx, limit=limit, route=route))

    async def dead_letters(self, route: str, limit: int) -> list[DeliveryInfo]:
        if limit <= 0:
            return []
        return await self._read(partial(_dead_letters_tx, route=route, limit=limit))


class SqliteStore(
    SqliteProfiles, SqliteDeadLetters, SqliteOrders, SqliteStats, SqlitePauses, SqliteOutbox
):
    """Everything the gateway needs from storage, on one SQLite file: the outbox
    (`SqliteOutbox`) and, as mixins listed before it, profiles, dead letters, orders, stats and
    shared resumes."""
