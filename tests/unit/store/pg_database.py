"""A test's PostgreSQL database seen from beside the store: its name, the cluster's admin
database, and the plan PostgreSQL would run a statement by."""

from __future__ import annotations

import asyncpg
from store_backends import make


def database_name(dsn: str) -> str:
    """The name of the test's own database (tests/pgserver.py makes one per test)."""
    return dsn.rsplit("/", 1)[1]


def admin_dsn(dsn: str) -> str:
    """The cluster's `postgres` database, from which the test's own is watched or dropped."""
    return dsn.rsplit("/", 1)[0] + "/postgres"


async def index_plan(dsn: str, sql: str, *args: object) -> str:
    """The plan of `sql` on the test's database, migrated by a store opened and closed first,
    with sequential scans off (so every index that can serve the statement shows)."""
    store = make(dsn)
    await store.open()
    await store.close()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET enable_seqscan = off")
        return "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *args))
    finally:
        await conn.close()
