"""`signalgate run --workers 2` as real processes: both workers serve the one port, the
`[metrics]` port sums them, every event is delivered exactly once, SIGTERM drains both, and a
worker that cannot start makes the supervisor exit 1.

The supervisor runs as `python -m gateway run --workers 2` in a child process (its stdout and
stderr, and its workers', go to one log file); the Meta sandbox runs in the test's loop.
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
from conftest import ACCESS_TOKEN, ADMIN_TOKEN, API_KEY, PIXEL_ID, auth
from prometheus_client.parser import text_string_to_metric_families
from test_gateway_crash import free_port, wait_exit

GRACE = 5.0
STOP_MARGIN = 8.0
"""Seconds past the grace period allowed for the workers' and the supervisor's exits (CI)."""
START_TIMEOUT = 30.0
PID_TRIES = 400
"""New connections tried until both workers have answered /healthz."""


def q(value: str) -> str:
    return json.dumps(value)  # a TOML basic string (JSON escaping is a subset of TOML's)


COOKIE_SECRET = "cookie-secret-0123456789"
"""The visitor-cookie key of gateways on PostgreSQL (required there: all sign alike)."""


def postgres_storage(dsn: str) -> str:
    """The `[storage]` keys of a gateway on the test's PostgreSQL database (`pg_dsn`)."""
    return f'backend = "postgres"\ndsn = {q(dsn)}\npool_min = 2\npool_max = 8\n'


def workers_config(
    tmp_path: Path,
    port: int,
    api_base: str,
    *,
    metrics_port: int | None = None,
    merge_seconds: float = 0.0,
    lease_seconds: float = 30.0,
    max_batch: int = 50,
    extra: str = "",
    storage: str | None = None,
    server_extra: str = "",
) -> Path:
    """The config of these tests (`extra`: TOML appended, e.g. another destination;
    `storage`: the `[storage]` keys instead of the SQLite file under `tmp_path`;
    `server_extra`: more `[server]` keys)."""
    path = tmp_path / "gateway.toml"
    if storage is None:
        storage = f"path = {q(str(tmp_path / 'data' / 'outbox.db'))}"
    metrics = f'[metrics]\nhost = "127.0.0.1"\nport = {metrics_port}\n' if metrics_port else ""
    path.write_text(
        f"""
[server]
host = "127.0.0.1"
port = {port}
admin_token = {q(ADMIN_TOKEN)}
shutdown_grace_seconds = {GRACE}
{server_extra}
[storage]
{storage}

[delivery]
poll_interval = 0.02
lease_seconds = {lease_seconds}
retry_base_seconds = 0.05
retry_cap_seconds = 0.5
timeout_seconds = 3.0
merge_seconds = {merge_seconds}

{metrics}
[[sites]]
id = "shop"
api_keys = [{q(API_KEY)}]
hosts = ["track.shop.test"]
allowed_origins = ["https://www.shop.test"]

[sites.destinations.meta]
pixel_id = {q(PIXEL_ID)}
access_token = {q(ACCESS_TOKEN)}
api_base = {q(api_base)}
max_batch = {max_batch}
{extra}"""
    )
    return path


class Supervised:
    """`signalgate run --workers N` in a child process, its output in one log file."""

    def __init__(self, config: Path, port: int, log: Path, workers: int = 2) -> None:
        self.config = config
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def tail(self, chars: int = 4000) -> str:
        return self.text()[-chars:]

    def spawn(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALGATE")}
        argv = [sys.executable, "-m", "gateway", "run", "--config", str(self.config)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*argv, "--workers", str(self.workers)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.config.parent,
                env=env,
            )
        return self.proc

    async def start(self, session: aiohttp.ClientSession) -> set[int]:
        """Start the supervisor; return the pids of its workers once all answered (one
        worker: the gateway's pid once it listens)."""
        before = self.text().count("signalgate listening on")
        proc = self.spawn()
        deadline = time.monotonic() + START_TIMEOUT
        while self.text().count("signalgate listening on") <= before:
            if proc.poll() is not None:
                pytest.fail(f"supervisor exited with {proc.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"not ready after {START_TIMEOUT}s:\n{self.tail()}")
            await asyncio.sleep(0.05)
        if self.workers == 1:  # no supervisor: the process is the gateway (its pid)
            return {proc.pid}
        return await self.worker_pids(self.workers)

    async def worker_pids(self, count: int, avoid: frozenset[int] = frozenset()) -> set[int]:
        """Open new connections to /healthz until `count` pids not in `avoid` have answered."""
        seen: set[int] = set()
        for _ in range(PID_TRIES):
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, KeyError, ValueError):
                async with (
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s,
                    s.get(f"{self.url}/healthz", timeout=aiohttp.ClientTimeout(total=2)) as resp,
                ):
                    body = await resp.json()
                    if resp.status == 200 and body["pid"] not in avoid:
                        seen.add(int(body["pid"]))
            if len(seen) >= count:
                return seen
            await asyncio.sleep(0.01)
        pytest.fail(f"only workers {sorted(seen)} answered /healthz:\n{self.tail()}")

    async def outbox(
        self, session: aiohttp.ClientSession, route: str = "shop:meta"
    ) -> dict[str, int] | None:
        """The rows per state of `route` (read from the shared store by any worker)."""
        try:
            async with session.get(
                f"{self.url}/v1/debug/recent?limit=1",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=aiohttp.ClientTimeout(total=3),
            ) as resp:
                body = await resp.json()
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return None
        return dict(body.get("totals", {}).get(route, {}))

    async def terminate(self) -> tuple[int | None, float]:
        """SIGTERM the supervisor; return its exit status and the seconds it took."""
        assert self.proc is not None
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = await wait_exit(self.proc, GRACE + STOP_MARGIN + 10)
        return code, time.monotonic() - began

    async def stop(self) -> None:
        """Reap the supervisor whatever happened (SIGTERM, then SIGKILL)."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        if await wait_exit(proc, GRACE + STOP_MARGIN) is None:
            proc.kill()
            proc.wait(timeout=10)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def lead(i: int) -> dict[str, Any]:
    return {
        "event": "Lead",
        "event_id": f"lead-{i}",
        "source": "website",
        "url": f"https://www.shop.test/signup/{i}",
        "user": {
            "email": f"lead.{i}@example.com",
            "ip": "203.0.113.9",
            "user_agent": "Mozilla/5.0 (workers test)",
        },
    }


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.timeout(120)
async def test_two_workers_share_the_port_deliver_once_and_drain_on_sigterm(
    tmp_path: Path, meta_sandbox: Any
) -> None:
    await share_deliver_drain(tmp_path, meta_sandbox)


@pytest.mark.timeout(120)
async def test_two_workers_on_postgres_share_the_port_deliver_once_and_drain_on_sigterm(
    tmp_path: Path, meta_sandbox: Any, pg_dsn: str
) -> None:
    """The same on PostgreSQL: the two workers lease from the one database."""
    await share_deliver_drain(
        tmp_path,
        meta_sandbox,
        storage=postgres_storage(pg_dsn),
        server_extra=f"cookie_secret = {q(COOKIE_SECRET)}\n",
    )


async def share_deliver_drain(tmp_path: Path, meta_sandbox: Any, **store: str) -> None:
    """`run --workers 2`: both workers answer the one port, 400 events are delivered exactly
    once, the `[metrics]` port sums both, SIGTERM drains both (`store`: more `workers_config`
    keys: the storage)."""
    sandbox, sandbox_url = meta_sandbox
    port, metrics_port = free_port(), free_port()
    config = workers_config(tmp_path, port, sandbox_url, metrics_port=metrics_port, **store)
    gateway = Supervised(config, port, tmp_path / "gateway.log")
    events = 400
    async with aiohttp.ClientSession() as session:
        try:
            pids = await gateway.start(session)
            assert len(pids) == 2, pids
            statuses: Counter[int] = Counter()
            for at in range(0, events, 20):  # each request on a new connection: both workers
                batch = [lead(i) for i in range(at, at + 20)]
                async with (
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s,
                    s.post(f"{gateway.url}/v1/events", json={"events": batch}, headers=auth()) as r,
                ):
                    statuses[r.status] += 1
            assert statuses == {202: events // 20}, statuses
            deadline = time.monotonic() + 60
            expected = {f"lead-{i}" for i in range(events)}
            while {e["event_id"] for e in sandbox.recorder.accepted} != expected:
                if time.monotonic() > deadline:
                    pytest.fail(f"not all delivered in 60s:\n{gateway.tail()}")
                await asyncio.sleep(0.05)
            outbox = await gateway.outbox(session)
            while outbox is None or any(n for state, n in outbox.items() if state != "done"):
                if time.monotonic() > deadline:
                    pytest.fail(f"outbox not drained: {outbox}\n{gateway.tail()}")
                await asyncio.sleep(0.05)
                outbox = await gateway.outbox(session)
            counts = Counter(e["event_id"] for e in sandbox.recorder.accepted)
            assert max(counts.values()) == 1, "an event was sent twice"

            # One scrape of the [metrics] port: the sum of both workers' counters.
            async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
                assert resp.status == 200
                merged = scrape(await resp.text())

            def total(family: str) -> float:
                return sum(v for (name, _), v in merged.items() if name == family)

            assert total("signalgate_events_received_total") == events
            assert total("signalgate_events_delivered_total") == events
            assert merged[("signalgate_workers_scraped", ())] == 2
            # The main port's /metrics is the answering worker's own: a part of the total.
            async with session.get(
                f"{gateway.url}/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            ) as resp:
                own = scrape(await resp.text())
            mine = sum(v for (n, _), v in own.items() if n == "signalgate_events_received_total")
            assert 0 < mine < events, "one worker took every request"
            route = (("destination", "meta"), ("site", "shop"))
            assert merged[("signalgate_outbox_depth", route)] == 0

            code, took = await gateway.terminate()
            assert code == 0, f"exit {code}:\n{gateway.tail()}"
            assert took < GRACE + STOP_MARGIN, f"took {took:.1f}s:\n{gateway.tail()}"
            assert not any(alive(pid) for pid in pids), "a worker outlived the supervisor"
            log = gateway.text()
            assert log.count("signalgate stopped in") == 2, gateway.tail()
            assert "database is locked" not in log
            assert "Traceback" not in log, gateway.tail()
        finally:
            await gateway.stop()


def test_a_worker_that_cannot_start_fails_the_supervisor(tmp_path: Path) -> None:
    """A port held by a socket without SO_REUSEPORT: no worker can bind it, exit status 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = workers_config(tmp_path, port, "http://127.0.0.1:9")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALGATE")}
        argv = [sys.executable, "-m", "gateway", "run", "--config", str(config), "--workers", "2"]
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, env=env, check=False
        )
    assert done.returncode == 1, done.stderr
    assert "address already in use" in done.stderr
    assert "failed to start" in done.stderr
    assert "listening on" not in done.stdout


def test_unsharable_config_and_bad_count_are_one_line(tmp_path: Path) -> None:
    config = workers_config(tmp_path, 0, "http://127.0.0.1:9")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALGATE")}
    base = [sys.executable, "-m", "gateway", "run", "--config", str(config), "--workers"]
    done = subprocess.run(
        [*base, "2"], capture_output=True, text=True, timeout=30, env=env, check=False
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "signalgate: --workers 2: server.port: 0 (any free port) cannot be shared by several"
        " workers; set a port"
    ]
    done = subprocess.run(
        [*base, "lots"], capture_output=True, text=True, timeout=30, env=env, check=False
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "signalgate: --workers: expected a positive integer or 'auto', got 'lots'"
    ]


LOADER = {
    "Host": "track.shop.test",
    "Origin": "https://www.shop.test",
    "Content-Type": "text/plain",
    "User-Agent": "Mozilla/5.0 (workers cookie test)",
}


def set_cookies(headers: Any) -> dict[str, str]:
    """name → value of every Set-Cookie of an answer."""
    out: dict[str, str] = {}
    for line in headers.getall("Set-Cookie", []):
        name, _, rest = line.partition("=")
        out[name.strip()] = rest.split(";", 1)[0]
    return out


@pytest.mark.timeout(120)
async def test_visitor_cookie_and_profile_hold_whichever_worker_answers(
    tmp_path: Path, meta_sandbox: Any
) -> None:
    """Worker A signs the visitor cookie and learns the click id; worker B verifies the cookie
    (same key) and restores the lost `_fbc` from the profile A wrote (same store)."""
    _, sandbox_url = meta_sandbox
    port = free_port()
    config = workers_config(tmp_path, port, sandbox_url)
    gateway = Supervised(config, port, tmp_path / "gateway.log")
    async with aiohttp.ClientSession() as session:
        try:
            await gateway.start(session)
            first = json.dumps({"event": "PageView", "url": "https://www.shop.test/?fbclid=ClickW"})
            async with session.post(f"{gateway.url}/e", data=first, headers=LOADER) as resp:
                assert resp.status == 204, await resp.text()
                issued = set_cookies(resp.headers)
            assert issued["_fbc"].endswith(".ClickW"), issued
            (visitor,) = [name for name, value in issued.items() if value.count(".") == 1]
            answered_by: set[int] = set()
            for n in range(60):  # one connection each: /healthz names the worker, then /e
                connector = aiohttp.TCPConnector(limit=1)
                async with aiohttp.ClientSession(connector=connector) as one:
                    async with one.get(f"{gateway.url}/healthz") as resp:
                        pid = int((await resp.json())["pid"])
                    body = json.dumps({"event": "PageView", "url": f"https://www.shop.test/p/{n}"})
                    headers = {**LOADER, "Cookie": f"{visitor}={issued[visitor]}"}
                    async with one.post(f"{gateway.url}/e", data=body, headers=headers) as resp:
                        assert resp.status == 204, await resp.text()
                        again = set_cookies(resp.headers)
                assert again[visitor] == issued[visitor], f"worker {pid} made a new visitor"
                assert again.get("_fbc") == issued["_fbc"], f"worker {pid} lost the profile"
                answered_by.add(pid)
                if len(answered_by) == 2 and n >= 10:
                    break
            assert len(answered_by) == 2, "one worker answered every connection"
        finally:
            await gateway.stop()


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_sigterm_under_load_drains_both_workers_and_loses_nothing(
    tmp_path: Path, meta_sandbox: Any
) -> None:
    """SIGTERM while clients post and the sandbox is slow (rows leased in both workers): exit 0
    within the grace period; every acknowledged event is delivered, by the next run well before
    the leases would expire (each worker handed its leased rows back)."""
    from test_gateway_crash import CLIENTS, Load

    sandbox, sandbox_url = meta_sandbox
    port = free_port()
    lease = 120.0
    config = workers_config(tmp_path, port, sandbox_url, lease_seconds=lease)
    gateway = Supervised(config, port, tmp_path / "gateway.log")
    connector = aiohttp.TCPConnector(limit=CLIENTS + 4)
    async with aiohttp.ClientSession(connector=connector) as session:
        load = Load(session, gateway.url)
        try:
            pids = await gateway.start(session)
            sandbox.faults.latency = 0.3
            load.start()
            await load.wait_acked(1500, 60.0)
            code, took = await gateway.terminate()
            await load.stop()
            load.check_clients()
            assert code == 0, f"exit {code}:\n{gateway.tail()}"
            assert took < GRACE + STOP_MARGIN, f"took {took:.1f}s:\n{gateway.tail()}"
            assert not load.other_status, f"answers other than 202: {dict(load.other_status)}"
            assert not any(alive(pid) for pid in pids)
            log = gateway.text()
            assert log.count("signalgate stopped in") == 2, gateway.tail()
            assert "database is locked" not in log
            assert "Traceback" not in log, gateway.tail()

            sandbox.faults.reset()
            await gateway.start(session)
            acked = set(load.acked)
            deadline = time.monotonic() + 40
            while missing := acked - {e["event_id"] for e in sandbox.recorder.accepted}:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"{len(missing)} of {len(acked)} acknowledged events not delivered 40 s"
                        f" after the restart (lease {lease}s)\n{gateway.tail()}"
                    )
                await asyncio.sleep(0.1)
            print(
                f"\nworkers SIGTERM under load: {len(acked)} acknowledged, {load.unanswered}"
                f" unanswered; exit 0 in {took:.2f}s (grace {GRACE}s); all delivered after"
                " the restart"
            )
        finally:
            await load.stop()
            await gateway.stop()


@pytest.mark.timeout(120)
async def test_tls_and_its_redirect_port_are_shared_by_both_workers(tmp_path: Path) -> None:
    """With [tls]: both workers serve HTTPS on server.port and the redirect on tls.http_port."""
    import ssl
    from datetime import UTC, datetime

    from gateway.devcerts import write_dev_certs

    certs = write_dev_certs(tmp_path / "certs", ["127.0.0.1"], datetime.now(UTC))
    port, http_port = free_port(), free_port()
    config = workers_config(tmp_path, port, "http://127.0.0.1:9")
    config.write_text(
        config.read_text()
        + f"""
[tls]
enabled = true
cert_file = {q(str(certs.cert))}
key_file = {q(str(certs.key))}
http_port = {http_port}
"""
    )
    gateway = Supervised(config, port, tmp_path / "gateway.log")
    gateway.url = f"https://127.0.0.1:{port}"
    context = ssl.create_default_context(cafile=str(certs.ca))
    pids: set[int] = set()
    redirects: Counter[int] = Counter()
    async with aiohttp.ClientSession() as session:
        proc = gateway.spawn()
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while "signalgate listening on https://" not in gateway.text():
                assert proc.poll() is None, gateway.tail()
                assert time.monotonic() < deadline, gateway.tail()
                await asyncio.sleep(0.05)
            for _ in range(PID_TRIES):
                connector = aiohttp.TCPConnector(ssl=context, force_close=True)
                async with (
                    aiohttp.ClientSession(connector=connector) as one,
                    one.get(f"{gateway.url}/healthz") as resp,
                ):
                    pids.add(int((await resp.json())["pid"]))
                if len(pids) == 2:
                    break
            for _ in range(20):
                async with session.get(
                    f"http://127.0.0.1:{http_port}/healthz", allow_redirects=False
                ) as resp:
                    redirects[resp.status] += 1
            assert len(pids) == 2, f"only {pids} answered over TLS:\n{gateway.tail()}"
            assert redirects == {308: 20}
            code, _ = await gateway.terminate()
            assert code == 0, gateway.tail()
        finally:
            await gateway.stop()
