"""PostgresStore shared resumes: the contract on a real PostgreSQL, and a database of schema
version 6 migrated by a replica that opens it."""

from __future__ import annotations

import sys
from pathlib import Path

import asyncpg
import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("contract", "contract_pauses")

from contract import T0  # noqa: E402
from contract_pauses import PauseContract  # noqa: E402
from store_backends import OnPostgres, make  # noqa: E402

from gateway.store.postgres_schema import MIGRATIONS, migrate  # noqa: E402


class TestPostgresPauses(OnPostgres, PauseContract):
    pass


async def test_a_version_6_database_migrates_and_records_resumes(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await migrate(conn, MIGRATIONS[:6]) == 6
        assert await conn.fetchval("SELECT to_regclass('route_resumes')") is None
    finally:
        await conn.close()
    store = make(pg_dsn)
    await store.open()
    try:
        await store.lift_pause("shop:meta", T0)
        assert await store.resumed_since(["shop:meta", "shop:x"], T0 - 1) == {"shop:meta": T0}
    finally:
        await store.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT max(version) FROM schema_version") == len(MIGRATIONS)
    finally:
        await conn.close()
