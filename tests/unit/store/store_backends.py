"""The stores under test, built one way for every test file: a PostgresStore on a test database
(`make`, `Pair`), and the mixins that give a contract suite its `make_store` on each backend
(`OnPostgres`, `OnSqlite`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore

WRITERS = ("loop", "thread")
"""Both writer modes keep the whole contract: jobs on the event loop's thread, or on their own."""

Pair = tuple[PostgresStore, PostgresStore]
"""Two stores on one database: two gateway processes (replicas) sharing it."""


def make(dsn: str) -> PostgresStore:
    return PostgresStore(dsn, pool_min=1, pool_max=4)


class OnPostgres:
    """Runs a contract suite on PostgreSQL: stores on the test's database (tests/pgserver.py)."""

    @pytest.fixture
    def make_store(self, pg_dsn: str) -> Callable[[], PostgresStore]:
        return lambda: make(pg_dsn)


class OnSqlite:
    """Runs a contract suite on SQLite, once per writer mode (the `writer` fixture)."""

    file = "outbox.db"
    """The stores' file, under the test's tmp_path."""

    @pytest.fixture(params=WRITERS)
    def writer(self, request: pytest.FixtureRequest) -> str:
        """Each SQLite writer mode in turn: every test of the suite runs once per mode."""
        mode: str = request.param
        return mode

    @pytest.fixture
    def make_store(self, tmp_path: Path, writer: str) -> Callable[[], SqliteStore]:
        path = tmp_path / self.file
        return lambda: SqliteStore(path, writer=writer)
