"""What the SQLite store's mixins plug into: `SqliteHost`, the part of the store they use.

The mixins (gateway/store/sqlite_{profiles,dead,orders,stats,pauses}.py) are base classes of
`gateway.store.sqlite.SqliteStore`, as the PostgreSQL store's are of `PostgresStore`; their
methods are typed against `SqliteHost`: its writer and reader (gateway/store/sqlite_writer.py),
its append (gateway/store/sqlite.py) and the settings an append reads.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from gateway.core.orders import OrderEntry
from gateway.store.availability import Availability
from gateway.store.base import AppendResult, NewEvent
from gateway.store.sqlite_workers import _LoopWorker, _Worker

T = TypeVar("T")


class SqliteHost(Protocol):
    """The part of `SqliteStore` its mixins use."""

    availability: Availability
    dedup_seconds: float
    merge_seconds: float
    _sweep_debt: int
    _writer: _Worker | _LoopWorker

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def append(self, events: Sequence[NewEvent], now: float) -> list[AppendResult]: ...

    async def _append(
        self, batch: tuple[NewEvent, ...], orders: tuple[OrderEntry, ...], now: float
    ) -> list[AppendResult]: ...
