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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from conftest import auth
from test_gateway_crash import free_port
from test_workers import GRACE, STOP_MARGIN, Supervised, alive, lead, workers_config

from gateway.sandbox.tiktok import TikTokSandbox

ORDERS = 3400
"""Orders posted; each is 3 events (Purchase from the backend and the loader, a Lead)."""
CHUNK = 10
CLIENTS = 8
KILL_AT = 6000
"""Acknowledged events after which one worker is SIGKILLed."""
MAX_BATCH = 50
LEASE = 4.0
MERGE = 3.0
LOAD_TIMEOUT = 180.0
DRAIN_TIMEOUT = 90.0
ORIGIN = "https://www.shop.test"
LOADER_HEADERS = {
    "Host": "track.shop.test",
    "Origin": ORIGIN,
    "Content-Type": "text/plain",
    "User-Agent": "Mozilla/5.0 (workers kill test)",
}
TIMEOUT = aiohttp.ClientTimeout(total=10)
POSTED = {f"{kind}-{i}" for kind in ("order", "lead") for i in range(ORDERS)}
TIKTOK_TOKEN = "tiktok-test-token"
TIKTOK_PIXEL = "CABCDEFGHIJ1234567KL"


def backend_purchase(i: int) -> dict[str, Any]:
    return {
        "event": "Purchase",
        "source": "website",
        "url": f"https://www.shop.test/o/{i}",
        "user": {
            "email": f"buyer{i}@example.com",
            "ip": "10.0.0.1",
            "user_agent": "Mozilla/5.0 (shop backend)",
        },
        "data": {"value": 40 + i % 50, "currency": "USD", "order_id": f"order-{i}"},
    }


def browser_purchase(i: int) -> str:
    return json.dumps(
        {
            "event": "Purchase",
            "url": f"https://www.shop.test/thank-you?order={i}&fbclid=Click{i}",
            "data": {"value": 1, "currency": "EUR", "order_id": f"order-{i}"},
        }
    )


class Load:
    """Clients posting chunks of orders; remembers what was acknowledged."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.acked: set[str] = set()
        """Event ids of acknowledged events (lead-i, order-i)."""
        self.acked_events = 0
        self.both: set[int] = set()
        """Orders whose backend and browser copies were both acknowledged."""
        self.statuses: Counter[int] = Counter()
        self.unanswered = 0

    async def post(self, session: aiohttp.ClientSession, path: str, **kwargs: Any) -> int:
        try:
            async with session.post(f"{self.url}{path}", timeout=TIMEOUT, **kwargs) as resp:
                await resp.read()
                self.statuses[resp.status] += 1
                return resp.status
        except (TimeoutError, aiohttp.ClientError):
            self.unanswered += 1  # the killed worker's connections: not acknowledged
            return 0

    async def client(self, c: int) -> None:
        connector = aiohttp.TCPConnector(limit=2)
        async with aiohttp.ClientSession(connector=connector) as session:
            for start in range(c * CHUNK, ORDERS, CLIENTS * CHUNK):
                orders = range(start, min(start + CHUNK, ORDERS))
                await self.chunk(session, orders, browser_first=bool((start // CHUNK) % 2))

    async def chunk(
        self, session: aiohttp.ClientSession, orders: range, *, browser_first: bool
    ) -> None:
        """Post the orders' backend batch and their browser copies, in either order."""
        backend_ok: set[int] = set()
        browser_ok: set[int] = set()
        for step in ("browser", "backend") if browser_first else ("backend", "browser"):
            if step == "backend":
                events = [backend_purchase(i) for i in orders] + [lead(i) for i in orders]
                body = {"events": events}
                if await self.post(session, "/v1/events", json=body, headers=auth()) == 202:
                    backend_ok.update(orders)
                    self.acked.update(f"lead-{i}" for i in orders)
                    self.acked_events += len(events)
                continue
            for i in orders:
                data = browser_purchase(i)
                if await self.post(session, "/e", data=data, headers=LOADER_HEADERS) == 204:
                    browser_ok.add(i)
                    self.acked_events += 1
        self.acked.update(f"order-{i}" for i in backend_ok | browser_ok)
        self.both.update(backend_ok & browser_ok)


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
        extra=f"""
[sites.destinations.tiktok]
pixel_code = "{TIKTOK_PIXEL}"
access_token = "{TIKTOK_TOKEN}"
api_base = "{tiktok_url}"
max_batch = {MAX_BATCH}
""",
    )
    gateway = Supervised(config, port, tmp_path / "gateway.log")
    began = time.monotonic()
    async with aiohttp.ClientSession() as session:
        try:
            pids = await gateway.start(session)
            load = Load(gateway.url)
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
            deadline = time.monotonic() + DRAIN_TIMEOUT
            for name, platform in platforms.items():
                while True:
                    outbox = await gateway.outbox(session, f"shop:{name}")
                    delivered = {e["event_id"] for e in platform.recorder.accepted}
                    waiting = sum(n for state, n in (outbox or {}).items() if state != "done")
                    if outbox is not None and not waiting and load.acked <= delivered:
                        break
                    if time.monotonic() > deadline:
                        missing = load.acked - delivered
                        pytest.fail(
                            f"{name}: {len(missing)} acknowledged events not delivered in"
                            f" {DRAIN_TIMEOUT}s (e.g. {sorted(missing)[:5]}); outbox {outbox}"
                            f"\n{gateway.tail()}"
                        )
                    await asyncio.sleep(0.1)
            drained = time.monotonic()

            report: list[str] = []
            for name, platform in platforms.items():
                accepted = platform.recorder.accepted
                counts = Counter(e["event_id"] for e in accepted)
                twice = {event_id: n for event_id, n in counts.items() if n > 1}
                assert len(twice) <= MAX_BATCH, f"{name}: {len(twice)} ids sent twice"
                assert max(twice.values(), default=1) <= 2, twice
                assert set(counts) <= POSTED, f"{name}: ids nobody posted"
                report.append(
                    f"{name}: {len(counts)} ids in {len(accepted)} events, {len(twice)} twice"
                )
            purchases = {
                e["event_id"]: e for e in sandbox.recorder.accepted if e["event_name"] == "Purchase"
            }
            for i in sorted(load.both):
                event = purchases[f"order-{i}"]
                user = event["user_data"]
                assert user.get("fbc", "").endswith(f".Click{i}"), f"order-{i}: browser part"
                assert "em" in user, f"order-{i}: backend part"
                assert event["custom_data"]["currency"] == "USD", f"order-{i}: backend's value"

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
