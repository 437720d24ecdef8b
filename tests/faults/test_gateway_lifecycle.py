"""A real `python -m gateway run` process: SIGTERM under load, one-line start-up errors, JSON logs.

SIGTERM arrives while clients post events and the Meta sandbox is slow (deliveries in flight,
rows leased). The process must exit 0 within the grace period; every request answered 202 before
the socket closed must have all its events delivered (before the exit or by the next run, and
well before `delivery.lease_seconds`: leases are handed back, not left to expire); a request
that got no answer is a connection error, never a 5xx.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import assert_no_planted, auth
from test_gateway_crash import (
    CLIENTS,
    Gateway,
    Load,
    free_port,
    purchase,
    wait_exit,
    write_config,
)

GRACE = 5.0
LEASE = 120.0
"""Far longer than the test waits for delivery after the restart: leases must be handed back."""
EXIT_MARGIN = 4.0
"""Seconds past the grace period allowed for closing the store and the interpreter (busy CI)."""
DRAIN_TIMEOUT = 40.0


def lifecycle_config(tmp_path: Path, port: int, api_base: str, **server: Any) -> Path:
    path = write_config(tmp_path, port, api_base)
    extra = "".join(f"{key} = {json.dumps(value)}\n" for key, value in server.items())
    text = path.read_text()
    text = text.replace("[storage]", f"shutdown_grace_seconds = {GRACE}\n{extra}\n[storage]")
    text = text.replace("lease_seconds = 1.0", f"lease_seconds = {LEASE}")
    path.write_text(text)
    return path


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SIGNALGATE")}


def run_once(config: Path, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        check=False,
    )


def assert_one_line(done: subprocess.CompletedProcess[str], expected: str) -> None:
    assert_no_planted([done.stdout, done.stderr], "the gateway process")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [expected], done.stderr
    assert done.stdout == ""


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_sigterm_under_load_loses_no_acknowledged_event(
    tmp_path: Path, meta_sandbox: Any
) -> None:
    sandbox, sandbox_url = meta_sandbox
    port = free_port()
    config = lifecycle_config(tmp_path, port, sandbox_url)
    gateway = Gateway(config, port, tmp_path / "gateway.log")
    connector = aiohttp.TCPConnector(limit=CLIENTS + 4)
    async with aiohttp.ClientSession(connector=connector) as session:
        load = Load(session, gateway.url)
        try:
            await gateway.start(session)
            sandbox.faults.latency = 0.3  # deliveries in flight, rows leased at the signal
            load.start()
            await load.wait_acked(1500, 30.0)
            acked_before = len(load.acked)
            signalled = time.monotonic()
            gateway.proc.send_signal(signal.SIGTERM)
            code = await wait_exit(gateway.proc, GRACE + 30)
            took = time.monotonic() - signalled
            acked_after_signal = len(load.acked) - acked_before
            await load.stop()
            load.check_clients()
            assert code == 0, f"exit {code} after SIGTERM:\n{gateway.log_tail()}"
            assert took < GRACE + EXIT_MARGIN, f"took {took:.1f}s:\n{gateway.log_tail()}"
            assert not load.other_status, f"answers other than 202: {dict(load.other_status)}"
            log = gateway.log.read_text(errors="replace")
            assert "Traceback" not in log, gateway.log_tail()
            assert_no_planted([log], "the gateway process")  # Load posts them in its events

            sandbox.faults.reset()
            await gateway.start(session)  # the next run delivers what the first handed back
            acked = set(load.acked)
            deadline = time.monotonic() + DRAIN_TIMEOUT
            while missing := acked - {e["event_id"] for e in sandbox.recorder.accepted}:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"{len(missing)} of {len(acked)} acknowledged events not delivered"
                        f" {DRAIN_TIMEOUT}s after the restart (lease {LEASE}s), e.g."
                        f" {sorted(missing)[:5]}\n{gateway.log_tail()}"
                    )
                await asyncio.sleep(0.1)
            print(
                f"\nSIGTERM under load: {len(acked)} events acknowledged in {load.requests}"
                f" requests, {acked_after_signal} acknowledged after the signal,"
                f" {load.unanswered} unanswered (connection errors); exit 0 in {took:.2f}s"
                f" (grace {GRACE}s); all delivered after the restart"
            )
        finally:
            await load.stop()
            await gateway.stop_all()


def test_busy_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_once(lifecycle_config(tmp_path, port, "http://127.0.0.1:9"))
    assert_one_line(done, f"signalgate: cannot listen on 127.0.0.1:{port}: address already in use")


def test_store_under_a_file_is_one_line(tmp_path: Path) -> None:
    config = lifecycle_config(tmp_path, free_port(), "http://127.0.0.1:9")
    (tmp_path / "data").write_text("a file where the store's directory should be")
    done = run_once(config)
    store = tmp_path / "data" / "outbox.db"
    assert_one_line(done, f"signalgate: cannot write the store at {store}: not a directory")


def test_store_that_is_a_directory_is_one_line(tmp_path: Path) -> None:
    config = lifecycle_config(tmp_path, free_port(), "http://127.0.0.1:9")
    store = tmp_path / "data" / "outbox.db"
    store.mkdir(parents=True)
    done = run_once(config)
    assert_one_line(done, f"signalgate: cannot write the store at {store}: is a directory")


def test_missing_config_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    done = run_once(missing)
    assert_one_line(
        done, f"signalgate: cannot read config file {missing}: No such file or directory"
    )


@pytest.mark.timeout(60)
async def test_json_log_format_is_one_object_a_line(tmp_path: Path, meta_sandbox: Any) -> None:
    _, sandbox_url = meta_sandbox
    port = free_port()
    config = lifecycle_config(tmp_path, port, sandbox_url, log_format="json", log_level="INFO")
    errors = tmp_path / "stderr.log"
    with errors.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=clean_env(),
        )
    try:
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 15
            while True:
                try:
                    async with session.get(f"{url}/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert proc.poll() is None, errors.read_text()
                assert time.monotonic() < deadline, "gateway did not start"
                await asyncio.sleep(0.05)
            async with session.post(f"{url}/v1/events", data=b"not json", headers=auth()) as resp:
                assert resp.status == 400
            planted = {"events": [purchase("json-log", 7)]}  # carries the planted e-mail, phone
            async with session.post(f"{url}/v1/events", json=planted, headers=auth()) as resp:
                assert resp.status == 202
        proc.send_signal(signal.SIGINT)  # Ctrl-C stops as gracefully as SIGTERM
        assert await wait_exit(proc, GRACE + 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert_no_planted([errors.read_text()], "the gateway process")
    lines = errors.read_text().splitlines()
    assert lines, "no log line at all"
    docs = [json.loads(line) for line in lines]  # every line is one JSON object
    for doc in docs:
        assert {"time", "level", "logger", "message"} <= set(doc), doc
        assert doc["time"].endswith("Z")
    assert any(d["message"].startswith("stopping") for d in docs), docs
    assert any(d.get("status") == "stopped" for d in docs), docs


def test_store_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    config = lifecycle_config(tmp_path, free_port(), "http://127.0.0.1:9")
    store = tmp_path / "data" / "outbox.db"
    store.parent.mkdir()
    store.write_bytes(b"this is not an SQLite file, but it is long enough to have a header" * 20)
    done = run_once(config)
    assert_one_line(done, f"signalgate: cannot open the store at {store}: file is not a database")


def test_unknown_log_level_variable_is_one_line(tmp_path: Path) -> None:
    config = lifecycle_config(tmp_path, free_port(), "http://127.0.0.1:9")
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**clean_env(), "SIGNALGATE_LOG_LEVEL": "chatty"},
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert_one_line(done, "signalgate: SIGNALGATE_LOG_LEVEL: unknown level 'chatty'")
