"""The stores of bench/scale.py's cases: a throwaway PostgreSQL (tests/pgcluster.py, the tests'
harness) with a fresh database per case, and the row counts of a case's store, SQLite or
PostgreSQL, checked against the events the gateway acknowledged."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from benchlib import ROOT

sys.path.insert(0, str(ROOT / "tests"))
import pgcluster  # tests/ is not a package; the throwaway server is shared with the tests

DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
"""The bench's PostgreSQL commits durably (a 202 means on disk), as a production server does;
``--pg-no-fsync`` keeps the test server's settings (all three off)."""


LOCK_SAMPLE_HZ: Final = 20

_LOCK_SAMPLE: Final = """
SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'),
       count(*) FILTER (WHERE wait_event_type = 'LWLock'),
       count(*) FILTER (WHERE state = 'active')
FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()
"""


@dataclass
class LockWaits:
    """What `Postgres.lock_waits` saw: sums over its samples."""

    samples: int = 0
    lock: int = 0
    """Backends waiting on a heavyweight lock (rows, transactions, tuples), summed."""
    lwlock: int = 0
    """Backends waiting on a lightweight lock (buffers, WAL insertion), summed."""
    active: int = 0

    def add(self, lock: int, lwlock: int, active: int) -> None:
        self.samples += 1
        self.lock += lock
        self.lwlock += lwlock
        self.active += active

    def mean(self) -> dict[str, float]:
        """Backends per sample, on average: waiting on a lock, on an LWLock, active."""
        n = max(1, self.samples)
        return {
            "samples": self.samples,
            "lock": self.lock / n,
            "lwlock": self.lwlock / n,
            "active": self.active / n,
        }


class Postgres:
    """The bench's throwaway PostgreSQL: one server for the run, a database per case."""

    def __init__(self, server: pgcluster.PgServer, durable: bool, cpu: int | None) -> None:
        self.server = server
        self.durable = durable
        self.cpu = cpu
        self.count = 0

    def new_database(self, tag: str) -> tuple[str, str]:
        self.count += 1
        name = f"scale_{tag}_{self.count}".lower()
        return name, asyncio.run(pgcluster.create_database(self.server, name))

    def rows(self, name: str) -> dict[str, int]:
        """Row counts of a case's database, as `benchlib.outbox_rows` counts SQLite's."""

        async def count() -> dict[str, int]:
            import asyncpg

            conn = await asyncpg.connect(self.server.dsn(name))
            try:
                out = {"events": int(await conn.fetchval("SELECT count(*) FROM events"))}
                for state, n in await conn.fetch(
                    "SELECT state, count(*) FROM deliveries GROUP BY state"
                ):
                    out[f"deliveries_{state}"] = int(n)
                out["deliveries"] = int(await conn.fetchval("SELECT count(*) FROM deliveries"))
                return out
            finally:
                await conn.close()

        return asyncio.run(count())

    def drop(self, name: str) -> None:
        asyncio.run(pgcluster.drop_database(self.server, name))

    @contextmanager
    def lock_waits(self, name: str) -> Iterator[LockWaits]:
        """Sample the case's database `LOCK_SAMPLE_HZ` times a second while the block runs
        (a thread of its own): how many of its backends wait on a lock (heavyweight: a row,
        a transaction, a tuple; or an LWLock), and how many are active. The figures are in the
        yielded `LockWaits` once the block has ended."""
        found = LockWaits()
        stop = threading.Event()

        async def sample() -> None:
            import asyncpg

            conn = await asyncpg.connect(self.server.dsn(name))
            try:
                while not stop.is_set():
                    row = await conn.fetchrow(_LOCK_SAMPLE, name)
                    found.add(int(row[0]), int(row[1]), int(row[2]))
                    await asyncio.sleep(1 / LOCK_SAMPLE_HZ)
            finally:
                await conn.close()

        thread = threading.Thread(target=lambda: asyncio.run(sample()), daemon=True)
        thread.start()
        try:
            yield found
        finally:
            stop.set()
            thread.join(10)

    def environment(self) -> dict[str, Any]:
        """The server's version, durability and core, for the run's environment."""

        async def version() -> str:
            import asyncpg

            conn = await asyncpg.connect(self.server.dsn())
            try:
                return str(await conn.fetchval("SHOW server_version"))
            finally:
                await conn.close()

        return {"version": asyncio.run(version()), "durable": self.durable, "cpu": self.cpu}


def sqlite_rows(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        out = {"events": conn.execute("SELECT count(*) FROM events").fetchone()[0]}
        for state, n in conn.execute("SELECT state, count(*) FROM deliveries GROUP BY state"):
            out[f"deliveries_{state}"] = n
        out["deliveries"] = conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
        return out
    finally:
        conn.close()


def check_rows(name: str, rows: dict[str, int], accepted: int, slack: int) -> None:
    """Every event answered 202 is stored with its one delivery row (up to `slack` more: the
    requests cut off at the end of a load run may still commit after the client stopped)."""
    if rows["events"] < accepted or not accepted <= rows["deliveries"] <= accepted + slack:
        raise RuntimeError(
            f"{name}: the store holds {rows} but {accepted:,} events were answered 202 (allowed"
            f" surplus {slack:,}): the gateway is not storing what it acknowledges"
        )


@contextmanager
def postgres_server(durable: bool, cpu: int | None) -> Iterator[Postgres]:
    """Start the throwaway PostgreSQL (durable commits unless `durable` is false) on core
    `cpu`; stop and delete it on exit."""
    bin_dir = pgcluster.find_bin_dir()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    with pgcluster.running_server(bin_dir, DURABLE if durable else {}, cpu) as server:
        yield Postgres(server, durable, cpu)
