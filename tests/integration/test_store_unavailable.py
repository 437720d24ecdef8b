"""A store that cannot write (full, read-only) answers 503 + Retry-After and recovers by itself.

The full database is real SQLite behaviour: `PRAGMA max_page_count` caps the file at its
current size on the writer's own connection, so every append that needs a new page fails with
SQLITE_FULL exactly as on a full disk; raising the cap is the space coming back. Read-only is
`PRAGMA query_only` on the same connection (SQLITE_READONLY). A last test fills a real tiny
tmpfs when this machine lets the test mount one.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from binaries import require_binary
from conftest import auth, runtime_of

from gateway.store.availability import RETRY_AFTER_SECONDS
from gateway.store.sqlite import SqliteStore

NOW = int(time.time())
MAX_POSTS = 200


def batch(tag: str, n: int = 40) -> dict[str, Any]:
    return {
        "events": [
            {
                "event": "Purchase",
                "event_id": f"{tag}-{i}",
                "time": NOW,
                "url": f"https://shop.example/thanks/{tag}/{i}/" + "x" * 200,
                "user": {"ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (store test)"},
                "data": {"value": 10.5, "currency": "EUR", "order_id": f"{tag}-{i}"},
            }
            for i in range(n)
        ]
    }


def writer_connection(client: Any) -> sqlite3.Connection:
    store = runtime_of(client).store
    assert isinstance(store, SqliteStore)
    conn = store._writer._conn  # the loop writer's connection (config writer = "loop")
    assert isinstance(conn, sqlite3.Connection)
    return conn


async def post(client: Any, body: dict[str, Any], *, gzipped: bool = False) -> Any:
    raw = json.dumps(body).encode()
    headers = {**auth(), "Content-Type": "application/json"}
    if gzipped:  # the lane leaves encoded bodies to aiohttp: both paths are exercised
        raw = gzip.compress(raw)
        headers["Content-Encoding"] = "gzip"
    return await client.post("/v1/events", data=raw, headers=headers)


async def post_until_refused(client: Any, tag: str) -> Any:
    for n in range(MAX_POSTS):
        resp = await post(client, batch(f"{tag}-{n}"))
        if resp.status != 202:
            return resp
    pytest.fail(f"{MAX_POSTS} posts were all accepted: the store never filled")


def assert_unavailable(resp: Any, body: dict[str, Any], reason: str) -> None:
    assert resp.status == 503, body
    assert resp.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert resp.headers["Content-Type"].startswith("application/json")
    assert body == {"error": "store_unavailable", "message": f"store unavailable: {reason}"}


def store_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "signalgate.store"]


def unhandled(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info or r.getMessage() == "Unhandled error."]


async def on_writer(client: Any, sql: str) -> list[Any]:
    """Run `sql` on the store's write connection, on whichever thread owns it."""
    store = runtime_of(client).store
    assert isinstance(store, SqliteStore)
    rows: list[Any] = await store._write(lambda conn: conn.execute(sql).fetchall())
    return rows


@pytest.mark.parametrize("writer", ["loop", "thread"])
async def test_full_store_answers_503_with_retry_after_then_recovers(
    gateway: Any, make_config: Any, caplog: pytest.LogCaptureFixture, tmp_path: Path, writer: str
) -> None:
    caplog.set_level(logging.INFO)
    store = SqliteStore(tmp_path / f"{writer}.db", writer=writer)
    client = await gateway(make_config(), run_workers=False, store=store)
    assert (await post(client, batch("warm"))).status == 202
    ((pages,),) = await on_writer(client, "PRAGMA page_count")
    await on_writer(client, f"PRAGMA max_page_count = {pages}")

    first = await post_until_refused(client, "fill")
    assert_unavailable(first, await first.json(), "disk full")
    for gzipped in (False, True, False, True):  # lane and aiohttp, several times
        resp = await post(client, batch(f"more-{gzipped}-{time.monotonic_ns()}"), gzipped=gzipped)
        assert_unavailable(resp, await resp.json(), "disk full")
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert "store unavailable: disk full" in (await ready.json())["problems"]
    assert store_lines(caplog) == ["store unavailable: disk full"]  # one line, not one a request
    assert unhandled(caplog) == []

    await on_writer(client, "PRAGMA max_page_count = 1073741823")  # space is back
    ready = await client.get("/readyz")  # nothing restarts
    assert ready.status == 200, await ready.json()
    for gzipped in (False, True):
        resp = await post(client, batch(f"after-{gzipped}"), gzipped=gzipped)
        assert resp.status == 202, await resp.text()
    assert store_lines(caplog) == ["store unavailable: disk full", "store recovered"]
    assert unhandled(caplog) == []


async def test_recovery_without_a_readiness_probe_comes_with_the_next_append(
    gateway: Any, make_config: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client = await gateway(make_config(), run_workers=False)
    assert (await post(client, batch("warm"))).status == 202
    conn = writer_connection(client)
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages}")
    assert (await post_until_refused(client, "fill")).status == 503
    conn.execute("PRAGMA max_page_count = 1073741823")
    resp = await post(client, batch("again"))
    assert resp.status == 202, await resp.text()
    assert store_lines(caplog) == ["store unavailable: disk full", "store recovered"]


async def test_read_only_store_answers_503_then_recovers(
    gateway: Any, make_config: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client = await gateway(make_config(), run_workers=False)
    conn = writer_connection(client)
    conn.execute("PRAGMA query_only = ON")
    for gzipped in (False, True, False):
        resp = await post(client, batch(f"ro-{gzipped}-{time.monotonic_ns()}"), gzipped=gzipped)
        assert_unavailable(resp, await resp.json(), "read-only")
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert "store unavailable: read-only" in (await ready.json())["problems"]
    conn.execute("PRAGMA query_only = OFF")
    resp = await post(client, batch("rw"))
    assert resp.status == 202, await resp.text()
    assert store_lines(caplog) == ["store unavailable: read-only", "store recovered"]
    assert unhandled(caplog) == []


@contextlib.contextmanager
def tiny_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of `size` at `where` (root only); skip when this machine refuses it."""
    where.mkdir()
    mount = require_binary("mount")
    umount = require_binary("umount", "mount")
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the max_page_count tests cover disk full)")
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip("this machine refuses a tmpfs mount (the max_page_count tests cover it)")
    try:
        yield where
    finally:
        subprocess.run([umount, "-l", str(where)], capture_output=True, check=False)


async def test_a_really_full_file_system_answers_503_then_recovers(
    gateway: Any, make_config: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with tiny_tmpfs(tmp_path / "small", "4m") as fs:
        client = await gateway(
            make_config(), run_workers=False, store=SqliteStore(fs / "outbox.db", cache_mb=1)
        )
        assert (await post(client, batch("warm"))).status == 202
        filler = fs / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with contextlib.suppress(OSError):
                for _ in range(4096):  # until ENOSPC
                    os.write(fd, b"\1" * 4096)
        finally:
            os.close(fd)
        refused = await post_until_refused(client, "fill")
        body = await refused.json()
        assert refused.status == 503, body
        assert refused.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
        assert body["error"] == "store_unavailable"
        assert (await client.get("/readyz")).status == 503
        assert len(store_lines(caplog)) == 1
        assert unhandled(caplog) == []
        filler.unlink()  # space is back
        ready = await client.get("/readyz")
        assert ready.status == 200, await ready.json()
        resp = await post(client, batch("after"))
        assert resp.status == 202, await resp.text()
        assert store_lines(caplog)[-1] == "store recovered"
        await client.close()
