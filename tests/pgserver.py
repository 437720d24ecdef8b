"""A throwaway PostgreSQL for the tests: one server per pytest session, one database per test.

`pg_server` (session scope) runs Debian's ``initdb`` and ``postgres`` (found under
``/usr/lib/postgresql/<version>/bin``, else on PATH) in a temporary directory through
tests/pgcluster.py (shared with bench/scale.py): TCP on a free 127.0.0.1 port, the unix socket
inside that directory, no durability (``fsync``, ``synchronous_commit`` and
``full_page_writes`` off: a test server loses nothing it needs to keep), run as user
``postgres`` when the tests run as root. The server is stopped and its directory deleted at the
end of the session, however the session ends.

`pg_dsn` (function scope) creates a fresh database from ``template0`` for one test and returns
its DSN; the database is dropped after the test.

Locally a missing PostgreSQL skips the tests that need it; under CI (``CI`` set) it fails them
(`tests/binaries.py` conventions): ``.ci/run`` installs the ``postgresql`` package.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pgcluster import PgServer, create_database, drop_database, find_bin_dir, running_server

PACKAGE = "postgresql"


def require_postgres() -> Path:
    """Return the bin directory, else skip (locally) or fail (CI) the calling test."""
    bin_dir = find_bin_dir()
    if bin_dir is not None:
        return bin_dir
    reason = f"PostgreSQL is not installed (apt-get install {PACKAGE}; .ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


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
    dsn = await create_database(pg_server, name)
    try:
        yield dsn
    finally:
        await drop_database(pg_server, name)


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
