"""What the PostgreSQL store's mixins share: the host they plug into, and conflict retries.

The mixins (gateway/store/postgres_{profiles,dead,orders,stats,pauses}.py) are base classes of
`gateway.store.postgres.PostgresStore`; their methods are typed against `PgHost`, the part of
the store they use (its pool, its transactions, its group-committed append).

Two replicas (or workers) writing the same rows in different orders can deadlock; PostgreSQL
then aborts one transaction with ``deadlock_detected`` (40P01), and a serializable one may get
``serialization_failure`` (40001). Both mean "nothing of this transaction happened, run it
again", so `retrying` runs the whole transaction function again, a bounded number of times
with a short growing pause. Functions run there must be repeatable: they read what they need
inside the transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Final, Protocol, TypeVar

from gateway.core.orders import OrderEntry
from gateway.store.base import AppendResult, NewEvent
from gateway.store.postgres_conn import Conn, PgError, PgPool

T = TypeVar("T")

log = logging.getLogger(__name__)

Prepare = Callable[[Conn], Awaitable[Sequence[NewEvent]]]
Finish = Callable[[Conn, frozenset[tuple[str, str, str]]], Awaitable[None]]

RETRYABLE: Final = frozenset({"40001", "40P01"})
"""SQLSTATEs after which the transaction as a whole can simply run again."""

ATTEMPTS: Final = 5
PAUSE: Final = 0.01
"""Seconds before the second attempt; doubled before each further one."""


class PgHost(Protocol):
    """The part of `PostgresStore` its mixins use."""

    @property
    def _pool(self) -> PgPool: ...

    def _tx(self) -> AbstractAsyncContextManager[Conn]: ...

    async def _append_job(
        self,
        events: tuple[NewEvent, ...],
        now: float,
        *,
        prepare: Prepare | None = None,
        finish: Finish | None = None,
        orders: tuple[OrderEntry, ...] = (),
    ) -> list[AppendResult]: ...


def is_retryable(exc: BaseException) -> bool:
    """Whether PostgreSQL aborted the transaction to resolve a conflict."""
    return isinstance(exc, PgError) and getattr(exc, "sqlstate", None) in RETRYABLE


async def again(run: Callable[[], Awaitable[T]], *, attempts: int = ATTEMPTS) -> T:
    """Await `run()`; await it again when PostgreSQL aborted its transaction for a deadlock or
    a serialization failure (nothing of it was committed), at most `attempts` times in all."""
    pause = PAUSE
    for attempt in range(1, attempts + 1):
        try:
            return await run()
        except PgError as exc:
            if attempt == attempts or not is_retryable(exc):
                raise
            log.debug("PostgreSQL aborted a transaction (%s): running it again", exc.sqlstate)
        await asyncio.sleep(pause)
        pause *= 2
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


async def retrying(
    tx: Callable[[], AbstractAsyncContextManager[Conn]],
    fn: Callable[[Conn], Awaitable[T]],
    *,
    attempts: int = ATTEMPTS,
) -> T:
    """Run `fn(conn)` inside `tx()`, in a new transaction each time `again` runs it again."""

    async def once() -> T:
        async with tx() as conn:
            return await fn(conn)

    return await again(once, attempts=attempts)
