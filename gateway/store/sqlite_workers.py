"""Where the SQLite store's jobs run: worker threads, the loop writer and the checkpoint.

A job (`_Job`) is a function of one connection plus the future its caller awaits. `_Worker` is
one thread owning one connection that runs queued jobs in batches (the reader, the thread
writer, the checkpointer); `_LoopWorker` runs write batches on the event loop's own thread.
Both take the connect function and the batch function from the store
(gateway/store/sqlite_writer.py), which decides what a batch is; `_checkpoint` is the one job
the checkpointer thread runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from gateway.core.orders import OrderEntry
from gateway.core.profile import ProfileUpdate, VisitorProfile
from gateway.store.base import NewEvent

T = TypeVar("T")

MAX_BATCH: Final = 1024
"""Most jobs in one group-commit transaction."""

CHECKPOINT_BUSY_MS: Final = 200
"""How long the checkpointer waits for a lock before trying again at its next tick."""

WAL_RESTART_FRAMES: Final = 16384
"""WAL frames (pages, 64 MiB at 4 KiB) beyond which the checkpointer rewinds the log."""

BUSY_RETRY_SECONDS: Final = 0.002
"""When the loop writer finds the write lock taken (the checkpointer's RESTART holds it while it
rewinds the log), the batch waits this long on the loop's timer and tries again."""


class StoreClosedError(RuntimeError):
    """The store is not open (never opened, closed, or its worker thread died)."""


@dataclass(slots=True)
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    events: tuple[NewEvent, ...] | None = None
    """Set on append jobs: the writer merges all appends of a batch into one set-based insert."""
    now: float = 0.0
    touch: _Touch | None = None
    """Set on touch-and-append jobs, which join that merged insert after their profile merge."""
    orders: tuple[OrderEntry, ...] = ()
    """Order ledger rows an append job writes after its events (`append_orders`)."""


@dataclass(frozen=True, slots=True)
class _Touch:
    site: str
    visitor_id: str
    update: ProfileUpdate
    events_for: Callable[[VisitorProfile], Sequence[NewEvent]]


_Outcome = tuple[_Job, Any, BaseException | None]


class _Busy(Exception):
    """The write lock is held by another connection right now (nothing was done)."""


def _is_busy(exc: sqlite3.Error) -> bool:
    """Whether SQLite answered SQLITE_BUSY (any extended form)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


def _apply(outcomes: list[_Outcome]) -> None:
    """On the event loop: resolve futures whose callers are still waiting."""
    for job, value, exc in outcomes:
        if job.future.done():  # the caller was cancelled; its write happened anyway
            continue
        if exc is None:
            job.future.set_result(value)
        else:
            job.future.set_exception(exc)


def _resolve(outcomes: Iterable[_Outcome]) -> None:
    """Hand outcomes to their loops: directly on the loop's own thread, else one wake-up each."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    running = asyncio._get_running_loop()
    for loop, items in by_loop.items():
        if loop is running:
            _apply(items)
            continue
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_apply, items)


class _Worker:
    """One thread owning one SQLite connection and running submitted jobs in batches."""

    def __init__(
        self,
        name: str,
        connect: Callable[[], sqlite3.Connection],
        execute: Callable[[sqlite3.Connection, list[_Job]], None],
        *,
        linger: float,
    ) -> None:
        self._name = name
        self._connect = connect
        self._execute = execute
        self._linger = linger
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed: BaseException | None = StoreClosedError(f"{name} is not started")
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._closed = None
        self._thread = threading.Thread(
            target=self._run, args=(loop, ready), name=self._name, daemon=True
        )
        self._thread.start()
        await ready

    def submit(self, job: _Job) -> None:
        with self._lock:
            if self._closed is not None:
                raise StoreClosedError(f"{self._name} is closed") from self._closed
            self._queue.put(job)

    async def stop(self) -> None:
        """Run every job queued so far, then end the thread (waited for off the loop)."""
        with self._lock:
            if self._closed is None:
                self._closed = StoreClosedError(f"{self._name} is closed")
                self._queue.put(None)
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join)

    def _run(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            with self._lock:
                self._closed = exc
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, ready, exc)
            return
        loop.call_soon_threadsafe(_settle, ready, None)
        failure: BaseException | None = None
        try:
            self._serve(conn)
        except BaseException as exc:  # a bug in this module: fail loudly, never hang callers
            failure = exc
        finally:
            with self._lock:
                if failure is not None or self._closed is None:
                    self._closed = failure or StoreClosedError(f"{self._name} died")
            leftovers: list[_Outcome] = []
            with contextlib.suppress(queue.Empty):
                while True:
                    job = self._queue.get_nowait()
                    if job is not None:
                        leftovers.append((job, None, StoreClosedError(f"{self._name} died")))
            _resolve(leftovers)
            conn.close()

    def _serve(self, conn: sqlite3.Connection) -> None:
        last_size = 1
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stopping = self._drain(batch)
            if not stopping and len(batch) == 1 and last_size > 1 and self._linger > 0:
                try:
                    more = self._queue.get(timeout=self._linger)
                except queue.Empty:
                    pass
                else:
                    stopping = more is None or self._drain(batch, more)
            last_size = len(batch)
            try:
                self._execute(conn, batch)
            except BaseException as exc:
                _resolve((job, None, exc) for job in batch)
                raise
            if stopping:
                return

    def _drain(self, batch: list[_Job], first: _Job | None = None) -> bool:
        """Move queued jobs into `batch` (up to MAX_BATCH); True if the stop mark was met."""
        if first is not None:
            batch.append(first)
        while len(batch) < MAX_BATCH:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return False
            if job is None:
                return True
            batch.append(job)
        return False


class _LoopWorker:
    """Runs write jobs on the event loop's own thread, one group commit per loop iteration.

    `submit` queues the job and schedules one flush with ``call_soon``: every request handled
    in the current loop iteration joins the batch, which then runs as one transaction before
    the loop polls for I/O again. On a single core this is cheaper than a writer thread, which
    pays two thread switches (and a GIL handover) per batch. A transaction blocks the loop
    while it runs, so the jobs are kept short (appends, leases, marks, chunked compaction);
    WAL checkpoints, which fsync, run on the checkpointer thread instead (see `SqliteStore`).
    """

    def __init__(
        self,
        name: str,
        connect: Callable[[], sqlite3.Connection],
        execute: Callable[[sqlite3.Connection, list[_Job]], None],
        *,
        give_up: float = 5.0,
    ) -> None:
        self._name = name
        self._connect = connect
        self._execute = execute
        self.give_up = give_up
        """Seconds a batch may wait for a busy write lock before it fails."""
        self._busy_since: float | None = None
        self._pending: list[_Job] = []
        self._scheduled = False
        self._last = 0
        """Jobs in the last flush."""
        self._conn: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed: BaseException | None = StoreClosedError(f"{name} is not started")

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._conn = self._connect()
        self._closed = None

    def submit(self, job: _Job) -> None:
        if self._closed is not None:
            raise StoreClosedError(f"{self._name} is closed") from self._closed
        if job.loop is not self._loop:
            raise RuntimeError(f"{self._name} serves the event loop it was opened on only")
        self._pending.append(job)
        if not self._scheduled:
            self._scheduled = True
            # Under load (the last batch was a group) wait one more loop turn: the requests
            # whose data arrived in this turn join the batch, and commits (a fixed cost each)
            # halve. A lone request never waits.
            job.loop.call_soon(self._linger if self._last > 1 else self._flush)

    def _linger(self) -> None:
        assert self._loop is not None
        self._loop.call_soon(self._flush)

    def run_now(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read on the write connection right away (it is idle between flushes, which
        run synchronously on this same thread); it sees everything committed so far."""
        if self._closed is not None or self._conn is None:
            raise StoreClosedError(f"{self._name} is closed") from self._closed
        return fn(self._conn)

    def _flush(self) -> None:
        self._scheduled = False
        if self._drain():
            # The write lock is taken (the checkpointer rewinds the log): never wait for it on
            # the loop, which goes on reading and parsing requests; try again shortly, with
            # the jobs that arrive meanwhile in the same batch.
            assert self._loop is not None
            self._scheduled = True
            self._loop.call_later(BUSY_RETRY_SECONDS, self._flush)

    def _drain(self) -> bool:
        """Run the queued jobs in batches; True if the write lock was busy (jobs kept).

        A lock busy for longer than `give_up` seconds fails the batch with SQLite's error,
        as a blocking busy timeout would have.
        """
        conn = self._conn
        self._last = len(self._pending)
        while self._pending and conn is not None:
            batch = self._pending[:MAX_BATCH]
            del self._pending[:MAX_BATCH]
            try:
                self._execute(conn, batch)
                self._busy_since = None
            except _Busy as busy:
                assert self._loop is not None
                now = self._loop.time()
                if self._busy_since is None:
                    self._busy_since = now
                if now - self._busy_since < self.give_up:
                    self._pending[:0] = batch
                    return True
                self._busy_since = None
                _resolve((job, None, busy.__cause__ or busy) for job in batch)
            except BaseException as exc:  # a bug in this module: fail loudly, never hang callers
                self._closed = exc
                _resolve((job, None, exc) for job in batch)
                pending, self._pending = self._pending, []
                died = StoreClosedError(f"{self._name} died")
                _resolve((job, None, died) for job in pending)
                raise
        return False

    async def stop(self) -> None:
        """Run every job queued so far, then close the connection."""
        if self._closed is None:
            self._closed = StoreClosedError(f"{self._name} is closed")
            while self._drain():  # noqa: ASYNC110 - polls a lock another thread holds
                await asyncio.sleep(BUSY_RETRY_SECONDS)
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _execute_plain(conn: sqlite3.Connection, batch: list[_Job]) -> None:
    """Run each job as is (no transaction around it) and resolve it."""
    outcomes: list[_Outcome] = []
    for job in batch:
        try:
            outcomes.append((job, job.fn(conn), None))
        except Exception as exc:
            outcomes.append((job, None, exc))
    _resolve(outcomes)


def _checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """Checkpoint without blocking the writer; return SQLite's (busy, log frames, copied).

    PASSIVE copies what it can while appends go on. If the log still grows past
    WAL_RESTART_FRAMES (it can only be rewound once a checkpoint has caught up with the
    writer), RESTART waits up to CHECKPOINT_BUSY_MS for a gap between transactions so the
    next writer starts the log over.
    """
    busy, log, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    if log > WAL_RESTART_FRAMES:
        busy, log, done = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
    return int(busy), int(log), int(done)


def _settle(future: asyncio.Future[None], exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)
