"""The life of a `signalgate run` process: start, serve until a signal, stop gracefully.

Start-up problems an operator can fix (a busy port, a store path that cannot be written) become
`StartupError` with one line to print, never a traceback. SIGTERM and SIGINT start a graceful
stop bounded by `server.shutdown_grace_seconds`:

1. the listening sockets close (no new connections) and idle keep-alive connections too;
2. requests in flight are answered (aiohttp's handlers and the fast lane's answers), so every
   append they wait for is committed first; meanwhile the delivery workers finish the request
   they are sending and hand every leased row they have not sent back to the outbox, due at
   once (`Worker.stop` / `Worker.release`), so the next run delivers it without waiting for
   `delivery.lease_seconds`;
3. whatever still runs when the grace period ends is cancelled, leases are handed back, and
   the store commits what was queued and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from gateway.app import RUNTIME, create_app, make_runner, make_store
from gateway.config import Config
from gateway.store.base import GatewayStore
from gateway.store.sqlite import SqliteStore
from gateway.web.api import WORKER_SLOT
from gateway.web.metrics import UNIX_SOCKET, ListenError
from gateway.web.tls import TlsError, TlsServing

log = logging.getLogger("signalgate")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    """This process is worker `slot` of `signalgate run --workers N` (gateway/supervisor.py):
    its listeners share their ports with the other workers (SO_REUSEPORT)."""

    slot: int
    metrics_socket: str | None = None
    """Where to serve the separate /metrics (the supervisor owns `metrics.port`)."""


class StartupError(Exception):
    """The gateway cannot start; the message is one line for the operator."""


def reason_of(exc: BaseException) -> str:
    """Return a short lower-case reason for an OS or SQLite error (no paths, no values)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno).lower()
    if isinstance(exc, sqlite3.Error):
        return str(exc).split("\n", 1)[0].lower()
    return type(exc).__name__


def _postgres_error(config: Config, exc: BaseException) -> StartupError:
    """The store could not open its PostgreSQL (the DSN's password is never shown)."""
    from gateway.store.postgres_conn import describe_failure, dsn_location

    assert config.storage.dsn is not None
    where = dsn_location(config.storage.dsn.value)
    return StartupError(f"cannot open the store on PostgreSQL {where}: {describe_failure(exc)}")


def check_store_path(path: Path) -> None:
    """Raise StartupError unless the store's directory exists (or can be made) and can be
    written, and the database file, if it exists, can be read and written."""
    where = f"cannot write the store at {path}"
    if path.parent.exists() and not path.parent.is_dir():
        raise StartupError(f"{where}: {os.strerror(errno.ENOTDIR).lower()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"{where}: {reason_of(exc)}") from exc
    if not path.parent.is_dir():
        raise StartupError(f"{where}: {os.strerror(errno.ENOTDIR).lower()}")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise StartupError(f"{where}: {os.strerror(errno.EACCES).lower()}")
    if path.exists() and (path.is_dir() or not os.access(path, os.R_OK | os.W_OK)):
        code = errno.EISDIR if path.is_dir() else errno.EACCES
        raise StartupError(f"{where}: {os.strerror(code).lower()}")


def prepare_sqlite_store(config: Config) -> None:
    """Check the SQLite store's path, then create or migrate its file and switch it to WAL;
    raise StartupError with the reason if that fails."""
    path = Path(config.storage.path)
    check_store_path(path)
    store = make_store(config)
    assert isinstance(store, SqliteStore)
    try:
        store.prepare()
    except sqlite3.Error as exc:
        raise StartupError(f"cannot open the store at {path}: {reason_of(exc)}") from exc


async def serve(
    config: Config,
    *,
    delivery: bool = True,
    on_ready: Callable[[str], None] = lambda url: None,
    stop: asyncio.Event | None = None,
    store: GatewayStore | None = None,
    worker: WorkerSlot | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or `stop` is set), then stop gracefully (module docstring).

    `store` replaces the configured one (tests); `worker` when run by the supervisor. Raises
    StartupError for a start-up problem the operator must fix.
    """
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    installed: list[signal.Signals] = []
    for sig in STOP_SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        await _serve(config, delivery, on_ready, stop, store, worker)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _serve(
    config: Config,
    delivery: bool,
    on_ready: Callable[[str], None],
    stop: asyncio.Event,
    store: GatewayStore | None,
    worker: WorkerSlot | None,
) -> None:
    server = config.server
    store_path = Path(config.storage.path)
    postgres = config.storage.backend == "postgres" and config.storage.dsn is not None
    if not postgres:
        check_store_path(store_path)
    app = create_app(config, run_workers=delivery, store=store)
    shared = worker is not None  # SO_REUSEPORT: the other workers listen on the same ports
    if worker is not None:
        app[WORKER_SLOT] = worker.slot
        if worker.metrics_socket is not None:
            app[UNIX_SOCKET] = worker.metrics_socket
    grace = server.shutdown_grace_seconds
    runner = make_runner(app, access_log=None, shutdown_timeout=grace)
    try:
        await runner.setup()  # opens the store
    except ListenError as exc:  # [metrics] port (gateway/web/metrics.py)
        with contextlib.suppress(Exception):
            await runner.cleanup()
        raise StartupError(str(exc)) from exc
    except (OSError, sqlite3.Error) as exc:
        with contextlib.suppress(Exception):
            await runner.cleanup()
        if postgres:
            raise _postgres_error(config, exc) from exc
        raise StartupError(f"cannot open the store at {store_path}: {reason_of(exc)}") from exc
    except Exception as exc:
        if not postgres:
            raise
        with contextlib.suppress(Exception):
            await runner.cleanup()
        raise _postgres_error(config, exc) from exc
    # The TLS files are read once start-up hooks ran (ACME's may write a placeholder pair).
    try:
        tls = TlsServing.open(config.tls) if config.tls.enabled else None
    except TlsError as exc:
        await runner.cleanup()
        raise StartupError(str(exc)) from exc
    try:
        if tls is None:
            await web.TCPSite(runner, server.host, server.port, reuse_port=shared).start()
        else:
            await tls.start(runner, server.host, server.port, reuse_port=shared)
    except OSError as exc:
        if tls is not None:
            await tls.stop()
        await runner.cleanup()
        where = f"{server.host}:{server.port}"
        if tls is not None and config.tls.http_port:
            where += f" (https) or {server.host}:{config.tls.http_port} (http)"
        raise StartupError(f"cannot listen on {where}: {reason_of(exc)}") from exc
    ports = [a[1] for a in runner.addresses if isinstance(a, tuple)]
    scheme = "https" if tls is not None else "http"
    # port 0: the real one
    on_ready(f"{scheme}://{server.host}:{ports[0] if ports else server.port}")
    if tls is not None and config.tls.http_port:
        log.info("plain http port %d redirects to https", config.tls.http_port)
    try:
        await stop.wait()
        log.info("stopping: finishing in-flight work", extra={"status": "stopping"})
    finally:
        started = loop_time()
        app[RUNTIME].begin_stop(started + grace)
        if tls is not None:
            await tls.stop()
        await runner.cleanup()
        log.info("stopped in %.1fs", loop_time() - started, extra={"status": "stopped"})


def loop_time() -> float:
    """The running loop's monotonic clock."""
    return asyncio.get_running_loop().time()
