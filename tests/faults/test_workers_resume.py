"""`signalgate run --workers 2` as real processes: the platform refuses the credentials, so
both workers pause their route for 600 s; the credentials are fixed and ONE
``POST /v1/admin/resume`` reaches one worker, which records it in the shared store; the other
lifts its pause from that record (gateway/delivery/resuming.py) and every queued event is
delivered within seconds, long before the pause would end."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import ADMIN_TOKEN, auth
from test_gateway_crash import free_port
from test_workers import (
    COOKIE_SECRET,
    Supervised,
    lead,
    postgres_storage,
    q,
    workers_config,
)

PAUSED = "Route paused: credentials or configuration refused."
RESUMED = "Route resumed by the operator."
PAUSE_SECONDS = 600.0
DELIVER_WITHIN = 30.0
"""Seconds allowed from the resume to the last delivery: far below PAUSE_SECONDS."""
RESUME_WITHIN = 30.0
"""Seconds allowed from the resume to both workers' lifting their pause (the check is 2 s)."""
READY_TRIES = 20


def resumed_line(log: str, worker: str) -> bool:
    """Whether `worker` ("worker=0") logged the resume of its route."""
    return any(RESUMED in line and worker in line for line in log.splitlines())


async def post(url: str, events: list[dict[str, Any]]) -> int:
    """POST on a new connection (so either worker may answer); return the status."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s,
        s.post(f"{url}/v1/events", json={"events": events}, headers=auth()) as resp,
    ):
        return resp.status


@pytest.fixture(params=["sqlite", "postgres"])
def store_keys(request: pytest.FixtureRequest) -> dict[str, str]:
    """The `workers_config` keys of each store: the SQLite file, then PostgreSQL (where the
    two workers share the database as replicas do)."""
    if request.param == "sqlite":
        return {}
    dsn: str = request.getfixturevalue("pg_dsn")
    return {
        "storage": postgres_storage(dsn),
        "server_extra": f"cookie_secret = {q(COOKIE_SECRET)}\n",
    }


@pytest.mark.timeout(120)
async def test_one_resume_reaches_both_workers(
    tmp_path: Path, meta_sandbox: Any, store_keys: dict[str, str]
) -> None:
    """Both workers pause, one resume is sent, both lift their pause and everything is
    delivered."""
    sandbox, sandbox_url = meta_sandbox
    sandbox.faults.token_expired = True
    port = free_port()
    config = workers_config(tmp_path, port, sandbox_url, **store_keys)
    text = config.read_text()
    assert "[delivery]\n" in text
    config.write_text(
        text.replace("[delivery]\n", f"[delivery]\npause_seconds = {PAUSE_SECONDS}\n")
    )
    gateway = Supervised(config, port, tmp_path / "gateway.log")
    async with aiohttp.ClientSession() as session:
        try:
            pids = await gateway.start(session)
            assert len(pids) == 2, pids
            # Post until both workers have paused: a paused worker leases nothing, so the
            # rows of later posts go to the other one.
            sent = 0
            deadline = time.monotonic() + 30
            while gateway.text().count(PAUSED) < 2:
                if time.monotonic() > deadline:
                    pytest.fail(f"both workers did not pause in 30s:\n{gateway.tail()}")
                assert await post(gateway.url, [lead(sent + i) for i in range(5)]) == 202
                sent += 5
                await asyncio.sleep(0.2)
            assert sandbox.recorder.accepted == []

            sandbox.faults.token_expired = False
            began = time.monotonic()
            async with session.post(
                f"{gateway.url}/v1/admin/resume",
                json={"route": "shop:meta"},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            ) as resp:
                assert resp.status == 200, await resp.text()
                answer = await resp.json()
            assert answer["route"] == "shop:meta"
            assert answer["was_paused"] is True  # each worker was paused

            expected = {f"lead-{i}" for i in range(sent)}
            while {e["event_id"] for e in sandbox.recorder.accepted} != expected:
                if time.monotonic() - began > DELIVER_WITHIN:
                    pytest.fail(
                        f"not all delivered {DELIVER_WITHIN}s after the resume:\n{gateway.tail()}"
                    )
                await asyncio.sleep(0.05)
            counts = Counter(e["event_id"] for e in sandbox.recorder.accepted)
            assert max(counts.values()) == 1, "an event was sent twice"
            # The worker that took the request delivers what the pause held (release_waiting
            # is shared); the other one lifts its own pause from the store's record.
            while {w for w in ("worker=0", "worker=1") if resumed_line(gateway.text(), w)} != {
                "worker=0",
                "worker=1",
            }:
                if time.monotonic() - began > RESUME_WITHIN:
                    pytest.fail(f"a worker still paused after {RESUME_WITHIN}s:\n{gateway.tail()}")
                await asyncio.sleep(0.05)
            for _ in range(READY_TRIES):  # new connections: both workers answer ready
                async with (
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s,
                    s.get(f"{gateway.url}/readyz") as resp,
                ):
                    assert resp.status == 200, await resp.text()
            assert gateway.text().count(RESUMED) == 2, gateway.tail()

            code, _ = await gateway.terminate()
            assert code == 0, f"exit {code}:\n{gateway.tail()}"
            assert "Traceback" not in gateway.text(), gateway.tail()
        finally:
            await gateway.stop()
