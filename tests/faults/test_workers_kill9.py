"""Issue #13's acceptance on SQLite: `run --workers 2`, ~10,000 events, one worker kill -9ed.

Clients post to the one shared port: per chunk of orders a backend batch (each order's
Purchase plus as many Lead events) and, for the same orders, one loader `/e` event each (the
browser's copy: its `fbclid` becomes `fbc`), the loader first for every other chunk. With a
merge window the two copies of an order become one delivery carrying both (the backend's
e-mail hash and the browser's click id). Midway, one worker is SIGKILLed; the supervisor starts
it again. In the end:

* every acknowledged event (202 / 204 seen) reached both destinations' sandboxes (Meta and
  TikTok: each route leases its own rows);
* every order both copies of which were acknowledged arrived merged: once, with both parts;
* nothing was sent twice except rows the killed worker had leased and was sending at the kill
  (at most one batch per route), which the survivor sends again once their lease expires;
* no answer other than 202/204 (no 503 from a locked store) and no "database is locked" in
  any log; SIGTERM then drains both workers (exit 0 within the grace period).

The load and the checks after it are shared with tests/faults/test_postgres_kill9.py
(tests/faults/orderload.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from orderload import (
    TIKTOK_TOKEN,
    Load,
    await_delivered,
    check_deliveries,
    check_merged,
    posted_ids,
    tiktok_section,
)
from test_gateway_crash import free_port
from test_workers import GRACE, STOP_MARGIN, Supervised, alive, workers_config

from gateway.sandbox.tiktok import TikTokSandbox

ORDERS = 3400
"""Orders posted; each is 3 events (Purchase from the backend and the loader, a Lead)."""
CLIENTS = 8
KILL_AT = 6000
"""Acknowledged events after which one worker is SIGKILLed."""
MAX_BATCH = 50
LEASE = 4.0
MERGE = 3.0
LOAD_TIMEOUT = 180.0
DRAIN_TIMEOUT = 90.0


@pytest.mark.slow
@pytest.mark.timeout(420)
async def test_kill9_of_one_worker_of_two_delivers_every_acknowledged_event_once(
    tmp_path: Path, meta_sandbox: Any
) -> None:
    sandbox, sandbox_url = meta_sandbox
    tiktok = TikTokSandbox(access_tokens={TIKTOK_TOKEN}, seed=99)
    tiktok_server = TestServer(tiktok.app(), host="127.0.0.1")
    await tiktok_server.start_server()
    tiktok_url = str(tiktok_server.make_url("")).rstrip("/")
    port = free_port()
    config = workers_config(
        tmp_path,
        port,
        sandbox_url,
        merge_seconds=MERGE,
        lease_seconds=LEASE,
        max_batch=MAX_BATCH,
        extra=tiktok_section(tiktok_url, MAX_BATCH),
    )
    gateway = Supervised(config, port, tmp_path / "gateway.log")
    began = time.monotonic()
    async with aiohttp.ClientSession() as session:
        try:
            pids = await gateway.start(session)
            load = Load([gateway.url], ORDERS, clients=CLIENTS)
            sandbox.faults.latency = 0.05  # requests in flight at the kill: rows leased
            clients = [asyncio.create_task(load.client(c)) for c in range(CLIENTS)]
            deadline = time.monotonic() + LOAD_TIMEOUT
            while load.acked_events < KILL_AT:
                if time.monotonic() > deadline or all(t.done() for t in clients):
                    pytest.fail(f"{load.acked_events} acknowledged:\n{gateway.tail()}")
                await asyncio.sleep(0.01)
            victim = min(pids)
            killed_at = load.acked_events
            os.kill(victim, signal.SIGKILL)
            survivors = await gateway.worker_pids(2, avoid=frozenset({victim}))
            restarted = survivors - pids
            assert len(restarted) == 1, (pids, survivors)
            done, _ = await asyncio.wait(clients, timeout=max(1.0, deadline - time.monotonic()))
            assert len(done) == CLIENTS, f"load not done in {LOAD_TIMEOUT}s:\n{gateway.tail()}"
            for task in clients:
                task.result()
            sandbox.faults.reset()
            loaded = time.monotonic()

            assert set(load.statuses) <= {202, 204}, f"answers {dict(load.statuses)}"
            assert load.acked_events >= 0.95 * ORDERS * 3, (load.acked_events, load.unanswered)
            platforms = {"meta": sandbox, "tiktok": tiktok}

            async def outbox(route: str) -> dict[str, int] | None:
                return await gateway.outbox(session, route)

            await await_delivered(load, platforms, outbox, gateway.tail, DRAIN_TIMEOUT)
            drained = time.monotonic()

            report, _ = check_deliveries(platforms, posted_ids(ORDERS), MAX_BATCH)
            check_merged(sandbox, load.both)

            code, took = await gateway.terminate()
            assert code == 0, f"exit {code}:\n{gateway.tail()}"
            assert took < GRACE + STOP_MARGIN, f"took {took:.1f}s:\n{gateway.tail()}"
            assert not any(alive(pid) for pid in pids | survivors)
            log = gateway.text()
            assert "database is locked" not in log
            assert "Traceback" not in log, gateway.tail()
            assert f"(pid {victim}) exited (signal SIGKILL)" in log, gateway.tail()
            print(
                f"\nworkers kill -9: {load.acked_events} events acknowledged"
                f" ({len(load.both)} orders with both copies), {load.unanswered} unanswered,"
                f" statuses {dict(load.statuses)}; worker {victim} killed at {killed_at},"
                f" restarted as {sorted(restarted)}; load {loaded - began:.1f}s, drained"
                f" {drained - loaded:.1f}s later; {'; '.join(report)} (twice: in flight at"
                f" the kill); SIGTERM exit {code} in {took:.2f}s"
            )
        finally:
            with contextlib.suppress(Exception):
                await gateway.stop()
            await tiktok_server.close()
