"""PostgresStore dead letters: the contract on a real PostgreSQL, bounded evidence, and replay
from two replicas at once (each dead letter is revived once)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("contract", "contract_dead")

from contract import LEASE, T0, ev  # noqa: E402
from contract_dead import ROUTE, DeadLetterContract, dead_rows  # noqa: E402
from pg_database import index_plan  # noqa: E402
from store_backends import OnPostgres, Pair  # noqa: E402
from store_fixtures import two_stores  # noqa: E402, F401 - a fixture

from gateway.store.base import DeadEvidence, DeadQuery, DeadReason, ReplaySelection  # noqa: E402
from gateway.store.postgres_dead import MAX_ANSWER, MAX_PAYLOAD  # noqa: E402


class TestPostgresDeadLetters(OnPostgres, DeadLetterContract):
    pass


async def test_evidence_is_bounded(two: Pair) -> None:
    store, _ = two
    await store.append([ev("big")], T0)
    (row,) = await store.lease(ROUTE, 1, T0, LEASE)
    huge = DeadEvidence(None, "x" * (MAX_ANSWER * 3), b"y" * (MAX_PAYLOAD * 2))
    await store.mark_dead([row.id], DeadReason.INTERNAL, "", T0, evidence={row.id: huge})
    (letter,) = (await store.dead_page(DeadQuery())).letters
    assert letter.evidence is not None
    assert letter.evidence.status is None
    assert len(letter.evidence.answer) == MAX_ANSWER
    assert letter.evidence.payload == b"y" * MAX_PAYLOAD


async def test_two_replicas_replaying_at_once_revive_each_letter_once(two: Pair) -> None:
    ids = await dead_rows(two[0], [DeadReason.INVALID_FIELD] * 30)
    results = await asyncio.wait_for(
        asyncio.gather(
            *(two[i % 2].replay(ReplaySelection(ROUTE, limit=7), T0 + 10) for i in range(8)),
            two[1].replay(ReplaySelection(ROUTE, ids=tuple(ids[::3])), T0 + 10),
        ),
        timeout=60,
    )
    assert sum(r.replayed for r in results) == len(ids)
    leased = await two[1].lease(ROUTE, 100, T0 + 10, LEASE)
    assert sorted(r.id for r in leased) == ids
    assert (await two[0].dead_page(DeadQuery())).letters == ()


async def test_the_listing_pages_through_the_dead_rows_index(pg_dsn: str) -> None:
    plan = await index_plan(
        pg_dsn,
        "SELECT d.id FROM deliveries d WHERE d.state = 'dead'"
        " AND d.route = 'shop:meta' AND d.id > 5 ORDER BY d.id LIMIT 10",
    )
    assert "deliveries_dead" in plan, plan
    assert "Sort" not in plan, plan  # the index is in id order per route
