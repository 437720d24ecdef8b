"""Fixtures of the store tests: the SQLite writer modes and two PostgreSQL stores on one database.

The test files that use them import them (`from store_fixtures import writer_mode`; pytest knows
them by their `name`). Not a conftest.py: pytest would then replace the `conftest` module that
tests elsewhere import helpers from (tests/conftest.py) with this one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from store_backends import WRITERS, Pair, make


@pytest.fixture(params=WRITERS, name="writer")
def writer_mode(request: pytest.FixtureRequest) -> str:
    """Each SQLite writer mode in turn: a test using it runs once per mode."""
    mode: str = request.param
    return mode


@pytest.fixture(name="two")
async def two_stores(pg_dsn: str) -> AsyncIterator[Pair]:
    """Two opened stores on the test's database: two gateway processes sharing it."""
    stores = (make(pg_dsn), make(pg_dsn))
    for store in stores:
        await store.open()
    try:
        yield stores
    finally:
        for store in stores:
            await store.close()
