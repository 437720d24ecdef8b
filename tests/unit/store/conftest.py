"""Fixtures of the store tests: the SQLite writer modes and two PostgreSQL stores on one
database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from store_backends import Pair, make

WRITERS = ("loop", "thread")
"""Both writer modes keep the whole contract: jobs on the event loop's thread, or on their own."""


@pytest.fixture(params=WRITERS)
def writer(request: pytest.FixtureRequest) -> str:
    """Each SQLite writer mode in turn: a test using it runs once per mode."""
    mode: str = request.param
    return mode


@pytest.fixture
async def two(pg_dsn: str) -> AsyncIterator[Pair]:
    """Two opened stores on the test's database: two gateway processes sharing it."""
    stores = (make(pg_dsn), make(pg_dsn))
    for store in stores:
        await store.open()
    try:
        yield stores
    finally:
        for store in stores:
            await store.close()
