"""SqliteStore order ledger: the contract, the version-8 migration and the indexes it reads by."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("contract")

from contract import LEASE, T0, OrderContract, ev, order  # noqa: E402

import gateway.store.sqlite as sqlite_module  # noqa: E402
from gateway.core.orders import Fate  # noqa: E402
from gateway.store.base import GatewayStore  # noqa: E402
from gateway.store.sqlite import SCHEMA_VERSION, SqliteStore  # noqa: E402
from gateway.store.sqlite_orders import _ROWS as ROWS  # noqa: E402


class TestSqliteOrders(OrderContract):
    @pytest.fixture(params=("loop", "thread"))
    def make_store(
        self, tmp_path: Path, request: pytest.FixtureRequest
    ) -> Callable[[], GatewayStore]:
        path = tmp_path / "outbox.db"
        return lambda: SqliteStore(path, writer=request.param)


def _version_7_file(path: Path) -> None:
    """A file as a gateway of schema version 7 left it: one Purchase waiting for Meta."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        scripts = (sqlite_module._BASE_SCHEMA, *(sqlite_module._MIGRATIONS[v] for v in range(1, 7)))
        for script in scripts:
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(
            "INSERT INTO events(id, site, event_name, event_id, event_time, record, created_at)"
            " VALUES (1, 'shop', 'Purchase', 'old', ?, x'7b7d', ?)",
            (T0 - 5, T0),
        )
        conn.execute(
            "INSERT INTO deliveries(event_ref, route, state, attempts, not_before, updated_at)"
            " VALUES (1, 'shop:meta', 'pending', 0, 0, ?)",
            (T0,),
        )
        conn.execute("PRAGMA user_version = 7")


async def test_a_version_7_file_opens_migrates_and_keeps_a_ledger(tmp_path: Path) -> None:
    path = tmp_path / "v7.db"
    _version_7_file(path)
    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.order_rows("shop", 0, T0 + 10, 10) == []  # nothing from before v8
        (old,) = await store.lease("shop:meta", 10, T0, LEASE)
        assert old.event_id == "old"
        await store.append_orders([ev("new")], [order("new", "shop:meta")], T0 + 1)
        (row,) = await store.order_rows("shop", 0, T0 + 10, 10)
        assert (row.order_id, row.fate, row.state) == ("new", Fate.SENT.value, "pending")
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert {"order_ledger", "order_ledger_time", "order_ledger_ref"} <= names


def test_the_gap_reads_by_site_and_time_and_joins_deliveries_by_event() -> None:
    with closing(sqlite3.connect(":memory:", isolation_level=None)) as conn:
        sqlite_module._migrate(conn)
        plan = " ".join(
            str(row[3])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN " + ROWS,
                ("shop", 0, 10, 10),
            )
        )
        assert "order_ledger_time" in plan
        assert "deliveries_event" in plan
