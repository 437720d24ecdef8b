"""The SQLite store's group commit: its writer, reader and checkpointer, and their batches.

*Group commit.* Every write is a job for the one writer, which owns the only write connection.
The writer takes all jobs queued at that moment (appends of many concurrent requests, leases,
marks), runs them in ONE ``BEGIN IMMEDIATE`` transaction, commits once and only then resolves
their futures. All appends of a batch run as one set-based insert; other jobs run inside their
own ``SAVEPOINT``. A job that raises is rolled back to its savepoint and only its own future
fails; if the transaction as a whole fails (BEGIN/COMMIT error, or SQLite rolled it back, e.g.
disk full or ``RAISE(ROLLBACK)``) every future of the batch gets the exception and nothing of it
is written. While one transaction runs the next requests queue up, so batches grow with load by
themselves.

*Where the writer runs* (``writer=``):

* ``"loop"`` (the default): on the event loop's own thread. A submitted job schedules one flush
  with ``call_soon``, so every request handled in the current loop turn joins the batch, and
  the outcome is set on the futures directly. No thread switch, no GIL handover: on one core
  this is the cheapest group commit there is. The loop waits while a transaction runs, so every
  job is kept short (compaction goes in chunks).
* ``"thread"``: on a writer thread; the loop hands jobs over a queue and gets the outcomes back
  with one ``call_soon_threadsafe`` per batch. The loop never waits on SQLite, at the price of
  two thread switches per batch; the thread lingers at most ``commit_interval`` seconds for
  company only when the previous batch was a group and the current one a single job.

Reads that change nothing (`counts`, `recent`, `dead_letters`, profile look-ups) run on a reader
thread with its own read-only connection inside a read transaction (a consistent snapshot); WAL
lets them run while the writer commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

from gateway.core.profile import VisitorProfile
from gateway.store.availability import Availability
from gateway.store.sqlite_append import _append_orders_tx, _append_tx
from gateway.store.sqlite_conn import SqliteConnections
from gateway.store.sqlite_profiles import touch_profile_tx
from gateway.store.sqlite_workers import (
    _Busy,
    _checkpoint,
    _execute_plain,
    _is_busy,
    _Job,
    _LoopWorker,
    _Outcome,
    _resolve,
    _Worker,
)

T = TypeVar("T")

SYNCHRONOUS_MODES: Final = frozenset({"NORMAL", "FULL", "EXTRA"})
"""OFF is refused: it is not part of the durability contract gateway/store/sqlite.py documents."""

CHECKPOINT_INTERVAL: Final = 0.5
"""Seconds between WAL checkpoints when writes run on the event loop's thread."""


class SqliteGroupCommit(SqliteConnections):
    """The machinery half of `SqliteStore` (its base class): the workers that run jobs on the
    connections `SqliteConnections` opens, and the group-commit transaction of the writer (see
    the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "NORMAL",
        commit_interval: float = 0.002,
        busy_timeout_ms: int = 5000,
        dedup_seconds: float = 172800.0,
        merge_seconds: float = 0.0,
        writer: str = "loop",
        cache_mb: int = 16,
    ) -> None:
        if writer not in ("loop", "thread"):
            raise ValueError('writer must be "loop" or "thread"')
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {sorted(SYNCHRONOUS_MODES)}")
        if commit_interval < 0 or busy_timeout_ms < 0 or dedup_seconds < 0:
            raise ValueError("commit_interval, busy_timeout_ms and dedup_seconds must be >= 0")
        if cache_mb < 1:
            raise ValueError("cache_mb must be >= 1")
        if str(path) == ":memory:" or str(path).startswith("file:"):
            raise ValueError("SqliteStore needs a file path (two connections share it)")
        self.path = Path(path)
        self.synchronous = mode
        self.commit_interval = commit_interval
        self.busy_timeout_ms = busy_timeout_ms
        self.cache_mb = cache_mb
        """Page cache of each connection (writer, reader), MiB."""
        self.dedup_seconds = dedup_seconds
        self.merge_seconds = merge_seconds
        """New rows wait this long so a duplicate from the other channel can merge in."""
        self.commits = 0
        """Transactions committed by the writer thread (one per group commit)."""
        self._sweep_from: tuple[str, str, int] | None = None
        """Where the dedup sweep goes on (None: from the first key)."""
        self._sweep_debt = 0
        """Dedup keys claimed (at most) since the last compaction: the next sweep's budget."""
        self.writer = writer
        self._writer: _Worker | _LoopWorker
        if writer == "loop":
            self._writer = _LoopWorker(
                "sqlite-store-writer",
                self._connect_writer,
                self._execute_writes,
                give_up=busy_timeout_ms / 1000,
            )
        else:
            self._writer = _Worker(
                "sqlite-store-writer",
                self._connect_writer,
                self._execute_writes,
                linger=commit_interval,
            )
        self._reader = _Worker(
            "sqlite-store-reader", self._connect_reader, self._execute_reads, linger=0.0
        )
        self._checkpointer: _Worker | None = None
        self._checkpoints: asyncio.Task[None] | None = None
        if writer == "loop":
            self._checkpointer = _Worker(
                "sqlite-store-checkpointer",
                self._connect_checkpointer,
                _execute_plain,
                linger=0.0,
            )
        self._open = False
        self.availability = Availability()
        """Whether writes succeed; storage failures become StoreUnavailableError (503)."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the directory and schema (or migrate it), then start both threads."""
        if self._open:
            return
        await self._writer.start()
        try:
            await self._reader.start()
            if self._checkpointer is not None:
                await self._checkpointer.start()
                self._checkpoints = asyncio.get_running_loop().create_task(
                    self._checkpoint_loop(self._checkpointer)
                )
        except BaseException:
            await self._reader.stop()
            await self._writer.stop()
            raise
        self._open = True

    async def close(self) -> None:
        """Finish every job already submitted, stop the threads, close the connections."""
        self._open = False
        task, self._checkpoints = self._checkpoints, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._checkpointer is not None:
            await self._checkpointer.stop()
        await self._reader.stop()
        await self._writer.stop()

    async def _checkpoint_loop(self, worker: _Worker) -> None:
        """Copy the WAL into the database file every CHECKPOINT_INTERVAL, off the loop.

        The loop writer's own connection never checkpoints (``wal_autocheckpoint = 0``): an
        automatic checkpoint runs inside the COMMIT that crosses the threshold and fsyncs,
        which would stall the event loop. A failed checkpoint is retried at the next tick.
        """
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL)
            try:
                await self._submit(worker, _checkpoint)
            except sqlite3.Error:
                continue

    # -- machinery ---------------------------------------------------------------------------

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a write job. Only appends (and the growing ping) declare the store recovered:
        a lease or a mark can succeed on a full disk, since it needs no new page."""
        try:
            return await self._submit(self._writer, fn)
        except (sqlite3.Error, OSError) as exc:
            self.availability.failed(exc)  # raises StoreUnavailableError if it is the disk's
            raise

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(self._reader, fn)

    @staticmethod
    async def _submit(worker: _Worker | _LoopWorker, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        worker.submit(_Job(fn, loop, future))
        return await future

    def _execute_writes(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        """Run the batch as one transaction; commit; resolve.

        All append jobs of the batch run as ONE set-based insert (a handful of statements
        whatever the number of requests); if that fails, each append is retried alone so one bad
        job cannot fail its neighbours. Other jobs run one savepoint each.
        """
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if self.writer == "loop" and _is_busy(exc):
                raise _Busy from exc  # the loop worker keeps the batch and tries again
            _resolve((job, None, exc) for job in batch)
            return
        if len(batch) == 1:  # a lone job: the transaction itself is its unit, no savepoint
            (job,) = batch
            try:
                value = job.fn(conn)
                conn.execute("COMMIT")
            except Exception as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                _resolve([(job, None, exc)])
                return
            self.commits += 1
            _resolve([(job, value, None)])
            return
        outcomes: list[_Outcome] = []
        appends = [job for job in batch if job.events is not None or job.touch is not None]
        singles = [job for job in batch if job.events is None and job.touch is None]
        try:
            if len(appends) > 1 and self._merged_appends(conn, appends, outcomes):
                appends = []
            for job in (*appends, *singles):
                conn.execute("SAVEPOINT job")
                try:
                    value = job.fn(conn)
                except Exception as exc:
                    if not conn.in_transaction:
                        raise  # SQLite rolled the whole transaction back: fail the batch
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((job, None, exc))
                else:
                    conn.execute("RELEASE job")
                    outcomes.append((job, value, None))
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            _resolve((job, None, exc) for job in batch)
            return
        self.commits += 1
        _resolve(outcomes)

    def _merged_appends(
        self, conn: sqlite3.Connection, jobs: list[_Job], outcomes: list[_Outcome]
    ) -> bool:
        """Run several append jobs as one insert; False (nothing written) if it failed.

        Touch-and-append jobs merge their profiles first (in order), then their events join
        the one insert; their outcome is (profile, their results).
        """
        now = max(job.now for job in jobs)
        conn.execute("SAVEPOINT appends")
        try:
            profiles: dict[int, VisitorProfile] = {}
            for i, job in enumerate(jobs):
                touch = job.touch
                if touch is not None:
                    profile = touch_profile_tx(
                        conn,
                        site=touch.site,
                        visitor_id=touch.visitor_id,
                        update=touch.update,
                        now=job.now,
                    )
                    profiles[i] = profile
                    job.events = tuple(touch.events_for(profile))
            events = tuple(e for job in jobs for e in job.events or ())
            orders = tuple(o for job in jobs for o in job.orders)
            if orders:
                results = _append_orders_tx(
                    conn,
                    events=events,
                    orders=orders,
                    now=now,
                    cutoff=now - self.dedup_seconds,
                    merge_seconds=self.merge_seconds,
                )
            elif events:
                results = _append_tx(
                    conn,
                    events=events,
                    now=now,
                    cutoff=now - self.dedup_seconds,
                    merge_seconds=self.merge_seconds,
                )
            else:
                results = []
        except Exception:
            for job in jobs:
                if job.touch is not None:
                    job.events = None  # the fallback runs the job's own transaction function
            if not conn.in_transaction:
                raise
            conn.execute("ROLLBACK TO appends")
            conn.execute("RELEASE appends")
            return False
        conn.execute("RELEASE appends")
        start = 0
        for i, job in enumerate(jobs):
            size = len(job.events or ())
            mine = results[start : start + size]
            outcomes.append((job, (profiles[i], mine) if i in profiles else mine, None))
            start += size
        return True

    @staticmethod
    def _execute_reads(conn: sqlite3.Connection, batch: list[_Job]) -> None:
        """Run each job in its own read transaction (a consistent snapshot)."""
        outcomes: list[_Outcome] = []
        for job in batch:
            try:
                conn.execute("BEGIN")
                try:
                    outcomes.append((job, job.fn(conn), None))
                finally:
                    conn.execute("COMMIT")
            except Exception as exc:
                outcomes.append((job, None, exc))
        _resolve(outcomes)
