"""Group commit for the PostgreSQL store: one writer task per process batches every append.

Every `append` (and every profile merge or order ledger write that goes with one) is a job for
the store's one writer task, which takes all jobs queued at that moment (up to MAX_BATCH jobs,
MAX_BATCH_EVENTS events) and writes them with ONE set-based claim statement
(gateway/store/postgres_append.py), resolving their futures once it committed: a 2xx still
means committed. While one batch is on the wire the next requests queue, so batches grow with
load by themselves.

A batch of plain appends needs one round trip: the statement commits by itself (duplicates to
merge take one more transaction). A batch with jobs that have a `prepare` (profile merges), a
`finish` or `orders` runs in one transaction: the prepares, the claim, the merges, then ONE
`_on_orders` call with the ledger entries of every job, then the finishes. If a batch fails
before anything of it committed, its jobs are written one by one, so a bad job (or a deadlock
PostgreSQL broke) fails only its own caller; a failure after a plain batch's claim committed
fails the batch without a retry (its events are in; a client's retry is deduplicated).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from gateway.core.orders import OrderEntry
from gateway.store.availability import Availability, StoreUnavailableError
from gateway.store.base import AppendResult, NewEvent
from gateway.store.postgres_append import Claimed, claim, merge_duplicates, result_of
from gateway.store.postgres_conn import Conn, PgPool, connection_error, unavailable_reason

__all__ = ["MAX_BATCH", "MAX_BATCH_EVENTS", "Finish", "GroupCommit", "Prepare", "StoreClosedError"]

log = logging.getLogger(__name__)

MAX_BATCH: Final = 1024
"""Most append jobs written by one group commit."""

MAX_BATCH_EVENTS: Final = 10_000
"""A group commit takes no further job once it holds this many events (its first job is
always taken, whatever its size): one statement's arrays stay a few MB."""

Prepare = Callable[[Conn], Awaitable[Sequence[NewEvent]]]
"""Runs first in a batch's transaction; returns the events the job appends (after a profile
merge, say)."""
Finish = Callable[[Conn, frozenset[tuple[str, str, str]]], Awaitable[None]]
"""Runs after the batch's append in the same transaction; gets the (route, event_name,
event_id) keys the append found held by a browser copy (for the order ledger's pairing)."""


class StoreClosedError(RuntimeError):
    """The store is not open (never opened, or closed)."""


@dataclass(slots=True)
class _AppendJob:
    events: tuple[NewEvent, ...]
    now: float
    future: asyncio.Future[list[AppendResult]]
    prepare: Prepare | None = None
    finish: Finish | None = None
    orders: tuple[OrderEntry, ...] = ()
    results: list[AppendResult] = field(default_factory=list)


class GroupCommit:
    """The writer half of `PostgresOutbox` (its base class): the append queue, the writer task
    and the hooks through which the order ledger and pairing mixins join a batch."""

    def __init__(self, pool: PgPool, *, dedup_seconds: float, merge_seconds: float) -> None:
        self._pool = pool
        self.dedup_seconds = dedup_seconds
        self.merge_seconds = merge_seconds
        """New rows wait this long so a duplicate from the other channel can merge in."""
        self.commits = 0
        """Append batches written (one statement or transaction each)."""
        self.availability = Availability()
        """Whether writes succeed; storage failures become StoreUnavailableError (503)."""
        self._jobs: list[_AppendJob] = []
        self._sweep_debt = 0
        """Dedup keys claimed (at most) since the last compaction: the next sweep's budget."""
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._open = False

    def _start_writer(self) -> None:
        self._wake = asyncio.Event()
        self._writer = asyncio.get_running_loop().create_task(
            self._write_loop(), name="postgres-store-writer"
        )
        self._open = True

    async def _stop_writer(self) -> None:
        """Write every append already submitted, then end the writer task."""
        self._open = False
        writer, self._writer = self._writer, None
        if writer is None:
            return
        assert self._wake is not None
        self._wake.set()
        try:
            await writer
        except asyncio.CancelledError:
            if not writer.cancelled():
                raise  # close() itself was cancelled
        except Exception as exc:  # a bug: its callers already got the error
            log.error("the PostgreSQL store writer failed: %s", type(exc).__name__)

    async def _append_job(
        self,
        events: tuple[NewEvent, ...],
        now: float,
        *,
        prepare: Prepare | None = None,
        finish: Finish | None = None,
        orders: tuple[OrderEntry, ...] = (),
    ) -> list[AppendResult]:
        """Queue an append for the writer's next group commit; return once it committed.

        `prepare` (then `events` is ignored: it returns the events) and `finish` run in the
        batch's transaction, before and after the append (see `Prepare`, `Finish`). `orders`
        are order ledger entries: those of every job of the batch are written together, after
        the append in the same transaction, by ONE `_on_orders` call.
        """
        if not self._open or self._wake is None or self._writer is None or self._writer.done():
            raise StoreClosedError("the PostgreSQL store is not open")
        future: asyncio.Future[list[AppendResult]] = asyncio.get_running_loop().create_future()
        self._jobs.append(_AppendJob(events, now, future, prepare, finish, orders))
        self._wake.set()
        try:
            results = await future
        except Exception as exc:
            self._failed(exc)
            raise
        if self.availability.reason is not None:
            self.availability.succeeded()
        return results

    async def _on_orders(
        self,
        conn: Conn,
        orders: Sequence[OrderEntry],
        now: float,
        paired: frozenset[tuple[str, str, str]],
    ) -> None:
        """Write the order ledger entries of a batch's append jobs (in its transaction);
        `paired` as for `Finish`. The order ledger mixin implements it."""
        raise NotImplementedError("the order ledger is not part of this store")

    async def _on_paired(self, conn: Conn, pairs: Sequence[tuple[int, str]]) -> None:
        """A browser copy was deduplicated into these (event_ref, route) backend events."""

    def _failed(self, exc: BaseException) -> None:
        """Raise StoreUnavailableError if `exc` means the database cannot write now."""
        reason = unavailable_reason(exc)
        if reason is not None:
            self.availability.failed(StoreUnavailableError(reason))

    async def _write_loop(self) -> None:
        """The writer task: take every queued append job, write them as one batch, repeat."""
        assert self._wake is not None
        wake = self._wake
        try:
            while True:
                if not self._jobs:
                    if not self._open:
                        return
                    wake.clear()
                    await wake.wait()
                    continue
                await self._write_batch(self._next_batch())
        finally:  # cancelled with the loop, or a bug: nobody waits forever
            jobs, self._jobs = self._jobs, []
            _fail(jobs, StoreClosedError("the PostgreSQL store writer stopped"))

    def _next_batch(self) -> list[_AppendJob]:
        """Take the queued jobs of the next group commit (see MAX_BATCH, MAX_BATCH_EVENTS)."""
        taken = events = 0
        for job in self._jobs[:MAX_BATCH]:
            if taken and events + len(job.events) > MAX_BATCH_EVENTS:
                break
            taken += 1
            events += len(job.events)
        batch = self._jobs[:taken]
        del self._jobs[:taken]
        return batch

    async def _write_batch(self, batch: list[_AppendJob]) -> None:
        """Write the batch and resolve its futures; never raises.

        If the batch fails before anything of it was committed, each job is written alone, so
        one bad job fails only its own caller.
        """
        try:
            await self._write(batch)
        except _PartlyCommittedError as exc:
            _fail(batch, exc.__cause__ or exc)
            return
        except Exception as exc:
            if len(batch) > 1 and not connection_error(exc):
                for job in batch:
                    await self._write_batch([job])
                return
            _fail(batch, exc)
            return
        except BaseException:  # cancelled (the loop is going away): nobody hangs
            _fail(batch, StoreClosedError("the PostgreSQL store writer stopped"))
            raise
        self.commits += 1
        for job in batch:
            if not job.future.done():  # its caller may have been cancelled meanwhile
                job.future.set_result(job.results)

    async def _write(self, batch: list[_AppendJob]) -> None:
        """One group commit: a single statement, or one transaction when a job has hooks or
        the append found duplicates to merge."""
        if any(job.prepare or job.finish or job.orders for job in batch):
            async with self._pool.tx() as conn:
                await self._write_in(conn, batch, in_tx=True)
            return
        async with self._pool.acquire() as conn:
            await self._write_in(conn, batch, in_tx=False)

    async def _write_in(self, conn: Conn, batch: list[_AppendJob], *, in_tx: bool) -> None:
        for job in batch:
            if job.prepare is not None:
                job.events = tuple(await job.prepare(conn))
        events = [e for job in batch for e in job.events]
        now = max(job.now for job in batch)
        claimed = Claimed({}, [])
        if events:
            due = now + self.merge_seconds if self.merge_seconds > 0 else 0.0
            self._sweep_debt += sum(len(e.routes) for e in events)
            claimed = await claim(conn, events, now=now, cutoff=now - self.dedup_seconds, due=due)
        paired: frozenset[tuple[str, str, str]] = frozenset()
        if claimed.lost:
            try:
                if in_tx:
                    paired = await self._merge(conn, events, claimed.lost)
                else:
                    async with conn.transaction():
                        paired = await self._merge(conn, events, claimed.lost)
            except Exception as exc:
                if in_tx:
                    raise
                raise _PartlyCommittedError from exc  # the claims are in: never write them twice
        orders = [o for job in batch for o in job.orders]
        if orders:
            await self._on_orders(conn, orders, now, paired)
        for job in batch:
            if job.finish is not None:
                await job.finish(conn, paired)
        start = 0
        for job in batch:
            job.results = [
                result_of(e.routes, claimed.won.get(start + k, ()))
                for k, e in enumerate(job.events)
            ]
            start += len(job.events)

    async def _merge(
        self, conn: Conn, events: Sequence[NewEvent], lost: Sequence[tuple[int, str]]
    ) -> frozenset[tuple[str, str, str]]:
        found = await merge_duplicates(conn, events, lost)
        if found:
            await self._on_paired(conn, [(ref, route) for ref, route, *_ in found])
        return frozenset((route, name, event_id) for _, route, name, event_id, _ in found)


class _PartlyCommittedError(Exception):
    """An append batch failed after its claims committed: its jobs must not be retried."""


def _fail(batch: Sequence[_AppendJob], exc: BaseException) -> None:
    for job in batch:
        if not job.future.done():
            job.future.set_exception(exc)
