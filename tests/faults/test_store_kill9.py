"""Durability under kill -9: every append that returned survives SIGKILL of the process.

A child process appends events from many concurrent tasks to a SqliteStore (WAL,
synchronous=NORMAL, the default) and prints each event_id only after its `append` returned, the
moment the HTTP layer would answer 2xx. The parent SIGKILLs the child at several points, restarts
it with fresh ids, and finally checks that every acknowledged event has its delivery rows.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path

import pytest

from gateway.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[2]
ROUTES = ("shop:meta", "shop:ga4")
WORKERS = 32
PHASE_TIMEOUT = 30.0
KILL_POINTS = (50, 500, 2000)

CHILD = textwrap.dedent(
    """
    import asyncio
    import sys
    import time

    from gateway.store.base import NewEvent
    from gateway.store.sqlite import SqliteStore

    ROUTES = {routes!r}


    async def main(path: str, prefix: str, workers: int) -> None:
        store = SqliteStore(path)
        await store.open()
        out = sys.stdout

        async def worker(w: int) -> None:
            n = 0
            while True:
                event_id = f"{{prefix}}-{{w}}-{{n}}"
                n += 1
                record = ('{{"id": "%s"}}' % event_id).encode()
                event = NewEvent("shop", "Purchase", event_id, time.time(), record, ROUTES)
                await store.append([event], time.time())
                out.write(event_id + "\\n")  # acknowledged: the 2xx moment
                out.flush()

        await asyncio.gather(*(worker(w) for w in range(workers)))


    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
).format(routes=ROUTES)


def run_until_killed(script: Path, db: Path, prefix: str, kill_after: int, log: Path) -> set[str]:
    """Run the child until it acknowledged `kill_after` events, SIGKILL it, return every id it
    acknowledged (including lines written between our decision and its death)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    with log.open("ab") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(db), prefix, str(WORKERS)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=ROOT,
            env=env,
        )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    lines: list[bytes] = []
    buf = b""
    deadline = time.monotonic() + PHASE_TIMEOUT
    try:
        while len(lines) < kill_after:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(
                    f"{prefix}: only {len(lines)} acks in {PHASE_TIMEOUT}s; {log.read_text()}"
                )
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                pytest.fail(f"{prefix}: child exited with {proc.wait()}: {log.read_text()}")
            *complete, buf = (buf + chunk).split(b"\n")
            lines.extend(complete)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        *complete, _partial = (buf + proc.stdout.read()).split(b"\n")
        lines.extend(complete)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    acked = {line.decode() for line in lines}
    assert len(acked) == len(lines) >= kill_after
    return acked


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_acknowledged_appends_survive_kill9(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    db = tmp_path / "store" / "outbox.db"
    log = tmp_path / "child.log"

    acked: set[str] = set()
    for phase, kill_after in enumerate(KILL_POINTS):
        acked |= run_until_killed(script, db, f"p{phase}", kill_after, log)
        with closing(sqlite3.connect(db)) as conn:  # also replays the WAL left behind
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    stored = asyncio.run(stored_event_ids(db))
    assert len(acked) >= sum(KILL_POINTS)
    for route in ROUTES:
        ids = stored[route]
        assert len(ids) == len(set(ids)), f"{route}: duplicate rows"
        missing = acked - set(ids)
        assert not missing, (
            f"{route}: {len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
        )


async def stored_event_ids(db: Path) -> dict[str, list[str]]:
    """Every event_id with a delivery row, per route, read back through the Store protocol."""
    store = SqliteStore(db)
    await store.open()
    try:
        out: dict[str, list[str]] = {}
        for route in ROUTES:
            rows = await store.lease(route, 1_000_000, time.time(), 60)
            assert all(row.record == f'{{"id": "{row.event_id}"}}'.encode() for row in rows)
            out[route] = [row.event_id for row in rows]
        return out
    finally:
        await store.close()
