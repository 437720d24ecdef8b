"""SqliteStore dead letters: the contract, the version-7 migration and the index it pages by."""

from __future__ import annotations

import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("contract", "contract_dead")

from contract import LEASE, T0, ev  # noqa: E402
from contract_dead import DeadLetterContract  # noqa: E402
from sqlite_files import file_at_version, migrated_memory, query_plan  # noqa: E402
from store_backends import OnSqlite  # noqa: E402

from gateway.store.base import DeadEvidence, DeadQuery, DeadReason, ReplaySelection  # noqa: E402
from gateway.store.sqlite import SqliteStore  # noqa: E402
from gateway.store.sqlite_dead import MAX_ANSWER, MAX_PAYLOAD  # noqa: E402
from gateway.store.sqlite_schema import SCHEMA_VERSION  # noqa: E402


class TestSqliteDeadLetters(OnSqlite, DeadLetterContract):
    pass


def _version_6_file(path: Path) -> None:
    """A file as a gateway of schema version 6 left it: one row delivered, one dead."""
    with file_at_version(path, 6) as conn:
        for i, (state, reason) in enumerate(
            [("done", None), ("dead", "invalid_field: HTTP 400, code 100: bad currency")], 1
        ):
            conn.execute(
                "INSERT INTO events(id, site, event_name, event_id, event_time, record, created_at)"
                " VALUES (?, 'shop', 'Purchase', ?, ?, '{}', ?)",
                (i, f"old-{i}", T0 - 5, T0),
            )
            conn.execute(
                "INSERT INTO deliveries(event_ref, route, state, attempts, not_before, reason,"
                " updated_at) VALUES (?, 'shop:meta', ?, 1, ?, ?, ?)",
                (i, state, T0, reason, T0),
            )


async def test_a_version_6_file_opens_migrates_and_lists_its_old_dead_letters(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v6.db"
    _version_6_file(path)
    store = SqliteStore(path)
    await store.open()
    try:
        (old,) = (await store.dead_page(DeadQuery(route="shop:meta"))).letters
        assert old.info.event_id == "old-2"
        assert old.evidence is None  # given up before evidence was kept
        # New dead letters keep evidence; old ones replay like any other.
        await store.append([ev("new")], T0 + 1)
        (row,) = await store.lease("shop:meta", 1, T0 + 1, LEASE)
        evidence = {row.id: DeadEvidence(400, "HTTP 400", b'{"data":[]}')}
        await store.mark_dead([row.id], DeadReason.PLATFORM_REJECTED, "", T0 + 2, evidence=evidence)
        letters = (await store.dead_page(DeadQuery())).letters
        assert [d.evidence for d in letters] == [None, evidence[row.id]]
        result = await store.replay(ReplaySelection("shop:meta"), T0 + 3)
        assert result.replayed == 2
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 7
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert {"dead_letters", "deliveries_dead"} <= names


async def test_evidence_is_bounded(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "outbox.db")
    await store.open()
    try:
        await store.append([ev("big")], T0)
        (row,) = await store.lease("shop:meta", 1, T0, LEASE)
        huge = DeadEvidence(400, "x" * (MAX_ANSWER * 3), b"y" * (MAX_PAYLOAD * 2))
        await store.mark_dead([row.id], DeadReason.INTERNAL, "", T0, evidence={row.id: huge})
        (letter,) = (await store.dead_page(DeadQuery())).letters
        assert letter.evidence is not None
        assert len(letter.evidence.answer) == MAX_ANSWER
        assert letter.evidence.payload is not None
        assert len(letter.evidence.payload) == MAX_PAYLOAD
    finally:
        await store.close()


def test_the_listing_and_replay_page_through_the_dead_rows_index() -> None:
    with closing(migrated_memory()) as conn:
        plan = query_plan(
            conn,
            "SELECT d.id FROM deliveries d WHERE d.state = 'dead'"
            " AND d.route = 'shop:meta' AND d.id > 5 ORDER BY d.id LIMIT 10",
        )
        assert "deliveries_dead" in plan
        assert "TEMP B-TREE" not in plan  # no sort: the index is in id order per route
