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
import functools
import itertools
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar

from gateway.core.merge import source_pair
from gateway.core.orders import OrderEntry, OrderRow
from gateway.core.profile import ProfileUpdate, VisitorProfile
from gateway.core.record import channel_of, merge_records
from gateway.core.rollup import StatRow
from gateway.store.availability import Availability
from gateway.store.base import (
    AppendResult,
    Backlog,
    DeadEvidence,
    DeadPage,
    DeadQuery,
    DeadReason,
    Delivery,
    DeliveryInfo,
    DeliveryState,
    EraseResult,
    Identity,
    NewEvent,
    ProfileQuery,
    ReplayResult,
    ReplaySelection,
    StatsQuery,
)
from gateway.store.sqlite_dead import DEAD_SCHEMA, dead_page_tx, mark_dead_tx, replay_tx
from gateway.store.sqlite_dedup import (
    DEDUP_GROUP_SCHEMA,
    Owner,
    claim_all_tx,
    claim_tx,
    sweep_tx,
)
from gateway.store.sqlite_orders import (
    LEDGER_SCHEMA,
    LEDGER_V8_SCHEMA,
    EventKey,
    expire_orders_tx,
    keep_done_orders_tx,
    mark_paired_tx,
    order_rows_tx,
    record_orders_tx,
)
from gateway.store.sqlite_profiles import (
    LINKS_SCHEMA,
    PROFILE_SCHEMA,
    erase_tx,
    expire_profiles_tx,
    find_identities_tx,
    find_profiles_tx,
    touch_profile_tx,
)
from gateway.store.sqlite_stats import (
    PAIRS_BOOKED_SCHEMA,
    STATS_SCHEMA,
    book_pairs_tx,
    compact_stats_tx,
    read_stats_tx,
    unbooked_pairs_tx,
    write_stats_tx,
)

__all__ = ["SCHEMA_VERSION", "SqliteStore", "StoreClosedError"]

T = TypeVar("T")

SCHEMA_VERSION: Final = 12
"""Stored in ``PRAGMA user_version``; a newer file is refused, an older one migrated."""

SYNCHRONOUS_MODES: Final = frozenset({"NORMAL", "FULL", "EXTRA"})
"""OFF is refused: it is not part of the durability contract this module documents."""

MAX_BATCH: Final = 1024
"""Most jobs in one group-commit transaction."""

CHECKPOINT_INTERVAL: Final = 0.5
"""Seconds between WAL checkpoints when writes run on the event loop's thread."""

CHECKPOINT_BUSY_MS: Final = 200
"""How long the checkpointer waits for a lock before trying again at its next tick."""

WAL_RESTART_FRAMES: Final = 16384
"""WAL frames (pages, 64 MiB at 4 KiB) beyond which the checkpointer rewinds the log."""

BUSY_RETRY_SECONDS: Final = 0.002
"""When the loop writer finds the write lock taken (the checkpointer's RESTART holds it while it
rewinds the log), the batch waits this long on the loop's timer and tries again."""

PROFILE_SITES_RECHECK: Final = 1.0
"""Seconds before `has_profiles` reads again a site it found without profiles."""

COMPACT_CHUNK: Final = 1000
"""Rows deleted per compaction transaction, so appends interleave with a long compaction."""

SWEEP_CHUNK: Final = 2000
"""Dedup keys visited per sweep transaction (see `SqliteStore.compact`)."""

SWEEP_FACTOR: Final = 2
"""A compaction visits at least this many dedup keys per key claimed since the last one."""

_BASE_SCHEMA: Final = """
CREATE TABLE events(
    id          INTEGER PRIMARY KEY,
    site        TEXT NOT NULL,
    event_name  TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    event_time  REAL NOT NULL,
    record      BLOB NOT NULL,
    created_at  REAL NOT NULL
);
CREATE TABLE deliveries(
    id          INTEGER PRIMARY KEY,
    event_ref   INTEGER NOT NULL REFERENCES events(id),
    route       TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    not_before  REAL NOT NULL DEFAULT 0,
    lease_until REAL,
    reason      TEXT,
    updated_at  REAL NOT NULL
);
CREATE INDEX deliveries_due ON deliveries(route, state, not_before);
CREATE INDEX deliveries_event ON deliveries(event_ref);
CREATE TABLE dedup(
    route       TEXT NOT NULL,
    event_name  TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    first_seen  REAL NOT NULL,
    PRIMARY KEY(route, event_name, event_id)
) WITHOUT ROWID;
CREATE INDEX dedup_first_seen ON dedup(first_seen);
CREATE TABLE compacted_counts(
    route       TEXT NOT NULL,
    state       TEXT NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY(route, state)
) WITHOUT ROWID;
CREATE TABLE heartbeat(
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    at          REAL NOT NULL
);
"""
"""Schema version 1; a new file gets it and then every migration in order."""

_MERGE_SCHEMA: Final = """
CREATE INDEX IF NOT EXISTS events_key ON events(event_id, event_name);
CREATE TABLE IF NOT EXISTS dedup_counts(
    route       TEXT NOT NULL,
    pair        TEXT NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY(route, pair)
) WITHOUT ROWID;
"""

_DEDUP_REF_SCHEMA: Final = """
ALTER TABLE dedup ADD COLUMN event_ref INTEGER;
DROP INDEX IF EXISTS events_key;
"""
"""Version 4: a dedup key points at the event that claimed it, so the merge of a duplicate
finds its original through the dedup primary key; the events_key index (one random b-tree page
written per appended event) goes."""

_DEDUP_SWEEP_SCHEMA: Final = """
DROP INDEX IF EXISTS dedup_first_seen;
"""
"""Version 5: expired dedup keys are found by a sweep along the primary key (`_sweep_tx`)
instead of an index on first_seen, which cost a second b-tree insert per claimed key."""

_MIGRATIONS: Final[Mapping[int, str]] = {
    1: PROFILE_SCHEMA,
    2: _MERGE_SCHEMA,
    3: _DEDUP_REF_SCHEMA,
    4: _DEDUP_SWEEP_SCHEMA,
    5: LINKS_SCHEMA,
    6: DEAD_SCHEMA,
    7: LEDGER_V8_SCHEMA,
    8: STATS_SCHEMA,
    9: LEDGER_SCHEMA,
    10: DEDUP_GROUP_SCHEMA,
    11: PAIRS_BOOKED_SCHEMA,
}
"""``{from_version: script}`` upgrading a file from ``from_version`` to ``from_version + 1``."""

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

_ROUTES: Final = """
WITH RECURSIVE r(route) AS (
    SELECT (SELECT min(route) FROM deliveries)
    UNION ALL
    SELECT (SELECT min(route) FROM deliveries WHERE route > r.route) FROM r
    WHERE r.route IS NOT NULL
)
SELECT route FROM r WHERE route IS NOT NULL
"""

_INFO: Final = """
SELECT d.id, d.route, e.event_name, e.event_id, d.state, d.attempts, d.reason, d.updated_at
FROM deliveries d JOIN events e ON e.id = d.event_ref
"""
_RECENT: Final = _INFO + "ORDER BY d.updated_at DESC, d.id DESC LIMIT ?"
_RECENT_ROUTE: Final = _INFO + "WHERE d.route = ? ORDER BY d.updated_at DESC, d.id DESC LIMIT ?"
_DEAD_LETTERS: Final = (
    _INFO + "WHERE d.route = ? AND d.state = 'dead' ORDER BY d.not_before DESC, d.id DESC LIMIT ?"
)


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


class SqliteStore:
    """The `Store` protocol on one SQLite file (see the module docstring)."""

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
        self._profile_sites: set[str] | None = None
        self._profile_sites_at = 0.0
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

    async def append_orders(
        self, events: Sequence[NewEvent], orders: Sequence[OrderEntry], now: float
    ) -> list[AppendResult]:
        """`append`, and write the order ledger rows in the same transaction (sqlite_orders);
        it joins the batch's merged insert like any append."""
        if not orders:
            return await self.append(events, now)
        return await self._append(tuple(events), tuple(orders), now)

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

    async def order_rows(self, site: str, since: float, until: float, limit: int) -> list[OrderRow]:
        if limit <= 0 or until <= since:
            return []
        return await self._read(
            partial(order_rows_tx, site=site, since=since, until=until, limit=limit)
        )

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

    async def dead_page(self, query: DeadQuery) -> DeadPage:
        if query.limit <= 0:
            return DeadPage((), None)
        return await self._read(partial(dead_page_tx, query=query))

    async def replay(self, selection: ReplaySelection, now: float) -> ReplayResult:
        return await self._write(partial(replay_tx, selection=selection, now=now))

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

    # -- stats rollups (gateway/store/sqlite_stats.py) ----------------------------------------

    async def write_stats(self, rows: Sequence[StatRow]) -> None:
        if rows:
            await self._write(partial(write_stats_tx, rows=tuple(rows)))

    async def read_stats(self, query: StatsQuery) -> list[StatRow]:
        if query.end <= query.start or query.step <= 0:
            return []
        return await self._read(partial(read_stats_tx, query=query))

    async def compact_stats(self, before: int) -> int:
        total = 0
        while True:
            deleted, more = await self._write(partial(compact_stats_tx, before=before))
            total += deleted
            if not more:
                return total

    async def book_pairs(self, minute: int, stale_before: int) -> list[StatRow]:
        return await self._write(partial(book_pairs_tx, minute=minute, stale_before=stale_before))

    async def unbooked_pairs(self, minute: int, stale_before: int) -> list[StatRow]:
        return await self._read(
            partial(unbooked_pairs_tx, minute=minute, stale_before=stale_before)
        )

    # -- reads -------------------------------------------------------------------------------

    async def dedup_counts(self) -> Mapping[tuple[str, str], int]:
        return await self._read(
            lambda c: {
                (r, p): n for r, p, n in c.execute("SELECT route, pair, n FROM dedup_counts")
            }
        )

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

    # -- visitor profiles --------------------------------------------------------------------

    async def has_profiles(self, site: str) -> bool:
        """Return whether the site has any visitor profile (cached: a yes for good; a no is
        read again once PROFILE_SITES_RECHECK has passed, since another process sharing the
        file, `run --workers N`, may have written the site's first profile)."""
        if self._profile_sites is None:
            rows = await self._read(
                lambda c: c.execute("SELECT DISTINCT site FROM profiles").fetchall()
            )
            self._profile_sites = {row[0] for row in rows}
            self._profile_sites_at = time.monotonic()
        elif (
            site not in self._profile_sites
            and time.monotonic() - self._profile_sites_at >= PROFILE_SITES_RECHECK
        ):
            self._profile_sites_at = time.monotonic()
            found = await self._read(
                lambda c: c.execute(
                    "SELECT 1 FROM profiles WHERE site = ? LIMIT 1", (site,)
                ).fetchone()
            )
            if found is not None:
                self._profile_sites.add(site)
        return site in self._profile_sites

    async def touch_profile(
        self, site: str, visitor_id: str, update: ProfileUpdate, now: float
    ) -> VisitorProfile:
        if self._profile_sites is not None:
            self._profile_sites.add(site)
        return await self._write(
            partial(touch_profile_tx, site=site, visitor_id=visitor_id, update=update, now=now)
        )

    async def touch_and_append(
        self,
        site: str,
        visitor_id: str,
        update: ProfileUpdate,
        now: float,
        events_for: Callable[[VisitorProfile], Sequence[NewEvent]],
    ) -> tuple[VisitorProfile, list[AppendResult]]:
        if self._profile_sites is not None:
            self._profile_sites.add(site)
        self._sweep_debt += 4  # a hit's event or two, a route or two each
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[VisitorProfile, list[AppendResult]]] = loop.create_future()
        job = _Job(
            partial(
                _touch_and_append_tx,
                site=site,
                visitor_id=visitor_id,
                update=update,
                now=now,
                events_for=events_for,
                cutoff=now - self.dedup_seconds,
                merge_seconds=self.merge_seconds,
            ),
            loop,
            future,
        )
        job.now, job.touch = now, _Touch(site, visitor_id, update, events_for)
        self._writer.submit(job)
        try:
            outcome = await future
        except (sqlite3.Error, OSError) as exc:
            self.availability.failed(exc)
            raise
        if self.availability.reason is not None:
            self.availability.succeeded()
        return outcome

    async def find_profiles(
        self, site: str, queries: Sequence[ProfileQuery]
    ) -> list[VisitorProfile | None]:
        if not queries:
            return []
        read = partial(find_profiles_tx, site=site, queries=tuple(queries))
        if isinstance(self._writer, _LoopWorker):
            # A few primary-key look-ups: cheaper on the loop's own connection than a round
            # trip to the reader thread (two thread switches on a busy core).
            try:
                return self._writer.run_now(read)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
        return await self._read(read)

    async def find_identities(self, site: str, queries: Sequence[ProfileQuery]) -> list[Identity]:
        if not queries:
            return []
        read = partial(find_identities_tx, site=site, queries=tuple(queries))
        if isinstance(self._writer, _LoopWorker):  # as in find_profiles: indexed reads only
            try:
                return self._writer.run_now(read)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
        return await self._read(read)

    async def erase(
        self, site: str, *, visitor_id: str | None, keys: Sequence[str], now: float
    ) -> EraseResult:
        return await self._write(
            partial(erase_tx, site=site, visitor_id=visitor_id, keys=tuple(keys), now=now)
        )

    async def expire_profiles(self, now: float, ttl_seconds: float) -> int:
        return await self._write(partial(expire_profiles_tx, cutoff=now - ttl_seconds))

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

    def _connection(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=True, cached_statements=64
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute(f"PRAGMA cache_size = -{int(self.cache_mb) * 1024}")  # in KiB
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_writer(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connection()
        try:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot use WAL mode on {self.path} (got {mode})")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA journal_size_limit = 67108864")
            # With the busy timeout still on: another process (`run --workers N`) may be
            # creating or migrating the schema at this very moment.
            _migrate(conn)
            if self.writer == "loop":
                conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer thread's job
                # Never sleep on a lock on the loop: a busy BEGIN is retried on the loop's
                # timer (`_LoopWorker`), a busy read goes to the reader thread.
                conn.execute("PRAGMA busy_timeout = 0")
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_checkpointer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        try:
            conn.execute(f"PRAGMA busy_timeout = {CHECKPOINT_BUSY_MS}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_reader(self) -> sqlite3.Connection:
        conn = self._connection()
        conn.execute("PRAGMA query_only = ON")
        return conn

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


# -- schema ------------------------------------------------------------------------------------


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {version} is newer than this gateway's {SCHEMA_VERSION}"
            )
        if version == 0:
            for statement in _BASE_SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            version = 1
        for step in range(version, SCHEMA_VERSION):
            for statement in _MIGRATIONS[step].split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


# -- transactions (run on the writer / reader thread) ------------------------------------------


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


_INSERT_EVENT: Final = (
    "INSERT INTO events(id, site, event_name, event_id, event_time, record, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)

_DELIVER_NEW: Final = (
    "INSERT INTO deliveries(event_ref, route, state, attempts, not_before, updated_at)"
    " SELECT id, ?1, 'pending', 0, ?2, ?3 FROM events WHERE id BETWEEN ?4 AND ?5 ORDER BY id"
)


def _append_tx(
    conn: sqlite3.Connection,
    *,
    events: tuple[NewEvent, ...],
    now: float,
    cutoff: float,
    merge_seconds: float = 0.0,
    paired: set[tuple[str, str, str]] | None = None,
) -> list[AppendResult]:
    """Insert the events' delivery rows, skipping (route, name, id) keys seen since `cutoff`.

    A fixed handful of statements whatever the batch size: event i gets the id ``base + 1 + i``
    up front. When all events share one routes tuple (one site's request, the usual case), the
    events go in with one executemany; if no key of the batch is held (`claim_all_tx`: one
    probe per event), each event's claim is one dedup row; when every key was won (that way or
    key by key), each route's delivery rows go in with one INSERT … SELECT. Otherwise (and for
    mixed routes) `claim_tx` decides key by key; events that won nothing are not kept (rowid
    gaps are harmless) and the lost keys are merged or counted as duplicates (sqlite_dedup.py
    explains the dedup rows).
    """
    (base,) = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
    due = now + merge_seconds if merge_seconds > 0 else 0.0
    first = events[0].routes
    rows = [
        (base + 1 + i, e.site, e.event_name, e.event_id, e.event_time, e.record, now)
        for i, e in enumerate(events)
    ]
    last = base + len(events)
    if all(e.routes is first or e.routes == first for e in events):
        conn.executemany(_INSERT_EVENT, rows)
        claimed: dict[int, list[str]] = {}
        lost: dict[tuple[int, str], Owner] = {}
        if not claim_all_tx(
            conn, events=events, routes=first, first=base + 1, now=now, cutoff=cutoff
        ):
            claimed, lost = claim_tx(conn, events=events, first=base + 1, now=now, cutoff=cutoff)
        if not lost:  # every key won: each route's rows in one statement
            for route in first:
                conn.execute(_DELIVER_NEW, (route, due, now, base + 1, last))
            return [_won_all(len(first))] * len(events)
        unclaimed = [(base + 1 + i,) for i in range(len(events)) if i not in claimed]
        conn.executemany("DELETE FROM events WHERE id = ?", unclaimed)
    else:
        claimed, lost = claim_tx(conn, events=events, first=base + 1, now=now, cutoff=cutoff)
        conn.executemany(_INSERT_EVENT, [rows[i] for i in sorted(claimed)])
    conn.executemany(
        "INSERT INTO deliveries(event_ref, route, state, attempts, not_before, updated_at)"
        " VALUES (?, ?, 'pending', 0, ?, ?)",
        [(base + 1 + i, route, due, now) for i in sorted(claimed) for route in claimed[i]],
    )
    if lost:
        _merge_duplicates(conn, events, lost, paired)
    return [_result(e.routes, claimed.get(i, ())) for i, e in enumerate(events)]


def _append_orders_tx(
    conn: sqlite3.Connection,
    *,
    events: tuple[NewEvent, ...],
    orders: tuple[OrderEntry, ...],
    now: float,
    cutoff: float,
    merge_seconds: float,
) -> list[AppendResult]:
    """`_append_tx`, then the order ledger rows, each with its event's row id when the append
    stored the event (it won a dedup key)."""
    if not events:
        record_orders_tx(conn, orders=orders, now=now)
        return []
    paired: set[tuple[str, str, str]] = set()
    (base,) = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
    results = _append_tx(
        conn,
        events=events,
        now=now,
        cutoff=cutoff,
        merge_seconds=merge_seconds,
        paired=paired,
    )
    refs: dict[EventKey, int] = {}
    for i, (e, result) in enumerate(zip(events, results, strict=True)):
        if result.created:  # event i is stored as row base + 1 + i (see `_append_tx`)
            refs.setdefault((e.site, e.event_name, e.event_id), base + 1 + i)
    record_orders_tx(conn, orders=orders, now=now, paired=paired, refs=refs)
    return results


def _result(routes: tuple[str, ...], won: Sequence[str]) -> AppendResult:
    """The result of an event that won the keys of `won` among its `routes`."""
    if not won or len(won) == len(routes):
        return AppendResult(created=len(won), deduplicated=len(routes) - len(won))
    lost = tuple(r for r in routes if r not in won)
    return AppendResult(created=len(won), deduplicated=len(lost), duplicates=lost)


@functools.cache
def _won_all(routes: int) -> AppendResult:
    """The result of an event that won all its `routes` (immutable: one shared instance)."""
    return AppendResult(created=routes, deduplicated=0)


def _merge_duplicates(
    conn: sqlite3.Connection,
    events: tuple[NewEvent, ...],
    lost: Mapping[tuple[int, str], Owner],
    paired: set[tuple[str, str, str]] | None = None,
) -> None:
    """Fold duplicate copies into their still-undelivered original; count every duplicate.

    `lost` maps the (event index, route) pairs whose dedup key was already claimed to the
    event holding it (sqlite_dedup.claim_tx), in batch order. A duplicate
    whose original delivery is still pending (inside its merge window, or simply not sent yet)
    is merged into the stored record (core.merge: union of identifiers, backend values win);
    after delivery it is only counted, per route and source pair (e.g. "api+loader"). A key
    claimed before schema version 4 has no event ref: its duplicate is only counted.
    """
    merged: set[int] = set()
    for (i, route), owner in lost.items():
        new = events[i]
        row = conn.execute(
            "SELECT e.id, e.record, d.state FROM events e"
            " JOIN deliveries d ON d.event_ref = e.id AND d.route = ?"
            " WHERE e.id = ? AND e.site = ? AND e.event_id = ? AND e.event_name = ?",
            (route, owner, new.site, new.event_id, new.event_name),
        ).fetchone()
        if row is None:
            pair = source_pair_of(None, new.record)
        else:
            ref, old, state = row
            pair = source_pair_of(bytes(old), new.record)
            if pair.startswith("api+") and pair != "api+api":  # a backend and a browser copy
                mark_paired_tx(  # the backend's came first
                    conn,
                    site=new.site,
                    event_name=new.event_name,
                    event_id=new.event_id,
                    route=route,
                )
                if paired is not None:  # the browser's came first: the caller's ledger rows
                    paired.add((route, new.event_name, new.event_id))
            if state == "pending" and ref not in merged and bytes(old) != b"{}":
                try:
                    record, _ = merge_records(bytes(old), new.record)
                except (ValueError, KeyError, TypeError):
                    record = None  # not a gateway event record: keep the original untouched
                if record is not None:
                    conn.execute("UPDATE events SET record = ? WHERE id = ?", (record, ref))
                    merged.add(ref)
        conn.execute(
            "INSERT INTO dedup_counts(route, pair, n) VALUES (?, ?, 1)"
            " ON CONFLICT(route, pair) DO UPDATE SET n = n + 1",
            (route, pair),
        )


def _touch_and_append_tx(
    conn: sqlite3.Connection,
    *,
    site: str,
    visitor_id: str,
    update: ProfileUpdate,
    now: float,
    events_for: Callable[[VisitorProfile], Sequence[NewEvent]],
    cutoff: float,
    merge_seconds: float,
) -> tuple[VisitorProfile, list[AppendResult]]:
    profile = touch_profile_tx(conn, site=site, visitor_id=visitor_id, update=update, now=now)
    events = tuple(events_for(profile))
    if not events:
        return profile, []
    return profile, _append_tx(
        conn, events=events, now=now, cutoff=cutoff, merge_seconds=merge_seconds
    )


def source_pair_of(old: bytes | None, new: bytes) -> str:
    """Return the source pair of a duplicate ("api+loader"; "api" twice → "api+api")."""
    return source_pair(channel_of(old) if old is not None else "unknown", channel_of(new))


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
    routes = [row[0] for row in conn.execute(_ROUTES)]
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
