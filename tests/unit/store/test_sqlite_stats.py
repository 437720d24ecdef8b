"""SqliteStore stats rollups: the contract, the version-8 migration, chunked retention."""

from __future__ import annotations

import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("contract", "contract_stats")

from contract import LEASE, T0, ev  # noqa: E402
from contract_stats import M0, StatsContract, stat  # noqa: E402
from sqlite_files import (  # noqa: E402
    file_at_version,
    migrated_memory,
    pending_purchase,
    query_plan,
)
from store_backends import OnSqlite  # noqa: E402

import gateway.store.sqlite_stats as sqlite_stats  # noqa: E402
from gateway.store.base import StatsQuery  # noqa: E402
from gateway.store.sqlite import SqliteStore  # noqa: E402
from gateway.store.sqlite_schema import SCHEMA_VERSION  # noqa: E402
from gateway.store.sqlite_stats import COMPACT_MINUTES  # noqa: E402


class TestSqliteStats(OnSqlite, StatsContract):
    pass


def _version_7_file(path: Path) -> None:
    """A file as a gateway of schema version 7 left it: one pending delivery."""
    with file_at_version(path, 7) as conn:
        pending_purchase(conn, "old-1", T0 - 5, T0)
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "stats_minute" not in names


async def test_a_version_7_file_opens_migrates_and_keeps_stats(tmp_path: Path) -> None:
    path = tmp_path / "v7.db"
    _version_7_file(path)
    store = SqliteStore(path)
    await store.open()
    try:
        (row,) = await store.lease("shop:meta", 10, T0, LEASE)
        assert row.event_id == "old-1"
        assert await store.read_stats(StatsQuery(M0, M0 + 60)) == []
        await store.write_stats([stat(M0, "delivered", 2)])
        assert await store.read_stats(StatsQuery(M0, M0 + 60)) == [stat(M0, "delivered", 2)]
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 9
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert {"stats_minute", "stats_minute_time"} <= names


async def test_retention_deletes_in_chunks_of_minutes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStore(tmp_path / "outbox.db")
    await store.open()
    try:
        minutes = 3 * COMPACT_MINUTES + 7
        await store.write_stats([stat(M0 + 60 * i, "queued", 1) for i in range(minutes)])
        chunks: list[int] = []
        real = sqlite_stats.compact_stats_tx

        def counted(conn: sqlite3.Connection, *, before: int) -> tuple[int, bool]:
            deleted, more = real(conn, before=before)
            chunks.append(deleted)
            return deleted, more

        monkeypatch.setattr(sqlite_stats, "compact_stats_tx", counted)
        keep = 5
        assert await store.compact_stats(M0 + 60 * (minutes - keep)) == minutes - keep
        assert chunks == [COMPACT_MINUTES] * 3 + [minutes - keep - 3 * COMPACT_MINUTES]
        left = await store.read_stats(StatsQuery(M0, M0 + 60 * minutes))
        assert [r.minute for r in left] == [M0 + 60 * i for i in range(minutes - keep, minutes)]
    finally:
        await store.close()


def test_a_site_and_range_read_uses_the_primary_key() -> None:
    with closing(migrated_memory()) as conn:
        plan = query_plan(
            conn,
            "SELECT value FROM stats_minute WHERE site = 'shop'"
            " AND destination IN ('meta', '') AND minute >= 0 AND minute < 600",
        )
        assert "SCAN" not in plan, plan


async def test_a_version_11_file_takes_its_pair_counters_as_the_reference(tmp_path: Path) -> None:
    """Duplicates counted before the upgrade (and before any booking) are not booked; the
    first one after it is, once."""
    path = tmp_path / "v11.db"
    store = SqliteStore(path)
    await store.open()
    try:
        for at in range(3):
            await store.append([ev("old")], T0 + at)  # 2 duplicates
    finally:
        await store.close()
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("DROP TABLE pairs_booked")
        conn.execute("DROP TABLE pairs_booked_at")
        conn.execute("PRAGMA user_version = 11")
    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.dedup_counts() == {("shop:meta", "api+api"): 2}
        assert await store.book_pairs(M0, M0 - 3600) == []
        await store.append([ev("old")], T0 + 5)
        booked = await store.book_pairs(M0 + 60, M0)
        assert booked == [stat(M0 + 60, "dedup_pair", 1, event="", detail="api+api")]
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 12
        assert conn.execute("SELECT route, pair, n FROM pairs_booked").fetchall() == [
            ("shop:meta", "api+api", 3)
        ]
