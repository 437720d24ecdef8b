"""SqliteStore: the Store contract plus what is specific to SQLite (WAL, group commit, threads)."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, closing, contextmanager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("contract", "contract_dedup", "contract_outbox", "contract_profiles")

from contract import LEASE, T0, ev  # noqa: E402
from contract_outbox import StoreContract  # noqa: E402
from contract_profiles import ProfileContract  # noqa: E402
from sqlite_files import file_at_version, pending_purchase  # noqa: E402
from store_backends import OnSqlite  # noqa: E402
from store_fixtures import writer_mode  # noqa: E402, F401 - a fixture

import gateway.store.sqlite as sqlite_module  # noqa: E402
import gateway.store.sqlite_outbox as sqlite_outbox  # noqa: E402
import gateway.store.sqlite_profiles as sqlite_profiles  # noqa: E402
import gateway.store.sqlite_writer as sqlite_writer  # noqa: E402
from gateway.core.profile import ProfileUpdate, VisitorProfile  # noqa: E402
from gateway.store.availability import StoreUnavailableError  # noqa: E402
from gateway.store.base import (  # noqa: E402
    AppendResult,
    DeliveryState,
    NewEvent,
    ProfileQuery,
)
from gateway.store.sqlite import SqliteStore  # noqa: E402
from gateway.store.sqlite_schema import SCHEMA_VERSION  # noqa: E402
from gateway.store.sqlite_workers import StoreClosedError, _LoopWorker  # noqa: E402


class TestSqliteContract(OnSqlite, StoreContract):
    file = "data/outbox.db"  # the directory does not exist yet


class TestSqliteProfileContract(OnSqlite, ProfileContract):
    file = "profiles.db"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "outbox.db"


@pytest.fixture
async def store(db_path: Path, writer: str) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(db_path, writer=writer)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A second, plain connection to the same file (what an operator's sqlite3 shell sees)."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        yield conn


def scalar(path: Path, sql: str) -> object:
    with raw(path) as conn:
        return conn.execute(sql).fetchone()[0]


@asynccontextmanager
async def writer_paused(store: SqliteStore) -> AsyncIterator[None]:
    """Hold the writer so that everything submitted meanwhile queues up and then runs as ONE
    batch (one transaction) once the block exits.

    The thread writer is held inside a job of its own (one extra transaction, see `HOLD`); the
    loop writer simply is not flushed until the block exits.
    """
    if store.writer == "loop":
        worker = store._writer
        assert isinstance(worker, _LoopWorker)
        worker._scheduled = True  # a flush counts as scheduled: submit() schedules none
        try:
            yield
        finally:
            worker._scheduled = False
            worker._flush()
        return
    entered, gate = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        entered.set()
        gate.wait(10)

    blocker = asyncio.ensure_future(store._write(hold))
    try:
        while not entered.is_set():
            await asyncio.sleep(0.001)
        yield
    finally:
        gate.set()
        await blocker


def hold(store: SqliteStore) -> int:
    """Transactions `writer_paused` itself commits: the thread writer's holding job."""
    return 1 if store.writer == "thread" else 0


async def submitted() -> None:
    """Let every task created so far run up to its first await (its job is queued then)."""
    for _ in range(3):
        await asyncio.sleep(0)


# -- configuration & schema --------------------------------------------------------------------


async def test_wal_mode_schema_version_and_synchronous(store: SqliteStore, db_path: Path) -> None:
    assert scalar(db_path, "PRAGMA journal_mode") == "wal"
    assert scalar(db_path, "PRAGMA user_version") == SCHEMA_VERSION
    assert store.synchronous == "NORMAL"
    level = await store._write(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0])
    assert level == 1  # NORMAL


async def test_synchronous_full(db_path: Path) -> None:
    store = SqliteStore(db_path, synchronous="full")
    await store.open()
    try:
        level = await store._write(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0])
        assert level == 2  # FULL
        assert await store.append([ev("a")], T0) == [AppendResult(1, 0)]
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("path", "kwargs"),
    [
        ("x.db", {"synchronous": "OFF"}),
        ("x.db", {"commit_interval": -1.0}),
        (":memory:", {}),
    ],
)
def test_rejects_bad_configuration(path: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"."):
        SqliteStore(path, **kwargs)  # type: ignore[arg-type]


async def test_newer_schema_is_refused(db_path: Path) -> None:
    with raw(db_path) as conn:
        conn.execute("PRAGMA user_version = 99")
    store = SqliteStore(db_path)
    with pytest.raises(sqlite3.DatabaseError, match="newer"):
        await store.open()
    await store.close()
    with pytest.raises(StoreClosedError):
        await store.append([ev("a")], T0)


async def test_closed_store_refuses_work(db_path: Path) -> None:
    store = SqliteStore(db_path)
    with pytest.raises(StoreClosedError):
        await store.ping()
    await store.open()
    await store.open()  # idempotent
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreClosedError):
        await store.append([ev("a")], T0)
    with pytest.raises(StoreClosedError):
        await store.counts()
    await store.open()  # the same object opens again on the same file
    try:
        assert await store.append([ev("a")], T0) == [AppendResult(1, 0)]
    finally:
        await store.close()


# -- threads, group commit, transactions -------------------------------------------------------


async def test_group_commit_coalesces_concurrent_appends(store: SqliteStore) -> None:
    calls = 500
    before = store.commits
    results = await asyncio.gather(*(store.append([ev(f"g{i}")], T0) for i in range(calls)))
    commits = store.commits - before
    print(f"group commit: {commits} commits for {calls} concurrent appends")
    assert all(r == [AppendResult(1, 0)] for r in results)
    assert 1 <= commits <= calls // 10
    counts = await store.counts()
    assert counts[("shop:meta", DeliveryState.PENDING)] == calls


async def test_sequential_appends_commit_each_time(store: SqliteStore) -> None:
    before = store.commits
    for i in range(5):
        await store.append([ev(f"s{i}")], T0)
    assert store.commits - before == 5


async def test_failed_transaction_fails_all_its_futures(store: SqliteStore, db_path: Path) -> None:
    with raw(db_path) as conn:
        conn.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON deliveries WHEN NEW.route = 'poison:x'"
            " BEGIN SELECT RAISE(ROLLBACK, 'poisoned'); END"
        )
    async with writer_paused(store):
        good = [asyncio.create_task(store.append([ev(f"ok{i}")], T0)) for i in range(10)]
        bad = asyncio.create_task(store.append([ev("p", "shop:meta", "poison:x")], T0))
        later = [asyncio.create_task(store.append([ev(f"late{i}")], T0)) for i in range(10)]
        await submitted()
        commits = store.commits  # stable: the writer is held inside a job
    results = await asyncio.gather(*good, bad, *later, return_exceptions=True)
    assert all(isinstance(r, sqlite3.IntegrityError) for r in results), results
    assert "poisoned" in str(results[0])
    assert store.commits == commits + hold(store)  # the failed batch committed nothing
    assert await store.counts() == {}
    assert scalar(db_path, "SELECT count(*) FROM events") == 0
    assert scalar(db_path, "SELECT count(*) FROM dedup") == 0
    # the writer carries on
    assert await store.append([ev("ok0")], T0) == [AppendResult(1, 0)]


async def test_failing_job_rolls_back_alone(store: SqliteStore, db_path: Path) -> None:
    with raw(db_path) as conn:
        conn.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON deliveries WHEN NEW.route = 'poison:x'"
            " BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
        )
    async with writer_paused(store):
        good = [asyncio.create_task(store.append([ev(f"ok{i}")], T0)) for i in range(10)]
        # "shop:meta" is written before "poison:x" fails: that half must vanish too
        bad = asyncio.create_task(store.append([ev("p", "shop:meta", "poison:x")], T0))
        await submitted()
        commits = store.commits  # stable: the writer is held inside a job
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert isinstance(results[-1], sqlite3.IntegrityError)
    assert results[:-1] == [[AppendResult(1, 0)]] * 10
    assert store.commits == commits + hold(store) + 1  # ONE for all eleven
    assert await store.counts() == {("shop:meta", DeliveryState.PENDING): 10}
    assert scalar(db_path, "SELECT count(*) FROM events") == 10
    assert scalar(db_path, "SELECT count(*) FROM dedup WHERE event_id = 'p'") == 0


@pytest.fixture
async def thread_store(db_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(db_path, writer="thread")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_event_loop_keeps_running_during_large_append_with_thread_writer(
    thread_store: SqliteStore,
) -> None:
    store = thread_store
    # The ticker sleeps 1 ms per tick like an idle server between requests. (A ticker spinning
    # on sleep(0) works too but makes the writer fight it for the GIL and slows the append ~10x.)
    ticks = 0
    running = True

    async def ticker() -> None:
        nonlocal ticks
        while running:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    start = ticks
    events = [ev(f"big{i}", "shop:meta", "shop:ga4") for i in range(5000)]
    results = await store.append(events, T0)
    during = ticks - start
    running = False
    await task
    assert results == [AppendResult(2, 0)] * 5000
    # the append takes ~0.1 s; a loop blocked by it would tick at most once
    assert during >= 5, during
    writer_thread = await store._write(lambda conn: threading.get_ident())
    reader_thread = await store._read(lambda conn: threading.get_ident())
    assert threading.get_ident() not in (writer_thread, reader_thread)
    assert writer_thread != reader_thread


async def test_close_drains_queued_jobs(db_path: Path) -> None:
    store = SqliteStore(db_path)
    await store.open()
    tasks = [asyncio.create_task(store.append([ev(f"d{i}")], T0)) for i in range(200)]
    await submitted()
    await store.close()
    assert all(t.result() == [AppendResult(1, 0)] for t in tasks)

    reopened = SqliteStore(db_path)
    await reopened.open()
    try:
        assert await reopened.counts() == {("shop:meta", DeliveryState.PENDING): 200}
    finally:
        await reopened.close()


async def test_cancelled_append_still_commits(store: SqliteStore) -> None:
    async with writer_paused(store):
        task = asyncio.create_task(store.append([ev("c")], T0))
        await submitted()
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.ping()  # jobs run in order: the append is committed now
    assert await store.counts() == {("shop:meta", DeliveryState.PENDING): 1}


# -- compaction detail -------------------------------------------------------------------------


async def test_compact_frees_records_only_when_no_route_needs_them(
    store: SqliteStore, db_path: Path
) -> None:
    await store.append([ev("a", "shop:meta", "shop:ga4"), ev("b")], T0)
    meta = await store.lease("shop:meta", 10, T0, LEASE)
    await store.mark_done([d.id for d in meta], T0)
    assert await store.compact(T0 + 100, keep_done_seconds=10, dedup_seconds=1e9) == 2
    assert scalar(db_path, "SELECT group_concat(event_id) FROM events") == "a"  # ga4 pending

    (ga4,) = await store.lease("shop:ga4", 10, T0 + 100, LEASE)
    assert ga4.record == b'{"id":"a"}'
    await store.mark_done([ga4.id], T0 + 100)
    assert await store.compact(T0 + 200, keep_done_seconds=10, dedup_seconds=1e9) == 1
    assert scalar(db_path, "SELECT count(*) FROM events") == 0
    assert scalar(db_path, "SELECT count(*) FROM deliveries") == 0
    assert await store.counts() == {
        ("shop:meta", DeliveryState.DONE): 2,
        ("shop:ga4", DeliveryState.DONE): 1,
    }


@pytest.mark.parametrize("routes", [("shop:meta",), ("shop:meta", "shop:ga4")])
async def test_an_event_that_wins_no_key_keeps_no_row(
    store: SqliteStore, db_path: Path, routes: tuple[str, ...]
) -> None:
    """Duplicates (in the batch and of an earlier one) leave one event row per key owner."""
    await store.append([ev("a", *routes)], T0)
    results = await store.append([ev("a", *routes), ev("b", *routes), ev("b", *routes)], T0 + 1)
    assert [r.created for r in results] == [0, len(routes), 0]
    assert scalar(db_path, "SELECT group_concat(event_id) FROM events ORDER BY id") == "a,b"
    assert scalar(db_path, "SELECT count(*) FROM deliveries") == 2 * len(routes)
    # one route lost, the other won: the event is kept for the route it won
    await store.append([ev("c", "shop:meta")], T0 + 2)
    (mixed,) = await store.append([ev("c", "shop:meta", "shop:ga4")], T0 + 3)
    assert (mixed.created, mixed.deduplicated) == (1, 1)
    assert scalar(db_path, "SELECT count(*) FROM events WHERE event_id = 'c'") == 2


async def test_compact_works_in_chunks(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_module, "COMPACT_CHUNK", 3)
    monkeypatch.setattr(sqlite_module, "SWEEP_CHUNK", 3)
    await store.append([ev(f"e{i}", "s:a", "s:b") for i in range(10)], T0)
    for route in ("s:a", "s:b"):
        rows = await store.lease(route, 100, T0, LEASE)
        await store.mark_done([d.id for d in rows], T0)
    before = store.commits
    assert await store.compact(T0 + 10, keep_done_seconds=1, dedup_seconds=5) == 40
    # 20 delivery rows and 10 dedup rows (one per event, holding both routes' keys), 3 a go
    assert store.commits - before >= 20 // 3 + 10 // 3
    assert await store.counts() == {
        ("s:a", DeliveryState.DONE): 10,
        ("s:b", DeliveryState.DONE): 10,
    }


async def test_lease_uses_the_index(store: SqliteStore, db_path: Path) -> None:
    with raw(db_path) as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN " + sqlite_outbox._LEASE_CANDIDATES,
            {"route": "r", "limit": 10, "now": T0},
        ).fetchall()
    details = [row[3] for row in plan]
    searches = [d for d in details if d.startswith("SEARCH deliveries")]
    assert len(searches) == 3
    assert all("deliveries_due" in d for d in searches)
    assert not any(d.startswith("SCAN deliveries") for d in details)


async def test_a_version_1_file_is_migrated_to_the_current_schema(tmp_path: Path) -> None:
    """A database written before profiles and merging existed opens, keeps its rows, and works."""
    path = tmp_path / "v1.db"
    with file_at_version(path, 1) as conn:
        pending_purchase(conn, "old", 1, 1)
    store = SqliteStore(path)
    await store.open()
    try:
        leased = await store.lease("shop:meta", 10, T0, LEASE)
        assert [d.event_id for d in leased] == ["old"]
        await store.append([ev("new")], T0)
        assert await store.dedup_counts() == {}
        assert await store.find_profiles("shop", []) == []
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_a_version_3_file_keeps_deduplicating_its_keys_after_migration(
    tmp_path: Path,
) -> None:
    """Keys claimed before dedup rows named their event still block repeats (counted, not
    merged); keys claimed after the migration merge into their pending original."""
    path = tmp_path / "v3.db"
    with file_at_version(path, 3) as conn:
        pending_purchase(conn, "old", 1, 1)
        conn.execute(
            "INSERT INTO dedup(route, event_name, event_id, first_seen)"
            f" VALUES ('shop:meta', 'Purchase', 'old', {T0})"
        )
        assert "events_key" in {r[1] for r in conn.execute("PRAGMA index_list(events)")}
    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.append([ev("old")], T0 + 1) == [AppendResult(0, 1)]
        assert await store.append([ev("new")], T0 + 1) == [AppendResult(1, 0)]
        assert await store.append([ev("new")], T0 + 2) == [AppendResult(0, 1)]
        assert await store.dedup_counts() == {
            ("shop:meta", "api+unknown"): 1,  # "old": no event to merge into, only counted
            ("shop:meta", "api+api"): 1,
        }
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert "events_key" not in {r[1] for r in conn.execute("PRAGMA index_list(events)")}
        assert "dedup_first_seen" not in {r[1] for r in conn.execute("PRAGMA index_list(dedup)")}
        refs = dict(conn.execute("SELECT event_id, event_ref FROM dedup").fetchall())
    assert refs["old"] == 0  # claimed before version 4: names no event (ids start at 1)
    assert refs["new"] is not None


async def test_a_lone_failing_write_leaves_nothing_and_the_next_one_works(
    store: SqliteStore, db_path: Path
) -> None:
    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO heartbeat(id, at) VALUES (1, 5) ON CONFLICT DO UPDATE SET at = 5")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await store._write(half_then_fail)
    assert scalar(db_path, "SELECT count(*) FROM heartbeat WHERE at = 5") == 0
    assert await store.append([ev("after")], T0) == [AppendResult(1, 0)]


async def test_connections_use_the_configured_page_cache(db_path: Path) -> None:
    store = SqliteStore(db_path, cache_mb=8)
    await store.open()
    try:
        size = await store._write(lambda c: c.execute("PRAGMA cache_size").fetchone()[0])
        assert size == -8 * 1024  # KiB
    finally:
        await store.close()
    with pytest.raises(ValueError, match="cache_mb"):
        SqliteStore(db_path, cache_mb=0)


class TestDedupSweep:
    """Expired dedup keys are deleted by a sweep along the primary key, not found by an index."""

    async def test_the_sweep_goes_on_where_the_last_compaction_stopped(
        self, store: SqliteStore, db_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(sqlite_module, "SWEEP_CHUNK", 3)
        monkeypatch.setattr(sqlite_module, "SWEEP_FACTOR", 0)  # budget: one chunk a compaction
        await store.append([ev(f"e{i}") for i in range(10)], T0)
        await store.append([ev("fresh")], T0 + 500)
        deleted = [
            await store.compact(T0 + 1000, keep_done_seconds=1e9, dedup_seconds=600)
            for _ in range(5)
        ]
        # keys in order e0 e1 e2 | e3 e4 e5 | e6 e7 e8 | e9 fresh (end: back to the start)
        assert deleted == [3, 3, 3, 1, 0]
        assert scalar(db_path, "SELECT group_concat(event_id) FROM dedup") == "fresh"

    async def test_a_full_pass_per_compaction_when_keys_arrive_faster_than_one_chunk(
        self, store: SqliteStore, db_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(sqlite_module, "SWEEP_CHUNK", 4)
        await store.append([ev(f"e{i}", "s:a", "s:b") for i in range(10)], T0)
        # 20 keys claimed since the last compaction: it visits up to 40, i.e. all of them
        assert await store.compact(T0 + 1000, keep_done_seconds=1e9, dedup_seconds=600) == 20
        assert scalar(db_path, "SELECT count(*) FROM dedup") == 0

    async def test_an_expired_key_not_yet_swept_is_claimed_again(
        self, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(store, "dedup_seconds", 600)
        assert await store.append([ev("a")], T0) == [AppendResult(1, 0)]
        assert await store.append([ev("a")], T0 + 599) == [AppendResult(0, 1)]
        assert await store.append([ev("a")], T0 + 700) == [AppendResult(1, 0)]

    async def test_new_files_have_no_first_seen_index(
        self, store: SqliteStore, db_path: Path
    ) -> None:
        with closing(sqlite3.connect(db_path)) as conn:
            names = {r[1] for r in conn.execute("PRAGMA index_list(dedup)")}
        assert "dedup_first_seen" not in names

    async def test_the_sweep_reads_along_the_primary_key(self, db_path: Path) -> None:
        store = SqliteStore(db_path)
        await store.open()
        await store.close()
        with closing(sqlite3.connect(db_path)) as conn:
            plan = conn.execute(
                "EXPLAIN QUERY PLAN SELECT event_name, event_id, event_ref, first_seen, routes"
                " FROM dedup WHERE (event_name, event_id, event_ref) > (?, ?, ?)"
                " ORDER BY event_name, event_id, event_ref LIMIT ?",
                ("a", "b", 3, 10),
            ).fetchall()
        assert any("SEARCH dedup USING PRIMARY KEY" in row[3] for row in plan)
        assert not any("TEMP B-TREE" in row[3] for row in plan)


async def test_loop_writer_leaves_checkpoints_to_the_checkpointer_thread(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop writer never checkpoints inside a COMMIT (that fsyncs on the event loop); the
    checkpointer thread copies the WAL into the database file on its own schedule."""
    monkeypatch.setattr(sqlite_writer, "CHECKPOINT_INTERVAL", 0.02)
    store = SqliteStore(db_path, writer="loop")
    await store.open()
    try:
        assert await store._write(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()) == (
            0,
        )
        empty = db_path.stat().st_size
        await store.append([ev(f"cp{i}", record=b"x" * 2000) for i in range(500)], T0)
        for _ in range(250):  # up to 5 s
            if db_path.stat().st_size > empty + 500 * 2000:
                break
            await asyncio.sleep(0.02)
        assert db_path.stat().st_size > empty + 500 * 2000  # the rows reached the main file
        assert await store.counts() == {("shop:meta", DeliveryState.PENDING): 500}
    finally:
        await store.close()


async def test_touch_and_append_jobs_join_the_batch_insert(
    store: SqliteStore, db_path: Path
) -> None:
    """Hits of one loop turn (profile merge + event each) commit together, in order; a failing
    job falls back to running alone, so only its own future fails."""
    with raw(db_path) as conn:
        conn.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON deliveries WHEN NEW.route = 'poison:x'"
            " BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
        )

    def hit(n: int, *routes: str) -> Callable[[VisitorProfile], list[NewEvent]]:
        return lambda profile: [ev(f"hit{n}-{len(profile.browser_ids)}", *routes)]

    async with writer_paused(store):
        tasks = [
            asyncio.create_task(
                store.touch_and_append(
                    "shop", "v1", ProfileUpdate(browser_ids={f"c{i}": "x"}), T0 + i, hit(i)
                )
            )
            for i in range(5)
        ]
        plain = asyncio.create_task(store.append([ev("plain")], T0))
        bad = asyncio.create_task(
            store.touch_and_append(
                "shop", "v2", ProfileUpdate(), T0, hit(9, "shop:meta", "poison:x")
            )
        )
        await submitted()
        commits = store.commits
    results = await asyncio.gather(*tasks)
    assert [len(profile.browser_ids) for profile, _ in results] == [1, 2, 3, 4, 5]  # in order
    assert all(appended == [AppendResult(1, 0)] for _, appended in results)
    assert await plain == [AppendResult(1, 0)]
    with pytest.raises(sqlite3.IntegrityError):
        await bad
    assert store.commits == commits + hold(store) + 1  # one transaction for all of them
    assert await store.counts() == {("shop:meta", DeliveryState.PENDING): 6}
    (v2,) = await store.find_profiles("shop", [ProfileQuery(visitor_id="v2")])
    assert v2 is None  # the failed job's profile merge was rolled back with its append


async def test_touch_and_append_batch_runs_as_one_set_based_insert(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def alone(*args: object, **kwargs: object) -> None:
        raise AssertionError("a job of the batch ran on its own")

    monkeypatch.setattr(sqlite_profiles, "_touch_and_append_tx", alone)
    async with writer_paused(store):
        tasks = [
            asyncio.create_task(
                store.touch_and_append(
                    "shop",
                    f"v{i % 2}",
                    ProfileUpdate(browser_ids={f"c{i}": "x"}),
                    T0,
                    lambda p, i=i: [ev(f"t{i}"), ev("same")],  # type: ignore[misc]
                )
            )
            for i in range(6)
        ]
        await submitted()
    results = await asyncio.gather(*tasks)
    assert [len(p.browser_ids) for p, _ in results] == [1, 1, 2, 2, 3, 3]
    assert results[0][1] == [AppendResult(1, 0), AppendResult(1, 0)]
    assert all(r == [AppendResult(1, 0), AppendResult(0, 1)] for _, r in results[1:])
    assert await store.counts() == {("shop:meta", DeliveryState.PENDING): 7}


class TestTheLoopWriterNeverWaitsForALock:
    """Another connection holding the write lock (as the checkpointer's RESTART does while it
    rewinds the log) must not stop the event loop: the batch waits on the loop's timer."""

    @staticmethod
    @contextmanager
    def write_lock(db_path: Path) -> Iterator[sqlite3.Connection]:
        other = sqlite3.connect(db_path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            yield other
        finally:
            if other.in_transaction:
                other.execute("ROLLBACK")
            other.close()

    async def test_an_append_waits_for_the_lock_while_the_loop_runs(self, db_path: Path) -> None:
        store = SqliteStore(db_path, writer="loop")
        await store.open()
        try:
            with self.write_lock(db_path):
                append = asyncio.ensure_future(store.append([ev("a")], T0))
                ticks = 0
                for _ in range(20):  # the loop keeps turning while the append waits
                    await asyncio.sleep(0.005)
                    ticks += 1
                assert not append.done()
                later = asyncio.ensure_future(store.append([ev("b")], T0))
                await asyncio.sleep(0.01)
            assert ticks == 20
            done = await asyncio.wait_for(asyncio.gather(append, later), timeout=5)
            assert [r[0].created for r in done] == [1, 1]
            assert scalar(db_path, "SELECT count(*) FROM deliveries") == 2
        finally:
            await store.close()

    async def test_a_lock_held_past_the_busy_timeout_fails_the_batch(self, db_path: Path) -> None:
        store = SqliteStore(db_path, writer="loop", busy_timeout_ms=50)
        await store.open()
        try:
            with (
                self.write_lock(db_path),
                pytest.raises(StoreUnavailableError, match="locked") as failed,
            ):
                await asyncio.wait_for(store.append([ev("a")], T0), timeout=5)
            assert isinstance(failed.value.__cause__, sqlite3.OperationalError)  # SQLite's own
            (result,) = await store.append([ev("a")], T0)  # the lock is free again
            assert result.created == 1
        finally:
            await store.close()

    async def test_close_waits_for_the_lock_then_commits_what_was_queued(
        self, db_path: Path
    ) -> None:
        store = SqliteStore(db_path, writer="loop")
        await store.open()
        with self.write_lock(db_path) as other:
            append = asyncio.ensure_future(store.append([ev("a")], T0))
            await asyncio.sleep(0.01)
            closing_ = asyncio.ensure_future(store.close())
            await asyncio.sleep(0.02)
            assert not closing_.done()
            other.execute("COMMIT")
        await asyncio.wait_for(closing_, timeout=5)
        assert (await append)[0].created == 1
        assert scalar(db_path, "SELECT count(*) FROM deliveries") == 1
