"""SqliteStore shared resumes: the contract, and a version-12 file migrated to version 13."""

from __future__ import annotations

import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("contract", "contract_pauses")

from contract import LEASE, T0  # noqa: E402
from contract_pauses import PauseContract  # noqa: E402
from sqlite_files import file_at_version, pending_purchase  # noqa: E402
from store_backends import OnSqlite  # noqa: E402

from gateway.store.sqlite import SqliteStore  # noqa: E402
from gateway.store.sqlite_schema import SCHEMA_VERSION  # noqa: E402


class TestSqlitePauses(OnSqlite, PauseContract):
    pass


async def test_a_version_12_file_opens_migrates_and_records_resumes(tmp_path: Path) -> None:
    path = tmp_path / "v12.db"
    with file_at_version(path, 12) as conn:
        pending_purchase(conn, "old-1", T0 - 5, T0)
        assert "route_resumes" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    store = SqliteStore(path)
    await store.open()
    try:
        (row,) = await store.lease("shop:meta", 10, T0, LEASE)
        assert row.event_id == "old-1"
        assert await store.resumed_since(["shop:meta"], 0.0) == {}
        await store.lift_pause("shop:meta", T0 + 1)
        assert await store.resumed_since(["shop:meta"], T0) == {"shop:meta": T0 + 1}
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 13
        assert "route_resumes" in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
