"""A throwaway PostgreSQL server: Debian's ``initdb`` + ``postgres`` in a temporary directory.

Shared by the tests (tests/pgserver.py: the pytest fixtures on top of it) and the benchmarks
(bench/scale.py adds this directory to ``sys.path``), so it imports nothing from pytest.

`running_server` initialises a cluster in a fresh directory, starts it on a free 127.0.0.1 port
(the unix socket inside that directory) and yields a `PgServer`; on exit the server is stopped
and the directory deleted, however the block ends. The default settings give up durability
(``fsync``, ``synchronous_commit`` and ``full_page_writes`` off: a test server loses nothing it
needs to keep); `settings` overrides any of them (the benchmark runs with durable commits).
PostgreSQL refuses to run as root, and the tests run as root here and in CI, so as root both
programs run as the ``postgres`` user the Debian package creates (the directory is handed to
it).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

PACKAGE = "postgresql"
START_TIMEOUT = 60.0
"""Seconds the server gets to accept connections (a busy 2-core CI VM)."""
STOP_TIMEOUT = 30.0


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``: Debian's newest version, else PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb and shutil.which("postgres", path=str(Path(initdb).parent)):
        return Path(initdb).parent
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class PgServer:
    """A running test server."""

    host: str
    port: int
    socket_dir: Path
    user: str
    pid: int = 0
    """The postmaster's process id (its children are the server's other processes)."""

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"


class _Cluster:
    """One data directory and its postgres process."""

    def __init__(
        self, bin_dir: Path, settings: Mapping[str, str] | None = None, cpu: int | None = None
    ) -> None:
        self.bin_dir = bin_dir
        self.overrides = dict(settings or {})
        self.cpu = cpu
        # As root the server runs as user postgres, which must reach the directory: /tmp,
        # whatever TMPDIR says (a root-only TMPDIR such as /root/tmp would be out of its reach).
        base = "/tmp" if os.geteuid() == 0 else None
        self.root = Path(tempfile.mkdtemp(prefix="signalgate-pg-", dir=base))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            # initdb and postgres refuse root: run both as the Debian package's user. Popen's
            # user/group switch in the child (a plain fork + setuid, no PAM session between us
            # and postgres), so the signal that stops the server reaches postgres itself.
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        self.root.chmod(0o700)

    def initdb(self) -> None:
        subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            cwd=self.root,
            check=True,
            capture_output=True,
            timeout=120,
            **self._as,
        )

    def start(self, port: int) -> None:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": str(self.root),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "64MB",
            "log_min_messages": "warning",
            **self.overrides,
        }
        args = [str(self.bin_dir / "postgres"), "-D", str(self.data)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                args,
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_pin(self.cpu),
                **self._as,
            )

    def wait_ready(self, port: int) -> bool:
        """True once the server accepts connections; False if it exited first."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            ready = subprocess.run(
                [
                    str(self.bin_dir / "pg_isready"),
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                ],
                check=False,
                timeout=30,
            )
            if ready.returncode == 0:
                return True
            time.sleep(0.1)
        raise TimeoutError(f"PostgreSQL did not start within {START_TIMEOUT:.0f}s: {self.tail()}")

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-2000:]
        return ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # "fast" shutdown: clients disconnected, no wait
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)
        shutil.rmtree(self.root, ignore_errors=True)


def _pin(cpu: int | None) -> Callable[[], None] | None:
    """A preexec_fn keeping the server (and every process it forks) on core `cpu`."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


@contextlib.contextmanager
def running_server(
    bin_dir: Path, settings: Mapping[str, str] | None = None, cpu: int | None = None
) -> Iterator[PgServer]:
    """Start a server (retrying on a port taken meanwhile) with `settings` over the defaults,
    pinned to core `cpu` if given; stop it and delete it on exit."""
    cluster = _Cluster(bin_dir, settings, cpu)
    try:
        cluster.initdb()
        for _attempt in range(5):
            port = free_port()
            cluster.start(port)
            if cluster.wait_ready(port):
                break
            cluster.process = None  # it exited (most likely: the port was taken meanwhile)
        else:
            raise RuntimeError(f"PostgreSQL would not start: {cluster.tail()}")
        assert cluster.process is not None
        yield PgServer("127.0.0.1", port, cluster.root, "postgres", cluster.process.pid)
    finally:
        cluster.stop()


async def create_database(server: PgServer, name: str) -> str:
    """Create the empty database `name` (a plain identifier) on `server`; return its DSN."""
    admin = await asyncpg.connect(server.dsn())
    try:
        # FILE_COPY (PostgreSQL 15+) copies the template's files instead of logging every page.
        strategy = " STRATEGY FILE_COPY" if admin.get_server_version().major >= 15 else ""
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE template0{strategy}")
    finally:
        await admin.close()
    return server.dsn(name)


async def drop_database(server: PgServer, name: str) -> None:
    """Drop the database `name`, disconnecting whoever is still connected to it."""
    admin = await asyncpg.connect(server.dsn())
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()
