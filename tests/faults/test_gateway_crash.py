"""A real gateway process under load is kill -9ed and restarted: no acknowledged event is lost.

The Meta sandbox runs in this test's event loop; the gateway runs as `python -m gateway run` in a
child process pointed at it. Several client tasks post single events and batches of 20 with
unique event_ids and remember every id of a request that was answered 202 (the status line is
enough: the README promises the events are committed before it is sent). The child is SIGKILLed
at three points of the load while the sandbox is slow and flaky (so some rows are leased or
waiting for a retry at that moment), restarted on the same config and port, and the load goes
on. In the end every acknowledged event_id must have reached the sandbox. Duplicates are allowed
(at-least-once across a crash; the platform deduplicates by event_id) and only reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import (
    ACCESS_TOKEN,
    ADMIN_TOKEN,
    API_KEY,
    PIXEL_ID,
    PLANTED_EMAIL,
    PLANTED_PHONE,
    assert_no_planted,
    auth,
)

KILL_POINTS = (200, 1500, 3000)
"""Cumulative acknowledged events after which the gateway is SIGKILLed."""
TAIL_EVENTS = 300
"""Events acknowledged by the last gateway before the load stops."""
CLIENTS = 8
BATCH = 20
MAX_REQUESTS_PER_CLIENT = 2000
START_TIMEOUT = 15.0
PHASE_TIMEOUT = 20.0
DRAIN_TIMEOUT = 60.0
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=5)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(tmp_path: Path, port: int, api_base: str) -> Path:
    def q(value: str) -> str:  # a TOML basic string (JSON escaping is a subset of TOML's)
        return json.dumps(value)

    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""
[server]
host = "127.0.0.1"
port = {port}
admin_token = {q(ADMIN_TOKEN)}

[storage]
path = {q(str(tmp_path / "data" / "outbox.db"))}

[delivery]
poll_interval = 0.02
lease_seconds = 1.0
retry_base_seconds = 0.02
retry_cap_seconds = 0.2
timeout_seconds = 2.0

[[sites]]
id = "shop"
api_keys = [{q(API_KEY)}]

[sites.destinations.meta]
pixel_id = {q(PIXEL_ID)}
access_token = {q(ACCESS_TOKEN)}
api_base = {q(api_base)}
max_batch = 50
"""
    )
    return path


def purchase(event_id: str, i: int) -> dict[str, Any]:
    return {
        "event": "Purchase",
        "event_id": event_id,
        "url": f"https://shop.example/thanks/{event_id}",
        "user": {  # raw PII the gateway must never log (checked on its stderr at the end)
            "email": PLANTED_EMAIL if i % 7 == 0 else f"customer.{event_id}@example.com",
            "phone": PLANTED_PHONE,
            "ip": "203.0.113.7",
            "user_agent": "Mozilla/5.0 (crash test)",
        },
        "data": {"value": 10 + i % 90, "currency": "EUR", "order_id": event_id},
    }


class Gateway:
    """The gateway child process, (re)started on one config; every process ever started is
    remembered so that the test can reap all of them."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config = config
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.procs[-1]

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    async def start(self, session: aiohttp.ClientSession) -> float:
        """Start a process and wait until /healthz answers; return the seconds it took."""
        started = time.monotonic()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALGATE")}
        with self.log.open("ab") as out:
            out.write(f"\n===== start #{len(self.procs) + 1} =====\n".encode())
            out.flush()
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "gateway", "run", "--config", str(self.config)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.config.parent,
                    env=env,
                )
            )
        deadline = started + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"gateway exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(
                    f"{self.url}/healthz", timeout=aiohttp.ClientTimeout(total=1)
                ) as resp:
                    if resp.status == 200:
                        return time.monotonic() - started
            if time.monotonic() > deadline:
                pytest.fail(f"gateway not healthy after {START_TIMEOUT}s:\n{self.log_tail()}")
            await asyncio.sleep(0.05)

    async def totals(self, session: aiohttp.ClientSession) -> dict[str, int] | None:
        """Return the outbox rows per state of route shop:meta (None if it does not answer)."""
        try:
            async with session.get(
                f"{self.url}/v1/debug/recent?limit=1",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=aiohttp.ClientTimeout(total=2),
            ) as resp:
                body = await resp.json()
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return None
        return dict(body.get("totals", {}).get("shop:meta", {}))

    async def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        code = await wait_exit(self.proc, 10.0)
        assert code == -signal.SIGKILL, f"gateway exited with {code}, not by SIGKILL"

    async def stop_all(self) -> None:
        """SIGTERM, then SIGKILL, every process still running; reap them all."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                if await wait_exit(proc, 5.0) is None:
                    proc.kill()
            if await wait_exit(proc, 5.0) is None:  # pragma: no cover - unkillable child
                proc.wait(timeout=5)


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """Wait (without blocking the loop, which serves the sandbox) for the process to exit."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.01)
    return proc.returncode


class Load:
    """Concurrent clients posting unique events; `acked` holds the ids of every 202."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = f"{url}/v1/events"
        self.acked: list[str] = []
        self.requests = 0
        self.unanswered = 0
        self.other_status: Counter[int] = Counter()
        self.stopping = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self.client(c), name=f"load client {c}") for c in range(CLIENTS)
        ]

    async def client(self, c: int) -> None:
        seq = 0
        for n in range(MAX_REQUESTS_PER_CLIENT):
            if self.stopping.is_set():
                return
            size = 1 if n % 3 == 0 else BATCH
            ids = [f"crash-{c}-{seq + k}" for k in range(size)]
            seq += size
            events = [purchase(event_id, seq + k) for k, event_id in enumerate(ids)]
            self.requests += 1
            status = 0
            try:
                async with self.session.post(
                    self.url, json={"events": events}, headers=auth(), timeout=REQUEST_TIMEOUT
                ) as resp:
                    status = resp.status
                    if status == 202:
                        self.acked.extend(ids)  # acknowledged: the 2xx status line arrived
                        body = await resp.json()
                        assert body["accepted"] == size, body
                        assert body["rejected"] == [], body
                        assert body["deduplicated"] == 0, body
            except (TimeoutError, aiohttp.ClientError):
                # The gateway died or is restarting: not acknowledged unless 202 was seen.
                self.unanswered += 1
                await asyncio.sleep(0.02)
                continue
            if status != 202:
                self.other_status[status] += 1
                await asyncio.sleep(0.02)

    def check_clients(self) -> None:
        """Re-raise a client's failure (a broken 202 body) as soon as it happens."""
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                task.result()

    async def wait_acked(self, target: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < target:
            self.check_clients()
            if all(task.done() for task in self.tasks):
                pytest.fail(f"load ended early at {len(self.acked)} acknowledged events")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"only {len(self.acked)} of {target} events acknowledged in {timeout}s;"
                    f" unanswered={self.unanswered} other={dict(self.other_status)}"
                )
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self.stopping.set()
        _, pending = await asyncio.wait(self.tasks, timeout=10) if self.tasks else ((), ())
        for task in pending:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_acknowledged_events_survive_kill9_of_gateway(
    tmp_path: Path, meta_sandbox: Any
) -> None:
    sandbox, sandbox_url = meta_sandbox
    port = free_port()
    config = write_config(tmp_path, port, sandbox_url)
    gateway = Gateway(config, port, tmp_path / "gateway.log")
    began = time.monotonic()
    kills: list[str] = []
    connector = aiohttp.TCPConnector(limit=CLIENTS + 4)
    async with aiohttp.ClientSession(connector=connector) as session:
        load = Load(session, gateway.url)
        try:
            await gateway.start(session)
            load.start()
            for number, point in enumerate(KILL_POINTS, start=1):
                if number == 1:
                    sandbox.faults.latency = 0.1  # slow: requests in flight, rows leased
                else:
                    sandbox.faults.latency = 0.05  # slow and flaky: rows waiting for a retry
                    sandbox.faults.error_rate = 0.2
                await load.wait_acked(point, PHASE_TIMEOUT)
                outbox = await gateway.totals(session)
                acked_at_kill = len(load.acked)
                await gateway.kill9()
                restart = await gateway.start(session)
                kills.append(
                    f"kill {number} at {acked_at_kill} acked, outbox {outbox},"
                    f" restarted in {restart:.2f}s"
                )
            sandbox.faults.reset()
            await load.wait_acked(len(load.acked) + TAIL_EVENTS, PHASE_TIMEOUT)
            await load.stop()
            load.check_clients()

            acked = set(load.acked)
            assert len(acked) == len(load.acked), "an event_id was acknowledged twice"
            assert len(acked) >= KILL_POINTS[-1] + TAIL_EVENTS
            deadline = time.monotonic() + DRAIN_TIMEOUT
            while True:
                missing = acked - {e["event_id"] for e in sandbox.recorder.accepted}
                if not missing:
                    break
                if time.monotonic() > deadline or gateway.proc.poll() is not None:
                    outbox = await gateway.totals(session)
                    pytest.fail(
                        f"{len(missing)} of {len(acked)} acknowledged events never reached the"
                        f" sandbox in {DRAIN_TIMEOUT}s, e.g. {sorted(missing)[:5]}; outbox"
                        f" {outbox}; {kills}\n{gateway.log_tail()}"
                    )
                await asyncio.sleep(0.1)
            drained = time.monotonic()

            assert_no_planted([gateway.log.read_text(errors="replace")], "the gateway processes")
            counts = Counter(e["event_id"] for e in sandbox.recorder.accepted)
            duplicated = {event_id: n for event_id, n in counts.items() if n > 1}
            unacknowledged = set(counts) - acked
            outbox = await gateway.totals(session)
            print(
                f"\ngateway crash test: {len(acked)} events acknowledged in {load.requests}"
                f" requests ({load.unanswered} unanswered, other statuses"
                f" {dict(load.other_status)}); {len(KILL_POINTS)} kills:"
                + "".join(f"\n  {k}" for k in kills)
                + f"\n  delivered {len(counts)} distinct ids in {len(sandbox.recorder.accepted)}"
                f" sandbox events; {len(duplicated)} ids delivered more than once"
                f" (max {max(duplicated.values(), default=1)}x);"
                f" {len(unacknowledged)} delivered but never acknowledged;"
                f" {sandbox.recorder.requests} sandbox requests,"
                f" {len(sandbox.recorder.rejected)} refused by faults"
                f"\n  final outbox {outbox}; drained {drained - began:.1f}s after start"
            )
        finally:
            await load.stop()
            await gateway.stop_all()
