"""The servers a bench runs in child processes: a child pinned to a core with its log file and a
graceful stop; the gateway on a config written from a template, with the templates of the bench
site several benches share; and what a child mode serves with (uvloop until SIGINT, an aiohttp
app, a JSON GET to ask it how it is doing)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from benchlib import affinity_hook, child_env, free_port, pinned


class Server:
    """A server child process pinned to a core, running the gateway sources in `source`, its
    log file and a graceful stop."""

    stop_signal: int = signal.SIGINT
    """What `stop` sends first (SIGINT: graceful, the gateway drains its writer queue)."""

    def __init__(
        self, name: str, cmd: list[str], cpu: int | None, port: int, workdir: Path, source: Path
    ):
        self.name = name
        self.port = port
        self.log_path = workdir / f"{name}-{port}.log"
        self._log = self.log_path.open("wb")
        self.proc = self._spawn(pinned(cmd, cpu), cpu, source)
        self._wait_ready()

    def _spawn(self, cmd: list[str], cpu: int | None, source: Path) -> subprocess.Popen[bytes]:
        """Start `cmd` (already pinned by taskset, if present) in `source`, its output logged."""
        return subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=child_env(source),
            cwd=source,
            preexec_fn=affinity_hook(cpu),
        )

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not listen on {self.port}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """`stop_signal` (graceful), then SIGKILL after 20 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def start_child(script: str, mode: str, workdir: Path, cpu: int | None, source: Path) -> Server:
    """Start `script` in a child mode (``_bare``, ``_sandbox``) on a free port, named after the
    mode."""
    port = free_port()
    cmd = [sys.executable, str(Path(script).resolve()), mode, "--port", str(port)]
    return Server(mode.lstrip("_"), cmd, cpu, port, workdir, source)


# -- gateway configs ---------------------------------------------------------------------------
# Pieces of the config templates (``str.format``: ``{port}``, ``{db}``, ``{key}``, ...) that
# several benches join: each starts with the blank line before its table.

SERVER_TOML = """
[server]
host = "127.0.0.1"
port = {port}
max_body_bytes = 1048576
max_events_per_request = 1000
"""
SQLITE_STORAGE = """backend = "sqlite"
path = "{db}"
synchronous = "NORMAL"
"""
"""``[storage]`` of a SQLite outbox at ``{db}`` (WAL, ``synchronous = NORMAL``: a 202 means
committed)."""
SQLITE_TOML = "\n[storage]\n" + SQLITE_STORAGE
DELIVERY_TOML = """
[delivery]
poll_interval = 0.05
"""
SITE_TOML = """
[[sites]]
id = "shop"
api_keys = ["{key}"]
default_country = "us"
"""
"""The bench site: ``POST /v1/events`` with the bench's API key ``{key}``, no destination."""
META_TOML = """
[sites.destinations.meta]
pixel_id = "{pixel}"
access_token = "bench-access-token"
api_base = "{api_base}"
max_batch = 500
"""
"""A Meta destination of the bench site (``{pixel}``, ``{api_base}``)."""
INGEST_TOML = SERVER_TOML + SQLITE_TOML + DELIVERY_TOML + SITE_TOML
"""A gateway storing the bench site's events in a SQLite outbox."""


def start_gateway_config(
    toml: str,
    workdir: Path,
    cpu: int | None,
    source: Path,
    *,
    delivery: bool = False,
    **values: Any,
) -> tuple[Server, Path]:
    """Write `toml` (formatted with `values` and the chosen ``port`` and ``db``) into a fresh
    directory and start ``python -m gateway run`` on it; return (server, outbox path)."""
    port = free_port()
    config, db = write_gateway_config(toml, workdir, port, **values)
    cmd = [sys.executable, "-m", "gateway", "run", "--config", str(config)]
    if not delivery:
        cmd.append("--no-delivery")
    return Server("gateway", cmd, cpu, port, workdir, source), db


def write_gateway_config(toml: str, workdir: Path, port: int, **values: Any) -> tuple[Path, Path]:
    """Write a gateway config with its outbox in a fresh directory; return (config, db)."""
    case_dir = Path(tempfile.mkdtemp(prefix="gw-", dir=workdir))
    db = case_dir / "outbox.db"
    config = case_dir / "signalgate.toml"
    config.write_text(toml.format(port=port, db=db, **values))
    return config, db


def run_forever(coro: Coroutine[Any, Any, None]) -> None:
    """Run a child server's coroutine on uvloop until SIGINT."""
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(coro)


async def serve_app(app: Any, port: int, name: str) -> None:
    """Serve an aiohttp app on 127.0.0.1:port without access log, until cancelled."""
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"{name} listening on {port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def http_get_json(port: int, path: str, timeout: float = 10) -> Any:
    """GET http://127.0.0.1:port/path (one request on a fresh connection); its JSON body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])
