"""A throwaway PostgreSQL for the tests: one server per pytest session, one database per test.

`pg_server` (session scope) runs Debian's ``initdb`` and ``postgres`` (found under
``/usr/lib/postgresql/<version>/bin``, else on PATH) in a temporary directory: TCP on a free
127.0.0.1 port, the unix socket inside that directory, no durability (``fsync``,
``synchronous_commit`` and ``full_page_writes`` off: a test server loses nothing it needs to
keep). PostgreSQL refuses to run as root, and the tests run as root here and in CI, so as root
both programs run as the ``postgres`` user the Debian package creates (the directory is handed
to it). The server is stopped and its directory deleted at the end of the session, however the
session ends.

`pg_dsn` (function scope) creates a fresh database from ``template0`` for one test and returns
its DSN; the database is dropped after the test.

Locally a missing PostgreSQL skips the tests that need it; under CI (``CI`` set) it fails them
(`tests/binaries.py` conventions): ``.ci/run`` installs the ``postgresql`` package.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

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


def require_postgres() -> Path:
    """Return the bin directory, else skip (locally) or fail (CI) the calling test."""
    bin_dir = find_bin_dir()
    if bin_dir is not None:
        return bin_dir
    reason = f"PostgreSQL is not installed (apt-get install {PACKAGE}; .ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


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

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"


class _Cluster:
    """One data directory and its postgres process."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
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
        }
        args = [str(self.bin_dir / "postgres"), "-D", str(self.data)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                args, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, **self._as
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


@contextlib.contextmanager
def running_server(bin_dir: Path) -> Iterator[PgServer]:
    """Start a server (retrying on a port taken meanwhile); stop it and delete it on exit."""
    cluster = _Cluster(bin_dir)
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
        yield PgServer("127.0.0.1", port, cluster.root, "postgres")
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL for the whole session, started on first use."""
    bin_dir = require_postgres()
    with running_server(bin_dir) as server:
        yield server


_databases = itertools.count(1)


@pytest.fixture
async def pg_dsn(pg_server: PgServer) -> AsyncIterator[str]:
    """A DSN of a fresh, empty database for this test (dropped afterwards)."""
    name = f"t{os.getpid()}_{next(_databases)}"
    admin = await asyncpg.connect(pg_server.dsn())
    try:
        # FILE_COPY (PostgreSQL 15+) copies the template's files instead of logging every page.
        strategy = " STRATEGY FILE_COPY" if admin.get_server_version().major >= 15 else ""
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE template0{strategy}")
    finally:
        await admin.close()
    try:
        yield pg_server.dsn(name)
    finally:
        admin = await asyncpg.connect(pg_server.dsn())
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()


class CuttableProxy:
    """A TCP relay to PostgreSQL that a test can cut (every connection closed, new ones
    refused: the database is unreachable), freeze (bytes stop flowing, nothing is closed: a
    database that stopped answering) and restore (`start` again, `thaw`)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server: asyncio.Server | None = None
        self.port = 0
        self.links: set[asyncio.StreamWriter] = set()
        self.flowing = asyncio.Event()
        self.flowing.set()

    def freeze(self) -> None:
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        for writer in list(self.links):
            writer.transport.abort()
        self.links.clear()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.links |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    await self.flowing.wait()
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
