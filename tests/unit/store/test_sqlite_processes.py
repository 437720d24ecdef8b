"""Several processes on one SQLite file (`signalgate run --workers N`): leases are exclusive,
dedup keys are claimed once, nobody sees "database is locked", and opening a file another
process holds the write lock of waits instead of failing."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from contract import T0, ev

import gateway.store.sqlite_profiles as sqlite_profiles
import gateway.store.sqlite_workers as sqlite_workers
import gateway.store.sqlite_writer as sqlite_module
from gateway.store.sqlite import SqliteStore

PROCESSES = 3
ROUNDS = 60
OWN = 6
"""Events only one process appends, per round."""
SHARED = 3
"""Events every process appends (same ids), per round: one of them wins each dedup key."""

CHILD = r"""
import asyncio, json, sys, time
from gateway.store.base import NewEvent
from gateway.store.sqlite import SqliteStore

path, who, rounds, own, shared, go, writer = (
    sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6]), sys.argv[6], sys.argv[7]
)

ROUTES = ("shop:meta", "shop:tiktok")

def ev(event_id):
    return NewEvent("shop", "Purchase", event_id, time.time() - 5, b"{}", ROUTES)

async def main():
    store = SqliteStore(path, writer=writer)
    await store.open()
    deadline = time.monotonic() + 20
    while not __import__("os").path.exists(go) and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    leased, created = [], 0
    async def lease_some(route):
        got = await store.lease(route, 25, time.time(), 600)
        leased.extend(d.id for d in got)
        await store.mark_done([d.id for d in got], time.time())
        return len(got)
    for r in range(rounds):
        batch = [ev(f"{who}-{r}-{k}") for k in range(own)]
        batch += [ev(f"shared-{r}-{k}") for k in range(shared)]
        results = await store.append(batch, time.time())
        created += sum(x.created for x in results)
        for route in ("shop:meta", "shop:tiktok"):
            await lease_some(route)
    empty = 0
    while empty < 5:
        got = sum([await lease_some(route) for route in ("shop:meta", "shop:tiktok")])
        empty = 0 if got else empty + 1
        await asyncio.sleep(0.01)
    await store.close()
    print(json.dumps({"leased": leased, "created": created}))

asyncio.run(main())
"""


def _env() -> dict[str, str]:
    root = Path(__file__).resolve().parents[3]
    return {**os.environ, "PYTHONPATH": str(root)}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("writer", ["loop", "thread"])
def test_processes_sharing_one_file_lease_each_row_once_and_never_see_a_lock(
    tmp_path: Path, writer: str
) -> None:
    db = tmp_path / "outbox.db"
    go = tmp_path / "go"
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD,
                str(db),
                f"p{i}",
                *map(str, (ROUNDS, OWN, SHARED, go, writer)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for i in range(PROCESSES)
    ]
    time.sleep(0.5)  # every child opens the (fresh) file at once, then they all start together
    go.touch()
    outcomes = []
    for child in children:
        out, err = child.communicate(timeout=100)
        assert child.returncode == 0, err
        assert "locked" not in err.lower(), err
        outcomes.append(json.loads(out.strip().splitlines()[-1]))
    leased = [i for o in outcomes for i in o["leased"]]
    assert len(leased) == len(set(leased)), "a delivery row was leased by two processes"
    routes = 2
    expected = routes * ROUNDS * (PROCESSES * OWN + SHARED)
    assert sum(o["created"] for o in outcomes) == expected, "a dedup key was claimed twice"
    with sqlite3.connect(db) as conn:
        states = dict(conn.execute("SELECT state, count(*) FROM deliveries GROUP BY state"))
    assert states == {"done": expected}
    assert len(leased) == expected
    assert all(o["leased"] for o in outcomes), "one process never got any work"


async def test_opening_waits_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    """The loop writer's connection runs the schema check with the busy timeout still on, so a
    worker starting while another one writes (or migrates a fresh file) waits for the lock."""
    db = tmp_path / "outbox.db"
    first = SqliteStore(db)
    await first.open()
    await first.close()
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    store = SqliteStore(db, writer="loop")
    try:
        began = time.monotonic()
        await store.open()
        assert time.monotonic() - began >= 0.2, "opened without waiting for the lock"
        (result,) = await store.append([ev("a")], T0)
        assert result.created == 1
    finally:
        release.join()
        other.close()
        await store.close()


async def test_a_site_without_profiles_is_read_again_after_the_recheck_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker may write a site's first profile: a cached "no" does not last."""
    from gateway.core.profile import ProfileUpdate

    db = tmp_path / "outbox.db"
    one, two = SqliteStore(db), SqliteStore(db)
    await one.open()
    await two.open()
    try:
        assert not await one.has_profiles("shop")
        await two.touch_profile("shop", "v1", ProfileUpdate(), T0)
        assert not await one.has_profiles("shop")  # cached for PROFILE_SITES_RECHECK
        monkeypatch.setattr(sqlite_profiles, "PROFILE_SITES_RECHECK", 0.0)
        assert await one.has_profiles("shop")
        assert not await one.has_profiles("other")
    finally:
        await one.close()
        await two.close()


async def test_two_stores_flushing_the_same_minute_add_their_counts(tmp_path: Path) -> None:
    """Each worker books its own counters' increases: the rollup rows add up, never overwrite."""
    from gateway.core.rollup import StatRow
    from gateway.store.base import StatsQuery

    db = tmp_path / "outbox.db"
    one, two = SqliteStore(db), SqliteStore(db)
    await one.open()
    await two.open()
    try:
        minute = 1_800_000_000 // 60 * 60
        row = StatRow(minute, "shop", "meta", "Purchase", "delivered", "", 3)
        await one.write_stats([row])
        await two.write_stats([row._replace(value=4)])
        await one.write_stats([row._replace(value=1)])
        (total,) = await two.read_stats(StatsQuery(start=minute, end=minute + 60))
        assert total.value == 8
    finally:
        await one.close()
        await two.close()


async def test_checkpoints_of_two_stores_never_fail_their_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both stores checkpoint (PASSIVE, and RESTART past a tiny threshold) every few ms while
    both append: every append commits, and the log is rewound now and then."""
    import asyncio

    monkeypatch.setattr(sqlite_module, "CHECKPOINT_INTERVAL", 0.003)
    monkeypatch.setattr(sqlite_workers, "WAL_RESTART_FRAMES", 8)
    outcomes: list[object] = []
    real = sqlite_module._checkpoint

    def checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
        try:
            done = real(conn)
        except sqlite3.Error as exc:
            outcomes.append(exc)
            raise
        outcomes.append(done)
        return done

    monkeypatch.setattr(sqlite_module, "_checkpoint", checkpoint)
    db = tmp_path / "outbox.db"
    one, two = SqliteStore(db), SqliteStore(db)
    await one.open()
    await two.open()
    try:

        async def append(store: SqliteStore, who: str) -> int:
            created = 0
            for n in range(150):
                events = [ev(f"{who}-{n}-{k}") for k in range(5)]
                created += sum(r.created for r in await store.append(events, T0))
                await asyncio.sleep(0.001)
            return created

        created = await asyncio.wait_for(
            asyncio.gather(append(one, "a"), append(two, "b")), timeout=60
        )
        assert created == [750, 750]
    finally:
        await one.close()
        await two.close()
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    done = [o for o in outcomes if isinstance(o, tuple)]
    assert len(done) > 10
    print(f"\ncheckpoints: {len(done)} done, {len(errors)} busy: {errors[:2]}")
    assert len(errors) <= len(done) // 4, errors[:3]  # a busy tick is skipped, not a failure
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM deliveries").fetchone() == (1500,)
