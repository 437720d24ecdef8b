"""Typed edges of asyncpg (which ships no type information) for the PostgreSQL store.

`Conn` and `Record` name the few asyncpg methods the store calls, with the types it relies on;
`PgPool` owns one `asyncpg.Pool` and hands out connections typed as `Conn`. Every other module
of the PostgreSQL store imports these, never asyncpg's own names, so mypy --strict checks them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import urllib.parse
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Final, Protocol, cast

import asyncpg  # untyped (no stubs, no py.typed): wrapped by the Protocols below

__all__ = [
    "Conn",
    "PgError",
    "PgPool",
    "Record",
    "connection_error",
    "status_count",
    "unavailable_reason",
]

PgError = asyncpg.PostgresError
"""Any error the server answered with."""


class Record(Protocol):
    """One result row: by position or by column name."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def __len__(self) -> int: ...


class Conn(Protocol):
    """The asyncpg connection methods the store uses."""

    async def execute(
        self,
        query: str,
        *args: object,
        timeout: float | None = None,  # noqa: ASYNC109 - asyncpg's own per-statement limit
    ) -> str:
        """Run a statement; return its status tag ("UPDATE 3"). `timeout` replaces the
        connection's statement timeout (None: keep it)."""

    async def executemany(self, command: str, args: Iterable[Sequence[object]]) -> None: ...

    async def fetch(self, query: str, *args: object) -> list[Record]:
        """Run a query; return every row."""

    async def fetchrow(self, query: str, *args: object) -> Record | None: ...

    async def fetchval(self, query: str, *args: object, column: int = 0) -> Any: ...

    def transaction(
        self, *, isolation: str | None = None, readonly: bool = False, deferrable: bool = False
    ) -> contextlib.AbstractAsyncContextManager[Any]: ...

    def is_in_transaction(self) -> bool: ...


def status_count(status: str) -> int:
    """The row count of a status tag such as "UPDATE 3" or "INSERT 0 5" (0 if none)."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def connection_error(exc: BaseException) -> bool:
    """Whether `exc` means the server could not be reached (rather than a refused statement)."""
    return isinstance(
        exc,
        OSError
        | asyncpg.exceptions.ConnectionDoesNotExistError
        | asyncpg.exceptions.PostgresConnectionError
        | asyncpg.exceptions.CannotConnectNowError
        | asyncpg.exceptions.AdminShutdownError
        | asyncpg.exceptions.InterfaceError
        # the protocol lost track of a connection the server closed under it
        | asyncpg.exceptions.InternalClientError,
    )


_UNAVAILABLE: Final = {
    "53100": "disk full",
    "53200": "out of memory",
    "53300": "too many connections",
    "25006": "read-only",
    "57P01": "database shutting down",
    "57P02": "database shutting down",
    "57P03": "database starting up",
    "08000": "database unreachable",
    "08003": "database unreachable",
    "08006": "database unreachable",
    "3D000": "database does not exist",
    "28000": "authentication failed",
    "28P01": "authentication failed",
}
"""SQLSTATEs meaning the database cannot take writes right now (not a refused statement)."""


def unavailable_reason(exc: BaseException) -> str | None:
    """A short, fixed reason if `exc` means the database cannot write now, else None."""
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate in _UNAVAILABLE:
        return _UNAVAILABLE[sqlstate]
    if connection_error(exc) or isinstance(exc, TimeoutError):
        return "database unreachable"
    return None


def dsn_location(dsn: str) -> str:
    """``host:port/database`` of a DSN, for messages: no user name, no password."""
    try:
        url = urllib.parse.urlsplit(dsn)
        host = url.hostname or "localhost"
        port = url.port or 5432
    except ValueError:
        return "(unparsable DSN)"
    return f"{host}:{port}{url.path or '/'}"


def describe_failure(exc: BaseException) -> str:
    """A short reason an operator can act on, without values from the DSN."""
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(exc, PgError) and isinstance(sqlstate, str):
        first = str(exc).split("\n", 1)[0]  # the server's message names users and databases
        return f"{first} (SQLSTATE {sqlstate})"
    if isinstance(exc, socket.gaierror):
        return "cannot resolve the host name"
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno).lower()
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, RuntimeError | ValueError) and str(exc):
        return str(exc).split("\n", 1)[0]  # e.g. SchemaTooNewError; asyncpg's DSN errors
    return type(exc).__name__


CONNECT_TIMEOUT: Final = 10.0
"""Seconds to open a connection (TCP, TLS, authentication) before giving up."""

STATEMENT_TIMEOUT: Final = 30.0
"""Seconds a statement may take before the client gives up on it (a database that stopped
answering without closing the connection: the request fails with 503 instead of hanging)."""


SESSION_SETTINGS: Final = {"jit": "off"}
"""Set on every connection of the store. JIT compilation pays for itself on long analytical
queries only; the store runs short statements whose estimated cost still passes the JIT
thresholds once a group commit holds a few thousand rows (the planner multiplies the row
estimates of the claim's joined CTEs): PostgreSQL then spent ~1 s compiling a 5,000-event
append that runs in ~100 ms (bench/scale.py, 100-event requests)."""


class PgPool:
    """A small pool of asyncpg connections, handed out as `Conn`.

    asyncpg's own `Pool` guards every acquire and release with timeouts, a shielded task and a
    reset round trip; measured here that cost ~50 us of CPU per use, more than the statement a
    lone append runs. This one is a list of idle connections: `acquire` pops one (or connects
    a new one while fewer than `max_size` exist, else waits for a release), release pushes it
    back. The store leaves no session state behind (no SET, LISTEN or open transaction), so a
    connection needs no reset. A connection that broke under a statement (or whose statement
    was cancelled half-way) is terminated and replaced on demand.
    """

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int,
        max_size: int,
        connect_timeout: float = CONNECT_TIMEOUT,
        statement_timeout: float = STATEMENT_TIMEOUT,
    ) -> None:
        self._dsn = dsn  # carries the password: never formatted into a message or log line
        self.min_size = min_size
        self.max_size = max_size
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self._idle: list[Any] = []
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._size = 0
        """Connections open or being opened (idle and in use)."""
        self._open = False

    async def open(self) -> None:
        self._open = True
        opened = await asyncio.gather(
            *(self._connect() for _ in range(self.min_size)), return_exceptions=True
        )
        self._idle.extend(c for c in opened if not isinstance(c, BaseException))
        failed = [c for c in opened if isinstance(c, BaseException)]
        if failed:
            await self.close()
            raise failed[0]

    async def _connect(self) -> Any:
        self._size += 1
        try:
            return await asyncpg.connect(
                self._dsn,
                timeout=self.connect_timeout,
                command_timeout=self.statement_timeout,
                server_settings=SESSION_SETTINGS,
            )
        except BaseException:
            self._size -= 1
            raise

    async def close(self) -> None:
        """Close the idle connections; those in use are closed when they come back."""
        self._open = False
        idle, self._idle = self._idle, []
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(RuntimeError("the PostgreSQL pool is closed"))
        self._waiters.clear()
        for conn in idle:
            self._size -= 1
            try:
                await conn.close(timeout=5)
            except Exception:  # a broken connection: just drop it
                conn.terminate()

    async def _take(self) -> Any:
        if not self._open:
            raise RuntimeError("the PostgreSQL pool is not open")
        while self._idle:
            conn = self._idle.pop()
            if not conn.is_closed():
                return conn
            self._size -= 1  # the server closed it while idle
        if self._size < self.max_size:
            return await self._connect()
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            conn = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                if waiter.result() is not None:
                    self._give_back(waiter.result())  # handed over just as we were cancelled
                else:
                    self._hand_over(None)  # a slot freed for us: pass it on
            raise
        return conn if conn is not None else await self._connect()

    def _give_back(self, conn: Any) -> None:
        if conn.is_closed() or conn.is_in_transaction():
            conn.terminate()
            self._size -= 1
            if self._open:
                self._hand_over(None)  # a waiter opens a fresh connection in its place
            return
        if not self._open:
            self._size -= 1
            conn.terminate()
            return
        if not self._hand_over(conn):
            self._idle.append(conn)

    def _hand_over(self, conn: Any) -> bool:
        """Wake the first waiter still waiting with `conn` (None: "open one"); False if none."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Conn]:
        """A pooled connection, outside any transaction (each statement commits by itself)."""
        conn = await self._take()
        try:
            yield cast(Conn, conn)
        except BaseException as exc:
            if connection_error(exc) or isinstance(exc, asyncio.CancelledError | TimeoutError):
                # Never hand a broken connection (or one left mid-statement) out again.
                conn.terminate()
            raise
        finally:
            self._give_back(conn)

    @contextlib.asynccontextmanager
    async def tx(self) -> AsyncIterator[Conn]:
        """A pooled connection inside one transaction: committed on exit, rolled back on error."""
        async with self.acquire() as conn, conn.transaction():
            yield conn
