"""Several processes opening one new SQLite file at the same moment (`signalgate run
--workers N` on a fresh data directory, before the supervisor prepared it): every one opens
it and writes, none fails with "database is locked". SQLite may answer a new file's switch to
WAL and its first lock escalation with SQLITE_BUSY at once, without its busy handler; the
writer's open retries those (gateway/store/sqlite_conn.py `OPEN_RETRY_SECONDS`)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from gateway.store.sqlite import SqliteStore

PROCESSES = 4
ROUNDS = 20
STEP = 0.25
"""Seconds between two rounds: each round's processes open a file of their own round at the
same wall-clock moment."""

CHILD = r"""
import asyncio, json, sys, time
import gateway.store.sqlite_conn as sqlite_conn
from gateway.store.base import NewEvent
from gateway.store.sqlite import SqliteStore

folder, who, rounds, step, start, writer, retry = sys.argv[1:8]
if retry == "no":
    sqlite_conn.OPEN_RETRY_SECONDS = 0.0

async def main():
    failures = []
    for r in range(int(rounds)):
        await asyncio.sleep(max(0.0, float(start) + r * float(step) - time.time()))
        store = SqliteStore(f"{folder}/round-{r}.db", writer=writer)
        try:
            await store.open()
            event = NewEvent("shop", "Purchase", f"{who}-{r}", time.time(), b"{}", ("shop:meta",))
            await store.append([event], time.time())
        except Exception as exc:
            failures.append(f"round {r}: {exc}")
        finally:
            await store.close()
    print(json.dumps(failures))

asyncio.run(main())
"""


def _env() -> dict[str, str]:
    root = Path(__file__).resolve().parents[3]
    return {**os.environ, "PYTHONPATH": str(root)}


def race(tmp_path: Path, *, retry: bool = True) -> list[str]:
    """Run the rounds in PROCESSES processes and return every failure any of them saw."""
    start = time.time() + 2.0  # every child has imported the gateway by then
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD,
                str(tmp_path),
                str(who),
                str(ROUNDS),
                str(STEP),
                repr(start),
                "loop" if who % 2 else "thread",
                "yes" if retry else "no",
            ],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in range(PROCESSES)
    ]
    failures: list[str] = []
    for child in children:
        out, err = child.communicate(timeout=60 + ROUNDS * STEP)
        assert child.returncode == 0, err
        failures += json.loads(out)
    return failures


def test_processes_opening_one_new_file_together_all_open_it(tmp_path: Path) -> None:
    assert race(tmp_path) == []
    for r in range(ROUNDS):
        path = tmp_path / f"round-{r}.db"
        with sqlite3.connect(path) as conn:
            (count,) = conn.execute("SELECT count(*) FROM events").fetchone()
            (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        assert (count, mode) == (PROCESSES, "wal"), r


def test_prepare_creates_the_schema_in_wal_mode_once(tmp_path: Path) -> None:
    path = tmp_path / "data" / "outbox.db"
    SqliteStore(path).prepare()
    SqliteStore(path).prepare()  # a second time: nothing to do, no error
    with sqlite3.connect(path) as conn:
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        (version,) = conn.execute("PRAGMA user_version").fetchone()
    assert mode == "wal"
    assert version > 0
