"""PostgresStore order ledger: the contract on a real PostgreSQL, and what replicas add: the
same order written by two processes at once is kept once, and a backend order and its browser
copy reaching different processes at the same moment are paired either way."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("contract", "contract_orders")

from contract import LEASE, T0, ev  # noqa: E402
from contract_orders import OrderContract, loader_record, order  # noqa: E402
from pg_database import index_plan  # noqa: E402
from store_backends import OnPostgres, Pair, make  # noqa: E402
from store_fixtures import two_stores  # noqa: E402, F401 - a fixture

from gateway.core.orders import Fate  # noqa: E402
from gateway.store.base import NewEvent  # noqa: E402
from gateway.store.postgres import PostgresStore  # noqa: E402
from gateway.store.postgres_append import CLAIM_PARAMETERS, claim_statement  # noqa: E402
from gateway.store.postgres_orders import _ROWS as ROWS  # noqa: E402
from gateway.store.postgres_orders import ledger_rider  # noqa: E402


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


@pytest.fixture
async def store(pg_dsn: str) -> AsyncIterator[PostgresStore]:
    opened = make(pg_dsn)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def _rider_road(store: PostgresStore, events: list[NewEvent], orders: list[Any]) -> None:
    await store.append_orders(events, orders, T0)  # the ledger rows ride the claim statement


async def _tx_road(store: PostgresStore, events: list[NewEvent], orders: list[Any]) -> None:
    async def finish(conn: Any, paired: Any) -> None:
        """A no-op hook: it sends the batch down the one-transaction road."""

    await store._append_job(tuple(events), T0, orders=tuple(orders), finish=finish)


async def _ledger_scenario(store: PostgresStore, p: str, write: Any) -> list[tuple[Any, ...]]:
    """Orders written by `write` (ids prefixed `p`) in every case the ledger tells apart:
    alone, after their browser copy, before it, with a denied and a routed-away route, and
    twice in one batch. Returns each ledger row with the event its ``event_ref`` names, and
    the rows `order_rows` reads, the prefix taken off."""
    meta, tiktok = ("shop:meta",), ("shop:meta", "shop:tiktok")

    def browser(i: str, routes: tuple[str, ...] = meta) -> NewEvent:
        return NewEvent("shop", "Purchase", p + i, T0 - 5, loader_record(p + i), routes)

    await write(store, [ev(p + "alone", *tiktok)], [order(p + "alone", tiktok)])
    await store.append([browser("after", tiktok)], T0)
    await write(store, [ev(p + "after", *tiktok)], [order(p + "after", tiktok)])
    await write(store, [ev(p + "before")], [order(p + "before")])
    await store.append([browser("before")], T0)
    await write(
        store,
        [ev(p + "denied", "shop:meta")],
        [order(p + "denied", tiktok, denied=("shop:tiktok",))],
    )
    await write(
        store, [ev(p + "away", "shop:tiktok")], [order(p + "away", tiktok, away=("shop:meta",))]
    )
    await write(store, [ev(p + "twice"), ev(p + "twice")], [order(p + "twice")])
    await store.append([browser("half")], T0)  # a browser copy on one of its two routes
    await write(store, [ev(p + "half", *tiktok)], [order(p + "half", tiktok)])
    async with store._pool.acquire() as conn:
        ledger = await conn.fetch(
            """SELECT l.order_id, l.paired, e.event_id, e.record FROM order_ledger AS l
               LEFT JOIN events AS e ON e.id = l.event_ref
               WHERE l.order_id LIKE $1 ORDER BY l.order_id""",
            p + "%",
        )
    rows = [r for r in await store.order_rows("shop", 0, T0, 1000) if r.order_id.startswith(p)]
    strip = len(p)
    return [
        *(
            (
                r[0][strip:],
                tuple(r[1]),
                r[2] and r[2][strip:],
                r[3] and bytes(r[3]).replace(p.encode(), b""),
            )
            for r in ledger
        ),
        *(r._replace(order_id=r.order_id[strip:], event_id=r.event_id[strip:]) for r in rows),
    ]


async def test_ledger_rows_riding_the_claim_equal_those_of_the_one_transaction_road(
    store: PostgresStore,
) -> None:
    """Differential: an order batch's ledger rows written in its claim's statement (with the
    merge's pairing and `event_ref` refresh after it) read back exactly as when the whole
    batch is one transaction that writes them after the merge."""
    rider = await _ledger_scenario(store, "r-", _rider_road)
    tx = await _ledger_scenario(store, "t-", _tx_road)
    assert rider == tx
    assert len(rider) == 7 + 12  # every case's ledger row, then one row per route read back
    paired = {r[0]: r[1] for r in rider[:7]}
    assert paired["after"] == ("shop:meta", "shop:tiktok")
    assert paired["before"] == ("shop:meta",)
    assert paired["half"] == ("shop:meta",)


class _Deadlock(asyncpg.exceptions.DeadlockDetectedError):
    pass


async def test_a_merge_aborted_for_a_deadlock_runs_again_without_the_claim(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim (with its ledger rows) committed by itself; the merge after it that PostgreSQL
    aborted runs again alone: the order is created once, paired, its duplicate counted once."""
    merge = store._merge
    calls = 0

    async def deadlocked_once(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        found = await merge(*args)
        if calls == 1:
            raise _Deadlock("deadlock detected")  # after the merge's writes: rolled back
        return found

    monkeypatch.setattr(store, "_merge", deadlocked_once)
    browser = NewEvent("shop", "Purchase", "d1", T0 - 5, loader_record("d1"), ("shop:meta",))
    await store.append([browser], T0)
    routes = ("shop:meta", "shop:tiktok")
    results = await store.append_orders([ev("d1", *routes)], [order("d1", routes)], T0)
    assert calls == 2
    assert [(r.created, r.deduplicated) for r in results] == [(1, 1)]  # tiktok's key: won
    rows = await store.order_rows("shop", 0, T0, 10)
    assert [(r.route, r.paired, r.state) for r in rows] == [
        ("shop:meta", True, "pending"),
        ("shop:tiktok", False, "pending"),
    ]
    assert await store.dedup_counts() == {("shop:meta", "api+loader"): 1}


def test_the_ledger_rider_numbers_its_parameters_after_the_claims() -> None:
    rider = ledger_rider([order("x"), order("y")], T0)
    assert rider is not None
    numbers = sorted({int(n) for n in re.findall(r"\$(\d+)", rider.ctes)})
    assert numbers == list(range(CLAIM_PARAMETERS + 1, CLAIM_PARAMETERS + 1 + len(rider.args)))
    assert ledger_rider([order("z", ())], T0) is None  # no route: no ledger row


async def test_the_ledger_rider_reads_no_table_or_batch_whole(pg_dsn: str) -> None:
    """The claim with its ledger rider, planned for a 200-order batch on a dedup table of
    20,000 keys, reads the holders of the keys by the dedup primary key (a hash join of the
    table would scan it whole for every batch) and no subquery scans the batch's rows (n^2)."""
    store = make(pg_dsn)
    await store.open()
    await store.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            """INSERT INTO dedup(route, event_name, event_id, first_seen, event_ref)
               SELECT 'shop:meta', 'Purchase', 'k' || g, 0, g FROM generate_series(1, 20000) g"""
        )
        await conn.execute("ANALYZE dedup")
        routes = ("shop:meta", "shop:tiktok")
        n = 200
        rider = ledger_rider([order(f"q{i}", routes) for i in range(n)], T0)
        assert rider is not None
        events = [ev(f"q{i}", *routes) for i in range(n)]
        sql, args = claim_statement(events, now=T0, cutoff=T0 - 1, due=0.0, rider=rider)
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *args))
    finally:
        await conn.close()
    assert "Seq Scan on dedup" not in plan, plan
    assert "dedup_pkey on dedup" in plan, plan
    subplans = plan.split("SubPlan")[1:]
    assert all("CTE Scan" not in part.split("->  ", 2)[1] for part in subplans), plan
