"""The SQLite store's connections: how the writer, the reader and the checkpointer open theirs.

Every connection is in autocommit mode (the store writes its own ``BEGIN``) with the store's
busy timeout, in-memory temp tables and page cache. The writer's also switches the file to WAL
with the configured ``synchronous`` mode and migrates the schema (gateway/store/sqlite_schema.py);
the loop writer's never checkpoints and never waits on a lock (the checkpointer's job and the
loop's timer, gateway/store/sqlite_workers.py). The reader's is read-only.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Final

from gateway.store.sqlite_schema import _migrate
from gateway.store.sqlite_workers import CHECKPOINT_BUSY_MS

OPEN_RETRY_SECONDS: Final = 10.0
"""How long the writer keeps retrying an open that found the file locked. Processes that
create the same new file together (`run --workers N`, several stores in tests) can get
"database is locked" at once, without the busy handler: switching a new file to WAL and its
first lock escalation are not always retried by SQLite itself."""

OPEN_RETRY_PAUSE: Final = 0.02
"""The first pause between two tries of a locked open; it doubles up to 0.25 s."""


def _locked(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


class SqliteConnections:
    """The connection half of `SqliteGroupCommit` (its base class), which sets these settings."""

    path: Path
    synchronous: str
    busy_timeout_ms: int
    cache_mb: int
    writer: str

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
        """Open the writer's connection, retrying for up to OPEN_RETRY_SECONDS while another
        process holds the new file's lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + OPEN_RETRY_SECONDS
        pause = OPEN_RETRY_PAUSE
        while True:
            try:
                return self._try_connect_writer()
            except sqlite3.OperationalError as exc:
                if not _locked(exc) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.25)

    def prepare(self) -> None:
        """Create (or migrate) the file's schema and switch it to WAL, then close: what the
        supervisor does once before starting workers that would otherwise race to do it."""
        self._connect_writer().close()

    def _try_connect_writer(self) -> sqlite3.Connection:
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
