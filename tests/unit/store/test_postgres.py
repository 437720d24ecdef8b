"""PostgresStore: the Store contract on a real PostgreSQL (tests/pgserver.py), plus what only
a shared database has: several stores (processes) on one database, concurrent migrations."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg
import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("contract")

from contract import StoreContract, StoreFactory  # noqa: E402

from gateway.store.base import Store  # noqa: E402
from gateway.store.postgres import PostgresStore  # noqa: E402
from gateway.store.postgres_schema import MIGRATIONS, SchemaTooNewError, migrate  # noqa: E402


def make(dsn: str) -> PostgresStore:
    return PostgresStore(dsn, pool_min=1, pool_max=4)


class TestPostgresContract(StoreContract):
    @pytest.fixture
    def make_store(self, pg_dsn: str) -> StoreFactory:
        def factory() -> Store:
            return make(pg_dsn)

        return factory


async def test_open_migrates_and_ping_writes(pg_dsn: str) -> None:
    store = make(pg_dsn)
    await store.open()
    try:
        await store.ping()
        await store.ping()
    finally:
        await store.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_version ORDER BY 1")]
        assert versions == list(range(1, len(MIGRATIONS) + 1))
        assert await conn.fetchval("SELECT count(*) FROM heartbeat") == 1
    finally:
        await conn.close()


async def test_migrations_run_twice_and_concurrently_are_idempotent(pg_dsn: str) -> None:
    stores = [make(pg_dsn) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))  # four replicas starting together
    await asyncio.gather(*(s.close() for s in stores))
    again = make(pg_dsn)
    await again.open()  # and once more on a migrated database
    await again.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_version ORDER BY 1")]
        assert versions == list(range(1, len(MIGRATIONS) + 1))  # each applied exactly once
        assert await migrate(conn) == len(MIGRATIONS)
        # every migration script is idempotent by itself too (IF NOT EXISTS)
        for script in MIGRATIONS:
            await conn.execute(script)
    finally:
        await conn.close()


async def test_a_newer_schema_is_refused(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await migrate(conn)
        await conn.execute("INSERT INTO schema_version(version) VALUES ($1)", len(MIGRATIONS) + 1)
    finally:
        await conn.close()
    store = make(pg_dsn)
    with pytest.raises(SchemaTooNewError, match="newer than this gateway"):
        await store.open()
    await store.close()
