"""Dedup rows per claim (gateway/store/sqlite_dedup.py): the one-row-per-event fast road against
the key-by-key general road and against a model of per-key dedup, and the version-11 migration."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("contract")

from contract import LEASE, T0, ev  # noqa: E402
from sqlite_files import file_at_version, migrated_memory  # noqa: E402

import gateway.store.sqlite_append as sqlite_append  # noqa: E402
from gateway.store.base import AppendResult, NewEvent  # noqa: E402
from gateway.store.sqlite import SqliteStore  # noqa: E402
from gateway.store.sqlite_dedup import _FRESH as FRESH  # noqa: E402
from gateway.store.sqlite_dedup import _FRESH_IN_RANGE as FRESH_IN_RANGE  # noqa: E402
from gateway.store.sqlite_dedup import SEP, route_set  # noqa: E402
from gateway.store.sqlite_schema import SCHEMA_VERSION  # noqa: E402

WINDOW = 600.0
ROUTES = ("s:a", "s:b", "s:c")


@contextmanager
def _general_road() -> Iterator[None]:
    """Every batch takes `claim_tx` (key by key), never the one-row-per-event road."""
    with mock.patch.object(sqlite_append, "claim_all_tx", return_value=False):
        yield


def _append(conn: sqlite3.Connection, events: tuple[NewEvent, ...], now: float) -> list[Any]:
    conn.execute("BEGIN IMMEDIATE")
    paired: set[tuple[str, str, str]] = set()
    results = sqlite_append._append_tx(
        conn, events=events, now=now, cutoff=now - WINDOW, merge_seconds=0.0, paired=paired
    )
    conn.execute("COMMIT")
    return [(r.created, r.deduplicated, r.duplicates) for r in results] + [sorted(paired)]


def _state(conn: sqlite3.Connection) -> list[Any]:
    return [
        conn.execute(
            "SELECT d.id, d.event_ref, d.route, d.state, e.event_name, e.event_id, e.record"
            " FROM deliveries d JOIN events e ON e.id = d.event_ref ORDER BY d.id"
        ).fetchall(),
        conn.execute("SELECT route, pair, n FROM dedup_counts ORDER BY route, pair").fetchall(),
        conn.execute("SELECT id, event_id, record FROM events ORDER BY id").fetchall(),
    ]


class _Model:
    """Per-key dedup as the version-10 table kept it: (route, name, id) → claim time."""

    def __init__(self) -> None:
        self.keys: dict[tuple[str, str, str], float] = {}

    def append(self, events: tuple[NewEvent, ...], now: float) -> list[tuple[int, int]]:
        out = []
        for e in events:
            won = 0
            for route in e.routes:
                key = (route, e.event_name, e.event_id)
                seen = self.keys.get(key)
                if seen is None or seen <= now - WINDOW:
                    self.keys[key] = now
                    won += 1
            out.append((won, len(e.routes) - won))
        return out


def _record(event_id: str, channel: str) -> bytes:
    return f'{{"id":"{event_id}","ch":"{channel}","e":"Purchase","d":{{}},"u":{{}}}}'.encode()


_EVENT = st.tuples(
    st.sampled_from(("Purchase", "Lead")),
    st.sampled_from(("a", "b", "c", "d")),
    st.sampled_from(("api", "loader")),
    st.lists(st.sampled_from(ROUTES), min_size=1, max_size=3, unique=True).map(tuple),
)
_BATCH = st.tuples(
    st.sampled_from((0.0, 1.0, 300.0, 700.0)),  # time since the previous batch
    st.booleans(),  # one shared routes tuple (the fast road's shape) or each event its own
    st.lists(_EVENT, min_size=1, max_size=6),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_BATCH, min_size=1, max_size=5))
def test_the_fast_road_answers_and_stores_as_the_general_road_and_the_per_key_model(
    batches: list[tuple[float, bool, list[tuple[str, str, str, tuple[str, ...]]]]],
) -> None:
    fast, general, model = migrated_memory(), migrated_memory(), _Model()
    now = T0
    with closing(fast), closing(general):
        for step, shared, raw in batches:
            now += step
            events = tuple(
                NewEvent(
                    "s",
                    name,
                    event_id,
                    T0,
                    _record(event_id, channel),
                    ROUTES if shared else routes,
                )
                for name, event_id, channel, routes in raw
            )
            got = _append(fast, events, now)
            with _general_road():
                assert _append(general, events, now) == got
            assert [g[:2] for g in got[:-1]] == model.append(events, now)
        assert _state(fast) == _state(general)


def test_a_fresh_batch_writes_one_dedup_row_per_event() -> None:
    with closing(migrated_memory()) as conn:
        events = tuple(ev(f"e{i}", *ROUTES) for i in range(5))
        assert _append(conn, events, T0)[:-1] == [(3, 0, ())] * 5
        rows = conn.execute("SELECT event_id, routes FROM dedup ORDER BY event_id").fetchall()
        assert rows == [(f"e{i}", route_set(ROUTES)) for i in range(5)]
        assert route_set(ROUTES) == f"{SEP}s:a{SEP}s:b{SEP}s:c{SEP}"
        # a copy on one route and a new route: one key lost, one won (a second row)
        again = (ev("e0", "s:a", "s:d"),)
        assert _append(conn, again, T0 + 1)[:-1] == [(1, 1, ("s:a",))]
        (count,) = conn.execute("SELECT count(*) FROM dedup WHERE event_id = 'e0'").fetchone()
        assert count == 2


def _version_10_file(path: Path) -> None:
    """A file as a gateway of schema version 10 left it: one key per row, event "x" holding
    two routes, and a key claimed before version 4 (no event ref)."""
    with file_at_version(path, 10) as conn:
        conn.execute(
            "INSERT INTO events(id, site, event_name, event_id, event_time, record, created_at)"
            " VALUES (1, 'shop', 'Purchase', 'x', ?, ?, ?)",
            (T0 - 5, _record("x", "api"), T0),
        )
        for route in ("shop:meta", "shop:tiktok"):
            conn.execute(
                "INSERT INTO deliveries(event_ref, route, state, attempts, not_before, updated_at)"
                " VALUES (1, ?, 'pending', 0, 0, ?)",
                (route, T0),
            )
            conn.execute(
                "INSERT INTO dedup(route, event_name, event_id, first_seen, event_ref)"
                " VALUES (?, 'Purchase', 'x', ?, 1)",
                (route, T0),
            )
        conn.execute(
            "INSERT INTO dedup(route, event_name, event_id, first_seen)"
            " VALUES ('shop:meta', 'Purchase', 'old', ?)",
            (T0,),
        )


async def test_a_version_10_file_keeps_its_keys_after_migration(tmp_path: Path) -> None:
    path = tmp_path / "v10.db"
    _version_10_file(path)
    store = SqliteStore(path)
    await store.open()
    try:
        loader = NewEvent(
            "shop", "Purchase", "x", T0 - 5, _record("x", "loader"), ("shop:meta", "shop:tiktok")
        )
        assert await store.append([loader], T0 + 1) == [AppendResult(0, 2)]
        assert await store.append([ev("x", "shop:snap")], T0 + 1) == [AppendResult(1, 0)]
        assert await store.append([ev("old")], T0 + 1) == [AppendResult(0, 1)]
        assert await store.dedup_counts() == {
            ("shop:meta", "api+loader"): 1,
            ("shop:tiktok", "api+loader"): 1,
            ("shop:meta", "api+unknown"): 1,
        }
        leased = await store.lease("shop:meta", 10, T0 + 2, LEASE)
        assert [d.event_id for d in leased] == ["x"]
        # the window passes: every converted key is free again
        assert await store.compact(T0 + 10_000, keep_done_seconds=1e9, dedup_seconds=600) == 4
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "dedup_v10" not in names


def test_the_probe_and_the_claim_read_by_key_and_row_id() -> None:
    with closing(migrated_memory()) as conn:
        probe = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + FRESH_IN_RANGE, (1, 2, T0))]
        assert probe[0].startswith("SEARCH e USING INTEGER PRIMARY KEY")
        assert probe[1] == "SEARCH k USING PRIMARY KEY (event_name=? AND event_id=?)"
        fresh = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + FRESH, ("a", "b", T0))]
        assert fresh == ["SEARCH dedup USING PRIMARY KEY (event_name=? AND event_id=?)"]


def test_a_row_id_reused_after_compaction_keeps_the_fresh_claim_of_that_id() -> None:
    """Compaction deleted the newest event rows, so the next event gets a row id a fresh claim
    still names: the new claim adds its routes to that row instead of dropping its keys."""
    with closing(migrated_memory()) as conn:
        conn.execute(
            "INSERT INTO dedup(event_name, event_id, event_ref, routes, first_seen)"
            " VALUES ('Purchase', 'r', 1, ?, ?)",
            (route_set(("s:a",)), T0),
        )
        assert _append(conn, (ev("r", "s:b"),), T0 + 1)[:-1] == [(1, 0, ())]
        (routes,) = conn.execute("SELECT routes FROM dedup WHERE event_id = 'r'").fetchone()
        assert routes == route_set(("s:a", "s:b"))
        assert _append(conn, (ev("r", "s:a"),), T0 + 2)[:-1] == [(0, 1, ())]
