"""`signalgate run --workers 2` as real processes flushing their stats rollups every second:
the `dedup_pair` figure of `GET /v1/admin/stats` is the number of duplicates sent, not once per
worker, however many flushes both workers run after them (issue #12)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import ADMIN_TOKEN, auth
from test_gateway_crash import free_port
from test_workers import Supervised, lead, workers_config

EVENTS = 30
COPIES = 3
"""Each event is posted this many times: COPIES - 1 duplicates of each."""
FLUSHES_AFTER = 3.5
"""Seconds (flushes of both workers, one a second) waited once the figure is complete."""


async def post(url: str, events: list[dict[str, Any]]) -> int:
    """POST on a new connection (so either worker may answer); return the status."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s,
        s.post(f"{url}/v1/events", json={"events": events}, headers=auth()) as resp,
    ):
        return resp.status


async def pairs_booked(session: aiohttp.ClientSession, url: str) -> int | None:
    """The sum of every dedup_pair series over the last hour (None: no answer)."""
    now = int(time.time())
    params = {"metric": "dedup_pair", "from": str(now - 3600), "to": str(now + 60)}
    try:
        async with session.get(
            f"{url}/v1/admin/stats",
            params=params,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=aiohttp.ClientTimeout(total=3),
        ) as resp:
            if resp.status != 200:
                return None
            body = await resp.json()
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None
    return sum(sum(s["values"]) for s in body["series"])


@pytest.mark.timeout(120)
async def test_two_workers_book_each_duplicate_once(tmp_path: Path, meta_sandbox: Any) -> None:
    _, sandbox_url = meta_sandbox
    port = free_port()
    config = workers_config(tmp_path, port, sandbox_url, extra="\n[audit]\nflush_seconds = 1\n")
    gateway = Supervised(config, port, tmp_path / "gateway.log")
    sent = EVENTS * (COPIES - 1)
    async with aiohttp.ClientSession() as session:
        try:
            pids = await gateway.start(session)
            assert len(pids) == 2, pids
            for _ in range(COPIES):
                for at in range(0, EVENTS, 5):
                    batch = [lead(i) for i in range(at, at + 5)]
                    assert await post(gateway.url, batch) == 202
            deadline = time.monotonic() + 30
            booked = await pairs_booked(session, gateway.url)
            while booked is None or booked < sent:
                if time.monotonic() > deadline:
                    pytest.fail(f"dedup_pair {booked} of {sent} after 30s:\n{gateway.tail()}")
                await asyncio.sleep(0.1)
                booked = await pairs_booked(session, gateway.url)
            assert booked == sent
            await asyncio.sleep(FLUSHES_AFTER)  # both workers flush several times more
            for _ in range(6):  # read on new connections: both workers answer alike
                async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(force_close=True)
                ) as fresh:
                    assert await pairs_booked(fresh, gateway.url) == sent, gateway.tail()
            code, _ = await gateway.terminate()
            assert code == 0, f"exit {code}:\n{gateway.tail()}"
            log = gateway.text()
            assert "Traceback" not in log, gateway.tail()
            assert "not booked" not in log, gateway.tail()
        finally:
            await gateway.stop()
