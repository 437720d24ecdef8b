"""PostgresStore order ledger: the contract on a real PostgreSQL, and what replicas add: the
same order written by two processes at once is kept once, and a backend order and its browser
copy reaching different processes at the same moment are paired either way."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("contract", "contract_orders")

from contract import LEASE, T0, ev  # noqa: E402
from contract_orders import OrderContract, loader_record, order  # noqa: E402
from pg_database import index_plan  # noqa: E402
from store_backends import OnPostgres, Pair  # noqa: E402
from store_fixtures import two_stores  # noqa: E402, F401 - a fixture

from gateway.core.orders import Fate  # noqa: E402
from gateway.store.base import NewEvent  # noqa: E402
from gateway.store.postgres_orders import _ROWS as ROWS  # noqa: E402


class TestPostgresOrders(OnPostgres, OrderContract):
    pass


async def test_one_order_written_by_two_replicas_at_once_is_kept_once(two: Pair) -> None:
    routes = ("shop:meta", "shop:tiktok")
    writes = [
        two[i % 2].append_orders([ev(f"o{i % 5}", *routes)], [order(f"o{i % 5}", routes)], T0)
        for i in range(20)
    ]
    await asyncio.wait_for(asyncio.gather(*writes), timeout=60)
    rows = await two[0].order_rows("shop", 0, T0, 100)
    assert [(r.order_id, r.route) for r in rows] == [
        (f"o{i}", route) for i in range(5) for route in sorted(routes)
    ]
    assert {r.state for r in rows} == {"pending"}
    assert len(await two[1].lease("shop:meta", 100, T0, LEASE)) == 5


async def test_backend_and_browser_copies_on_two_replicas_pair_either_way(two: Pair) -> None:
    """Each order's backend copy reaches one process and its loader copy the other, at once:
    whichever claims the key first, the order is paired and follows the one delivery."""
    n = 12

    def browser(i: int) -> NewEvent:
        return NewEvent("shop", "Purchase", f"p{i}", T0 - 5, loader_record(f"p{i}"), ("shop:meta",))

    jobs = []
    for i in range(n):
        backend, loader = two[i % 2], two[(i + 1) % 2]
        jobs.append(backend.append_orders([ev(f"p{i}")], [order(f"p{i}")], T0))
        jobs.append(loader.append([browser(i)], T0))
    await asyncio.wait_for(asyncio.gather(*jobs), timeout=60)
    rows = await two[0].order_rows("shop", 0, T0, 100)
    assert len(rows) == n
    assert all(r.paired and r.state == "pending" for r in rows), rows
    leased = await two[1].lease("shop:meta", 100, T0 + 1, LEASE)
    assert len(leased) == n
    await two[1].mark_done([d.id for d in leased], T0 + 2)
    rows = await two[0].order_rows("shop", 0, T0, 100)
    assert {(r.state, r.fate) for r in rows} == {("done", Fate.SENT.value)}


async def test_the_gap_reads_by_site_and_time_and_finds_deliveries_by_index(
    pg_dsn: str,
) -> None:
    plan = await index_plan(pg_dsn, ROWS, "shop", 0.0, 10.0, 10)
    assert "order_ledger_time" in plan, plan
    assert "deliveries_event" in plan, plan
    assert "dedup_pkey" in plan, plan
