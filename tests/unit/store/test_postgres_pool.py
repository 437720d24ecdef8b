"""PgPool: the PostgreSQL store's connection pool (gateway/store/postgres_conn.py)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from asyncpg.exceptions import InternalClientError
from pg_database import admin_dsn, database_name

from gateway.store.postgres_conn import PgPool


async def backends(dsn: str) -> int:
    name = database_name(dsn)
    conn = await asyncpg.connect(admin_dsn(dsn))
    try:
        return int(
            await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name)
        )
    finally:
        await conn.close()


async def test_at_most_max_size_connections_and_waiters_are_served_in_turn(pg_dsn: str) -> None:
    pool = PgPool(pg_dsn, min_size=1, max_size=3)
    await pool.open()
    try:
        assert await backends(pg_dsn) == 1
        busy = 0
        peak = 0

        async def use(i: int) -> int:
            nonlocal busy, peak
            async with pool.acquire() as conn:
                busy += 1
                peak = max(peak, busy)
                value = int(await conn.fetchval("SELECT $1::int, pg_sleep(0.01)", i))
                busy -= 1
                return value

        assert await asyncio.gather(*(use(i) for i in range(30))) == list(range(30))
        assert peak == 3
        assert await backends(pg_dsn) == 3
    finally:
        await pool.close()
    assert await backends(pg_dsn) == 0


async def test_a_broken_connection_is_replaced(pg_dsn: str) -> None:
    pool = PgPool(pg_dsn, min_size=1, max_size=1)
    await pool.open()
    try:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
        admin = await asyncpg.connect(pg_dsn)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        for _ in range(3):  # the dead connection fails at most one statement, then is replaced
            try:
                async with pool.acquire() as conn:
                    assert await conn.fetchval("SELECT pg_backend_pid()") != pid
                break
            except (asyncpg.PostgresError, asyncpg.InterfaceError, InternalClientError) as exc:
                print("first use after the kill failed as expected:", type(exc).__name__)
        else:
            pytest.fail("the pool kept handing out the killed connection")
    finally:
        await pool.close()


async def test_a_cancelled_waiter_loses_no_connection(pg_dsn: str) -> None:
    pool = PgPool(pg_dsn, min_size=1, max_size=1)
    await pool.open()
    try:
        release = asyncio.Event()

        async def hold() -> None:
            async with pool.acquire():
                await release.wait()

        holder = asyncio.create_task(hold())
        await asyncio.sleep(0)
        waiting = asyncio.create_task(pool.acquire().__aenter__())
        await asyncio.sleep(0.01)
        waiting.cancel()
        release.set()
        await holder
        with pytest.raises(asyncio.CancelledError):
            await waiting
        async with asyncio.timeout(5):  # the one connection is still there to take
            async with pool.acquire() as conn:
                assert await conn.fetchval("SELECT 1") == 1
    finally:
        await pool.close()


async def test_a_transaction_commits_or_rolls_back(pg_dsn: str) -> None:
    pool = PgPool(pg_dsn, min_size=1, max_size=2)
    await pool.open()
    try:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TABLE t(x int)")
        async with pool.tx() as conn:
            await conn.execute("INSERT INTO t VALUES (1)")

        async def failing() -> None:
            async with pool.tx() as conn:
                await conn.execute("INSERT INTO t VALUES (2)")
                raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):
            await failing()
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert [r[0] for r in await conn.fetch("SELECT x FROM t")] == [1]
    finally:
        await pool.close()
    with pytest.raises(RuntimeError, match="not open"):
        async with pool.acquire():
            pass
