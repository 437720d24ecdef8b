"""PostgresStore: the Store contract on a real PostgreSQL (tests/pgserver.py), plus what only
a shared database has: several stores (processes) on one database, concurrent migrations."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("contract", "contract_dedup", "contract_orders", "contract_outbox")

from contract import LEASE, T0, ev, ids_of  # noqa: E402
from contract_orders import order  # noqa: E402
from contract_outbox import StoreContract  # noqa: E402
from pg_database import admin_dsn, database_name  # noqa: E402
from pgserver import CuttableProxy, PgServer  # noqa: E402
from store_backends import OnPostgres, make  # noqa: E402

import gateway.store.postgres as postgres_module  # noqa: E402
import gateway.store.postgres_append as postgres_append  # noqa: E402
import gateway.store.postgres_writer as postgres_writer  # noqa: E402
from gateway.store.availability import StoreUnavailableError  # noqa: E402
from gateway.store.base import AppendResult, DeliveryState, NewEvent  # noqa: E402
from gateway.store.postgres import PostgresStore, StoreClosedError  # noqa: E402
from gateway.store.postgres_schema import MIGRATIONS, SchemaTooNewError, migrate  # noqa: E402


class TestPostgresContract(OnPostgres, StoreContract):
    pass


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


# -- helpers -----------------------------------------------------------------------------------


@pytest.fixture
async def store(pg_dsn: str) -> AsyncIterator[PostgresStore]:
    store = make(pg_dsn)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def scalar(dsn: str, sql: str) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def record(event_id: str, channel: str = "api", **user: str) -> bytes:
    """A stored event record (gateway.core.record's shape) of one channel."""
    doc: dict[str, Any] = {"e": "Purchase", "id": event_id, "t": int(T0), "s": "website"}
    doc["u"] = user
    doc["d"] = {"value": 40.0} if channel == "api" else {}
    if channel != "api":
        doc["ch"] = channel
    return json.dumps(doc, separators=(",", ":")).encode()


def copy(event_id: str, channel: str, *routes: str, **user: str) -> NewEvent:
    return ev(event_id, *routes, record=record(event_id, channel, **user))


# -- group commit --------------------------------------------------------------------------------


async def test_group_commit_coalesces_concurrent_appends(store: PostgresStore) -> None:
    calls = 500
    before = store.commits
    results = await asyncio.gather(*(store.append([ev(f"g{i}")], T0) for i in range(calls)))
    commits = store.commits - before
    print(f"group commit: {commits} batches for {calls} concurrent appends")
    assert all(r == [AppendResult(1, 0)] for r in results)
    assert 1 <= commits <= calls // 10
    assert await store.counts() == {("shop:meta", DeliveryState.PENDING): calls}
    leased = await store.lease("shop:meta", 1000, T0, LEASE)
    assert [d.event_id for d in leased] == [f"g{i}" for i in range(calls)]  # in append order


async def test_order_ledger_entries_of_a_batch_are_written_by_one_call(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    write = store._on_orders

    async def counted(conn: Any, orders: Any, now: float, paired: Any) -> None:
        calls.append(len(orders))
        await write(conn, orders, now, paired)

    monkeypatch.setattr(store, "_on_orders", counted)
    before = store.commits
    n = 200
    results = await asyncio.gather(
        *(store.append_orders([ev(f"o{i}")], [order(f"o{i}")], T0) for i in range(n))
    )
    assert all(r == [AppendResult(1, 0)] for r in results)
    assert sum(calls) == n
    assert len(calls) == store.commits - before  # one ledger write per group commit
    assert len(calls) <= n // 10
    rows = await store.order_rows("shop", 0, T0, 1000)
    assert sorted(r.order_id for r in rows) == sorted(f"o{i}" for i in range(n))


async def test_a_group_commit_holds_a_bounded_number_of_events(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_writer, "MAX_BATCH_EVENTS", 25)
    before = store.commits
    sizes = [30, 10, 10, 10, 1, 1]  # an oversized job still goes, alone
    results = await asyncio.gather(
        *(store.append([ev(f"b{j}-{i}") for i in range(n)], T0) for j, n in enumerate(sizes))
    )
    assert [len(r) for r in results] == sizes
    assert store.commits - before == 3  # [30], [10, 10], [10, 1, 1]
    assert (await store.counts())[("shop:meta", DeliveryState.PENDING)] == sum(sizes)


async def test_sequential_appends_commit_each_time(store: PostgresStore) -> None:
    before = store.commits
    for i in range(5):
        await store.append([ev(f"s{i}")], T0)
    assert store.commits - before == 5


async def test_a_failing_job_fails_alone(store: PostgresStore, pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.route = 'poison:x' THEN RAISE EXCEPTION 'poisoned'; END IF;"
            " RETURN NEW; END $$;"
            " CREATE TRIGGER poison BEFORE INSERT ON deliveries"
            " FOR EACH ROW EXECUTE FUNCTION poison()"
        )
    finally:
        await conn.close()
    good = [asyncio.create_task(store.append([ev(f"ok{i}")], T0)) for i in range(10)]
    # "shop:meta" is claimed before "poison:x" fails: that half must vanish too
    bad = asyncio.create_task(store.append([ev("p", "shop:meta", "poison:x")], T0))
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert isinstance(results[-1], asyncpg.RaiseError)
    assert "poisoned" in str(results[-1])
    assert results[:-1] == [[AppendResult(1, 0)]] * 10
    assert await store.counts() == {("shop:meta", DeliveryState.PENDING): 10}
    assert await scalar(pg_dsn, "SELECT count(*) FROM events") == 10
    assert await scalar(pg_dsn, "SELECT count(*) FROM dedup WHERE event_id = 'p'") == 0
    assert await store.append([ev("p")], T0) == [AppendResult(1, 0)]  # the writer carries on


async def test_close_writes_what_was_queued(pg_dsn: str) -> None:
    store = make(pg_dsn)
    await store.open()
    tasks = [asyncio.create_task(store.append([ev(f"d{i}")], T0)) for i in range(200)]
    await asyncio.sleep(0)
    await store.close()
    assert all(t.result() == [AppendResult(1, 0)] for t in tasks)
    with pytest.raises(StoreClosedError):
        await store.append([ev("late")], T0)
    reopened = make(pg_dsn)
    await reopened.open()
    try:
        assert await reopened.counts() == {("shop:meta", DeliveryState.PENDING): 200}
    finally:
        await reopened.close()


async def test_a_writer_that_stopped_fails_appends_instead_of_hanging(pg_dsn: str) -> None:
    store = make(pg_dsn)
    await store.open()
    try:
        assert store._writer is not None
        store._writer.cancel()  # as if the loop were going away under it
        await asyncio.sleep(0)
        with pytest.raises(StoreClosedError):
            await asyncio.wait_for(store.append([ev("x")], T0), 5)
    finally:
        await store.close()


async def test_cancelled_append_still_commits(store: PostgresStore) -> None:
    task = asyncio.create_task(store.append([ev("c")], T0))
    await asyncio.sleep(0)  # queued
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.append([ev("after")], T0)  # batches run in order: "c" is in by now
    assert await store.counts() == {("shop:meta", DeliveryState.PENDING): 2}


# -- rows kept -----------------------------------------------------------------------------------


@pytest.mark.parametrize("routes", [("shop:meta",), ("shop:meta", "shop:ga4")])
async def test_an_event_that_wins_no_key_keeps_no_row(
    store: PostgresStore, pg_dsn: str, routes: tuple[str, ...]
) -> None:
    await store.append([ev("a", *routes)], T0)
    results = await store.append([ev("a", *routes), ev("b", *routes), ev("b", *routes)], T0 + 1)
    assert [r.created for r in results] == [0, len(routes), 0]
    ids = "SELECT string_agg(event_id, ',' ORDER BY id) FROM events"
    assert await scalar(pg_dsn, ids) == "a,b"
    assert await scalar(pg_dsn, "SELECT count(*) FROM deliveries") == 2 * len(routes)
    await store.append([ev("c", "shop:meta")], T0 + 2)
    (mixed,) = await store.append([ev("c", "shop:meta", "shop:ga4")], T0 + 3)
    assert (mixed.created, mixed.deduplicated, mixed.duplicates) == (1, 1, ("shop:meta",))
    assert await scalar(pg_dsn, "SELECT count(*) FROM events WHERE event_id = 'c'") == 2


async def test_compact_frees_records_only_when_no_route_needs_them(
    store: PostgresStore, pg_dsn: str
) -> None:
    await store.append([ev("a", "shop:meta", "shop:ga4"), ev("b")], T0)
    meta = await store.lease("shop:meta", 10, T0, LEASE)
    await store.mark_done([d.id for d in meta], T0)
    assert await store.compact(T0 + 100, keep_done_seconds=10, dedup_seconds=1e9) == 2
    assert await scalar(pg_dsn, "SELECT string_agg(event_id, ',') FROM events") == "a"
    (ga4,) = await store.lease("shop:ga4", 10, T0 + 100, LEASE)
    assert ga4.record == b'{"id":"a"}'
    await store.mark_done([ga4.id], T0 + 100)
    assert await store.compact(T0 + 200, keep_done_seconds=10, dedup_seconds=1e9) == 1
    assert await scalar(pg_dsn, "SELECT count(*) FROM events") == 0
    assert await scalar(pg_dsn, "SELECT count(*) FROM deliveries") == 0
    assert await store.counts() == {
        ("shop:meta", DeliveryState.DONE): 2,
        ("shop:ga4", DeliveryState.DONE): 1,
    }


async def test_compact_works_in_chunks(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_module, "COMPACT_CHUNK", 3)
    monkeypatch.setattr(postgres_module, "SWEEP_CHUNK", 3)
    await store.append([ev(f"e{i}", "s:a", "s:b") for i in range(10)], T0)
    for route in ("s:a", "s:b"):
        rows = await store.lease(route, 100, T0, LEASE)
        await store.mark_done([d.id for d in rows], T0)
    assert await store.compact(T0 + 10, keep_done_seconds=1, dedup_seconds=5) == 40
    assert await store.counts() == {
        ("s:a", DeliveryState.DONE): 10,
        ("s:b", DeliveryState.DONE): 10,
    }
    assert await store.compact(T0 + 10, keep_done_seconds=1, dedup_seconds=5) == 0


async def test_the_sweep_goes_on_where_the_last_compaction_stopped(
    store: PostgresStore, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_module, "SWEEP_CHUNK", 4)
    monkeypatch.setattr(postgres_module, "SWEEP_FACTOR", 1)
    await store.append([ev(f"k{i:02d}") for i in range(10)], T0)
    store._sweep_debt = 0  # a budget of one chunk per compaction
    assert await store.compact(T0 + 100, keep_done_seconds=0, dedup_seconds=10) == 4
    assert await store.compact(T0 + 100, keep_done_seconds=0, dedup_seconds=10) == 4
    assert await store.compact(T0 + 100, keep_done_seconds=0, dedup_seconds=10) == 2
    assert await scalar(pg_dsn, "SELECT count(*) FROM dedup") == 0


# -- duplicates: merged into a pending original, counted always ---------------------------------


async def test_a_duplicate_merges_into_its_pending_original_and_is_counted(
    store: PostgresStore,
) -> None:
    await store.append([copy("o1", "api", ip="10.0.0.1")], T0)
    assert await store.append([copy("o1", "loader", fbp="fb.1.2.3")], T0 + 1) == [
        AppendResult(0, 1)
    ]
    assert await store.dedup_counts() == {("shop:meta", "api+loader"): 1}
    (leased,) = await store.lease("shop:meta", 10, T0 + 2, LEASE)
    merged = json.loads(leased.record)
    assert merged["u"]["ip"] == "10.0.0.1"
    assert merged["u"]["fbp"] == "fb.1.2.3"
    assert merged["d"]["value"] == 40.0
    # once leased the original is not changed any more: the duplicate is only counted
    assert await store.append([copy("o1", "loader", fbc="fb.1.2.late")], T0 + 3) == [
        AppendResult(0, 1)
    ]
    assert await store.dedup_counts() == {("shop:meta", "api+loader"): 2}
    await store.mark_retry([leased.id], T0 + 4, "later", T0 + 3)
    (again,) = await store.lease("shop:meta", 10, T0 + 5, LEASE)
    assert "fbc" not in json.loads(again.record)["u"]


async def test_the_merge_window_holds_new_rows_back(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn, pool_min=1, pool_max=2, merge_seconds=5.0)
    await store.open()
    try:
        await store.append([copy("o2", "loader", fbp="fb.1.2.3")], T0)
        assert await store.lease("shop:meta", 10, T0 + 4.9, LEASE) == []
        await store.append([copy("o2", "api", ip="10.0.0.2")], T0 + 1)
        (leased,) = await store.lease("shop:meta", 10, T0 + 5, LEASE)
        user = json.loads(leased.record)["u"]
        assert (user["ip"], user["fbp"]) == ("10.0.0.2", "fb.1.2.3")
        assert await store.dedup_counts() == {("shop:meta", "api+loader"): 1}
    finally:
        await store.close()


# -- many processes on one database ------------------------------------------------------------


async def test_two_stores_leasing_concurrently_never_lease_the_same_row(pg_dsn: str) -> None:
    """Two replicas drain one route together: every row is leased exactly once."""
    first, second = make(pg_dsn), make(pg_dsn)
    await asyncio.gather(first.open(), second.open())
    try:
        await first.append([ev(f"e{i}") for i in range(300)], T0)
        await second.append([ev(f"f{i}") for i in range(300)], T0)
        leased: list[tuple[str, int]] = []

        async def drain(name: str, store: PostgresStore) -> None:
            for _ in range(400):  # bounded: 600 rows, several per lease
                batch = await store.lease("shop:meta", 7, T0, LEASE)
                if not batch:
                    return
                leased.extend((name, d.id) for d in batch)
                await store.mark_done([d.id for d in batch], T0 + 1)

        await asyncio.gather(*(drain(n, s) for n in "ab" for s in (first, second)))
        ids = [i for _, i in leased]
        assert len(ids) == 600
        assert len(set(ids)) == 600
        assert {name for name, _ in leased} == {"a", "b"}
        assert await first.counts() == {("shop:meta", DeliveryState.DONE): 600}
    finally:
        await asyncio.gather(first.close(), second.close())


async def test_the_lease_of_a_store_that_died_is_taken_over_after_it_expires(pg_dsn: str) -> None:
    dying, survivor = make(pg_dsn), make(pg_dsn)
    await dying.open()
    await survivor.open()
    try:
        await survivor.append([ev(f"e{i}") for i in range(5)], T0)
        taken = await dying.lease("shop:meta", 3, T0, LEASE)
        assert len(taken) == 3
    finally:
        await dying.close()  # it never marks what it leased
    try:
        rest = await survivor.lease("shop:meta", 10, T0 + 1, LEASE)
        assert [d.event_id for d in rest] == ["e3", "e4"]
        assert await survivor.lease("shop:meta", 10, T0 + LEASE - 1, LEASE) == []
        back = await survivor.lease("shop:meta", 10, T0 + LEASE, LEASE)
        assert ids_of(back) == ids_of(taken)
        await survivor.mark_done(ids_of(back) + ids_of(rest), T0 + LEASE + 1)
        assert await survivor.counts() == {("shop:meta", DeliveryState.DONE): 5}
    finally:
        await survivor.close()


async def test_two_stores_appending_the_same_events_deliver_each_once_and_merge_once(
    pg_dsn: str,
) -> None:
    """The browser copy reaches one replica, the backend copy the other, at the same moment:
    one delivery per (route, event), each duplicate merged into it and counted once."""
    api, browser = make(pg_dsn), make(pg_dsn)
    await asyncio.gather(api.open(), browser.open())
    routes = ("shop:meta", "shop:tiktok")
    try:
        n = 150
        results = await asyncio.gather(
            *(api.append([copy(f"o{i}", "api", *routes, ip="10.0.0.1")], T0) for i in range(n)),
            *(
                browser.append([copy(f"o{i}", "loader", *routes, fbp=f"fb.{i}")], T0)
                for i in range(n)
            ),
        )
        created = sum(r.created for batch in results for r in batch)
        deduplicated = sum(r.deduplicated for batch in results for r in batch)
        assert (created, deduplicated) == (2 * n, 2 * n)
        counts = await api.dedup_counts()
        assert sum(counts.values()) == 2 * n
        assert set(counts) == {(r, "api+loader") for r in routes}
        for route in routes:
            leased = await browser.lease(route, 1000, T0, LEASE)
            assert sorted(d.event_id for d in leased) == sorted(f"o{i}" for i in range(n))
            for d in leased:  # whichever copy came first, the other was merged into it
                user = json.loads(d.record)["u"]
                assert user["ip"] == "10.0.0.1"
                assert user["fbp"] == f"fb.{d.event_id[1:]}"
    finally:
        await asyncio.gather(api.close(), browser.close())


async def test_a_store_whose_database_is_gone_reports_unavailable(pg_dsn: str) -> None:
    store = make(pg_dsn)
    await store.open()
    try:
        conn = await asyncpg.connect(admin_dsn(pg_dsn))
        try:
            name = database_name(pg_dsn)
            await conn.execute(f"DROP DATABASE {name} WITH (FORCE)")  # kills its sessions
        finally:
            await conn.close()
        with pytest.raises(StoreUnavailableError):
            await store.append([ev("x")], T0)
        with pytest.raises(StoreUnavailableError):
            await store.ping()
        assert store.availability.reason == "database does not exist"
    finally:
        await store.close()


async def test_a_store_reconnects_after_its_sessions_were_killed(
    store: PostgresStore, pg_dsn: str
) -> None:
    await store.append([ev("before")], T0)
    name = database_name(pg_dsn)
    conn = await asyncpg.connect(admin_dsn(pg_dsn))
    try:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
            name,
        )
        assert killed >= 1
    finally:
        await conn.close()
    for attempt in range(20):  # a connection killed under a statement fails that statement only
        try:
            await store.append([ev("after")], T0)
            break
        except StoreUnavailableError:
            await asyncio.sleep(0.05 * attempt)
    await store.ping()
    assert store.availability.reason is None
    assert await store.counts() == {("shop:meta", DeliveryState.PENDING): 2}


async def test_hot_statements_read_indexes_not_the_whole_outbox(
    store: PostgresStore, pg_dsn: str
) -> None:
    """At depth (20,000 rows on two routes, most of them delivered, a backlog waiting) the
    lease, the backlog, the dead-letter listing and compaction read index ranges, never a
    sequential scan of the deliveries."""
    for b in range(20):
        await store.append([ev(f"e{b}-{i}", "s:a", "s:b") for i in range(500)], T0)
    for route in ("s:a", "s:b"):
        leased = await store.lease(route, 9000, T0, LEASE)
        await store.mark_done(ids_of(leased), T0 + 1)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("ANALYZE")
        plans = {
            "lease": (postgres_module._LEASE, "s:a", T0, 100, T0 + 30),
            "backlog": (postgres_module._BACKLOG, ["s:a", "s:b"], 1000),
            "dead": (postgres_module._DEAD_LETTERS, "s:a", 50),
            "compact": (postgres_module._COMPACT, ["s:a", "s:b"], T0 + 10, 1000),
            "sweep": (postgres_module._SWEEP, "s:a", "", "", 2000, T0 + 10),
            "merge": (postgres_append._ORIGINALS, ["s:a"], ["Purchase"], ["e1-1"], ["shop"]),
            "records": (postgres_append._SET_RECORDS, [1, 2], [b"{}", b"{}"]),
        }
        for name, (sql, *args) in plans.items():
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *args))
            for table in ("deliveries", "events", "dedup"):
                assert f"Seq Scan on {table}" not in plan, (name, plan)
            assert "Index" in plan, (name, plan)
    finally:
        await conn.close()


async def test_a_database_that_stops_answering_fails_appends_after_the_statement_timeout(
    pg_server: PgServer, pg_dsn: str
) -> None:
    proxy = CuttableProxy(pg_server.host, pg_server.port)
    await proxy.start()
    database = database_name(pg_dsn)
    store = make(f"postgresql://postgres@127.0.0.1:{proxy.port}/{database}")
    store._pool.statement_timeout = 0.5
    await store.open()
    try:
        await store.append([ev("before")], T0)
        proxy.freeze()
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="database unreachable"):
            await asyncio.wait_for(store.append([ev("stuck")], T0), 20)
        assert time.monotonic() - started < 10  # the timeout, not the test's guard
        proxy.thaw()
        for _ in range(50):  # the connection that timed out was dropped; a fresh one works
            try:
                await store.append([ev("after")], T0)
                break
            except StoreUnavailableError:
                await asyncio.sleep(0.1)
        counts = await store.counts()
        assert counts[("shop:meta", DeliveryState.PENDING)] in (2, 3)  # "stuck" may have landed
        assert store.availability.reason is None
    finally:
        await store.close()
        await proxy.cut()


async def test_the_stores_connections_never_jit_compile(store: PostgresStore) -> None:
    """A group commit of thousands of rows passes the JIT cost thresholds; compiling its plan
    took PostgreSQL ~10x the statement's own run time (postgres_conn.SESSION_SETTINGS)."""
    async with store._pool.acquire() as conn:
        assert await conn.fetchval("SHOW jit") == "off"
