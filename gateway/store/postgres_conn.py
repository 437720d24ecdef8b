"""Typed edges of asyncpg (which ships no type information) for the PostgreSQL store.

`Conn` and `Record` name the few asyncpg methods the store calls, with the types it relies on;
`PgPool` owns one `asyncpg.Pool` and hands out connections typed as `Conn`. Every other module
of the PostgreSQL store imports these, never asyncpg's own names, so mypy --strict checks them.
"""

from __future__ import annotations

import asyncio
import contextlib
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

    async def execute(self, query: str, *args: object) -> str:
        """Run a statement; return its status tag ("UPDATE 3")."""

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


async def _keep_session(conn: Any) -> None:
    """Connections go back to the pool as they are (the store leaves no session state behind):
    asyncpg's default reset would cost a round trip on every release."""


class PgPool:
    """An asyncpg pool whose connections are handed out as `Conn`."""

    def __init__(self, dsn: str, *, min_size: int, max_size: int) -> None:
        self._dsn = dsn
        self.min_size = min_size
        self.max_size = max_size
        self._pool: Any = None

    async def open(self) -> None:
        # The DSN carries the password: asyncpg's own errors do not repeat it, and neither
        # does this module (it never formats the DSN into a message).
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=self.min_size,
            max_size=self.max_size,
            reset=_keep_session,
            # A pooled connection lives as long as the store: statements stay prepared.
            max_inactive_connection_lifetime=0,
        )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Conn]:
        """A pooled connection, outside any transaction (each statement commits by itself)."""
        if self._pool is None:
            raise RuntimeError("the PostgreSQL pool is not open")
        async with self._pool.acquire() as conn:
            try:
                yield cast(Conn, conn)
            except BaseException as exc:
                if connection_error(exc) or isinstance(exc, asyncio.CancelledError):
                    # Never hand a broken connection (or one left mid-statement) out again:
                    # the pool opens a fresh one in its place.
                    conn.terminate()
                raise

    @contextlib.asynccontextmanager
    async def tx(self) -> AsyncIterator[Conn]:
        """A pooled connection inside one transaction: committed on exit, rolled back on error."""
        async with self.acquire() as conn, conn.transaction():
            yield conn
