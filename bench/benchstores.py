"""The stores of bench/scale.py's cases: a throwaway PostgreSQL (tests/pgcluster.py, the tests'
harness) with a fresh database per case, and the row counts of a case's store, SQLite or
PostgreSQL, checked against the events the gateway acknowledged."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchlib import ROOT

sys.path.insert(0, str(ROOT / "tests"))
import pgcluster  # tests/ is not a package; the throwaway server is shared with the tests

DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
"""The bench's PostgreSQL commits durably (a 202 means on disk), as a production server does;
``--pg-no-fsync`` keeps the test server's settings (all three off)."""


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
