"""SqliteStore order ledger: the contract, the version-8 and -10 migrations and the indexes it
reads by."""

from __future__ import annotations

import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("contract", "contract_orders")

from contract import LEASE, T0, ev  # noqa: E402
from contract_orders import OrderContract, order  # noqa: E402
from sqlite_files import (  # noqa: E402
    file_at_version,
    migrated_memory,
    pending_purchase,
    query_plan,
)
from store_backends import OnSqlite  # noqa: E402

from gateway.core.orders import Fate, OrderRow, gap_report  # noqa: E402
from gateway.store.base import NewEvent  # noqa: E402
from gateway.store.sqlite import SqliteStore  # noqa: E402
from gateway.store.sqlite_orders import _DONE_ROWS as DONE_ROWS  # noqa: E402
from gateway.store.sqlite_orders import _ROWS as ROWS  # noqa: E402
from gateway.store.sqlite_orders import expire_orders_tx, record_orders_tx  # noqa: E402
from gateway.store.sqlite_schema import SCHEMA_VERSION  # noqa: E402


class TestSqliteOrders(OnSqlite, OrderContract):
    pass


def _version_7_file(path: Path) -> None:
    """A file as a gateway of schema version 7 left it: one Purchase waiting for Meta."""
    with file_at_version(path, 7) as conn:
        pending_purchase(conn, "old", T0 - 5, T0)


async def test_a_version_7_file_opens_migrates_and_keeps_a_ledger(tmp_path: Path) -> None:
    path = tmp_path / "v7.db"
    _version_7_file(path)
    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.order_rows("shop", 0, T0 + 10, 10) == []  # nothing from before v8
        (old,) = await store.lease("shop:meta", 10, T0, LEASE)
        assert old.event_id == "old"
        await store.append_orders([ev("new")], [order("new")], T0 + 1)
        (row,) = await store.order_rows("shop", 0, T0 + 10, 10)
        assert (row.order_id, row.fate, row.state) == ("new", Fate.SENT.value, "pending")
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert {"order_ledger", "order_ledger_time", "order_ledger_key"} <= names
        assert "order_ledger_v8" not in names


V8_ROWS = (
    "SELECT l.order_id, l.event_id, l.route, l.fate, l.event_time, l.has_email, l.has_value,"
    " l.has_currency, l.paired, coalesce(d.state, CASE WHEN l.done_at IS NOT NULL THEN 'done' END),"
    " d.attempts, d.not_before, d.reason, coalesce(d.updated_at, l.done_at)"
    " FROM order_ledger l"
    " LEFT JOIN deliveries d ON d.event_ref = l.event_ref AND d.route = l.route"
    " WHERE l.site = ? AND l.event_time >= ? AND l.event_time < ?"
    " ORDER BY l.event_time, l.order_id, l.event_id, l.route LIMIT ?"
)
"""How a version-8/9 gateway read its ledger (one row per order event and route)."""

LOADER = b'{"id":"p1","ch":"loader"}'


def _version_9_file(path: Path) -> None:
    """A file as a gateway of schema version 9 left it, with a ledger row per order event and
    route: o1 delivered to Meta and waiting to retry for TikTok, o2 dead for Meta and routed
    away from TikTok, o3 denied by consent, p1 deduplicated into a browser copy on Meta
    (paired), o4 delivered to Meta and compacted since (its delivery time kept)."""
    with file_at_version(path, 9) as conn:
        events = [(1, "o1", b"{}"), (2, "o2", b"{}"), (3, "p1", LOADER)]
        for ref, event_id, record in events:
            conn.execute(
                "INSERT INTO events(id, site, event_name, event_id, event_time, record,"
                " created_at) VALUES (?, 'shop', 'Purchase', ?, ?, ?, ?)",
                (ref, event_id, T0 - 5, record, T0),
            )
        deliveries = [
            (1, "shop:meta", "done", 1, T0 + 1, None),
            (1, "shop:tiktok", "retry", 1, T0 + 60, "HTTP 503"),
            (2, "shop:meta", "dead", 1, T0 + 1, "invalid_field: bad value"),
            (3, "shop:meta", "pending", 0, 0.0, None),
        ]
        for ref, route, state, attempts, not_before, reason in deliveries:
            conn.execute(
                "INSERT INTO deliveries(event_ref, route, state, attempts, not_before, reason,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (ref, route, state, attempts, not_before, reason, T0 + 1),
            )
        keys = [("shop:meta", "o1", 1), ("shop:tiktok", "o1", 1), ("shop:meta", "o2", 2)]
        for route, event_id, ref in [*keys, ("shop:meta", "p1", 3), ("shop:meta", "o4", 4)]:
            conn.execute(
                "INSERT INTO dedup(route, event_name, event_id, first_seen, event_ref)"
                " VALUES (?, 'Purchase', ?, ?, ?)",
                (route, event_id, T0, ref),
            )
        ledger = [
            ("o1", "shop:meta", "sent", 1, 0, True, None),
            ("o1", "shop:tiktok", "sent", 1, 0, True, None),
            ("o2", "shop:meta", "sent", 2, 0, True, None),
            ("o2", "shop:tiktok", "routed_away", None, 0, True, None),
            ("o3", "shop:meta", "consent_denied", None, 0, False, None),
            ("o3", "shop:tiktok", "consent_denied", None, 0, False, None),
            ("p1", "shop:meta", "sent", 3, 1, True, None),
            ("o4", "shop:meta", "sent", 4, 0, True, T0 + 2),
        ]
        for order_id, route, fate, ref, paired, email, done_at in ledger:
            conn.execute(
                "INSERT INTO order_ledger(site, order_id, event_id, route, event_name,"
                " event_time, fate, event_ref, paired, has_email, has_value, has_currency,"
                " done_at, created_at) VALUES ('shop', ?1, ?1, ?2, 'Purchase', ?3, ?4, ?5, ?6,"
                " ?7, 1, 0, ?8, ?9)",
                (order_id, route, T0 - 5, fate, ref, paired, email, done_at, T0),
            )


def _v8_answer(path: Path) -> list[OrderRow]:
    with closing(sqlite3.connect(path)) as conn:
        return [
            OrderRow(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                bool(r[5]),
                bool(r[6]),
                bool(r[7]),
                bool(r[8]),
                r[9],
                r[10] or 0,
                r[11] or 0.0,
                r[12],
                r[13] or 0.0,
            )
            for r in conn.execute(V8_ROWS, ("shop", 0, T0 + 10, 1000))
        ]


async def test_a_version_9_ledger_is_converted_and_answers_the_same_gap(tmp_path: Path) -> None:
    path = tmp_path / "v9.db"
    _version_9_file(path)
    before = _v8_answer(path)
    assert len(before) == 8
    store = SqliteStore(path)
    await store.open()
    try:
        after = await store.order_rows("shop", 0, T0 + 10, 1000)
        assert after == before
        routes = ("shop:meta", "shop:tiktok")
        assert gap_report(after, routes) == gap_report(before, routes)
        # the converted rows go on: p1's browser copy is delivered and compacted, o1 paired
        (leased,) = await store.lease("shop:meta", 10, T0 + 2, LEASE)
        await store.mark_done([leased.id], T0 + 3)
        await store.compact(T0 + 200, keep_done_seconds=100, dedup_seconds=1000)
        browser = NewEvent("shop", "Purchase", "o2", T0 - 5, LOADER, ("shop:meta",))
        await store.append([browser], T0 + 4)
        got = {(r.order_id, r.route): r for r in await store.order_rows("shop", 0, T0, 100)}
        assert (got["p1", "shop:meta"].state, got["p1", "shop:meta"].updated_at) == (
            "done",
            T0 + 3,
        )
        assert got["o1", "shop:meta"].updated_at == T0 + 1  # compacted too, time kept
        assert got["o2", "shop:meta"].paired
        assert not got["o2", "shop:tiktok"].paired
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        (rows,) = conn.execute("SELECT count(*) FROM order_ledger").fetchone()
        assert rows == 5  # one per order event


def test_the_gap_reads_by_site_and_time_and_joins_deliveries_by_event() -> None:
    with closing(migrated_memory()) as conn:
        plan = query_plan(conn, ROWS, ("shop", 0, 10, 10))
        assert "order_ledger_time" in plan
        assert "deliveries_event" in plan
        assert "SEARCH k USING PRIMARY KEY (event_name=? AND event_id=?)" in plan
        assert "deliveries_due" not in plan  # never a walk through a route's deliveries
        done_plan = query_plan(conn, DONE_ROWS, ("[1, 2]", "shop:meta"))
        assert "order_ledger_key" in done_plan
        assert "deliveries_event" in done_plan
        assert "deliveries_due" not in done_plan
        indexes = {
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'order_ledger'"
            )
        }
        assert indexes == {"order_ledger_key", "order_ledger_time"}  # two entries per order


def test_expiry_walks_the_rows_in_write_order_and_stops_at_the_first_fresh_one() -> None:
    with closing(migrated_memory()) as conn:
        entries = [order(f"x{i}", denied=("shop:meta",)) for i in range(5)]
        for i, entry in enumerate(entries):
            record_orders_tx(conn, orders=[entry], now=T0 + i)
        assert expire_orders_tx(conn, cutoff=T0 + 3) == (3, False)
        left = [r[0] for r in conn.execute("SELECT order_id FROM order_ledger ORDER BY id")]
        assert left == ["x3", "x4"]
        assert expire_orders_tx(conn, cutoff=T0 + 3) == (0, False)
