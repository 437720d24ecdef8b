"""SQLite databases a test builds beside the store: a file as an older gateway left it, an
in-memory database at the current schema, and the plan SQLite reads a statement by."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import gateway.store.sqlite_schema as sqlite_module


@contextmanager
def file_at_version(path: Path, version: int) -> Iterator[sqlite3.Connection]:
    """Create `path` as a gateway of schema `version` left it (WAL mode, the base schema and the
    migrations before `version`) and yield a connection for the block to add its rows; the file
    is stamped `version` when the block ends."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        scripts = (
            sqlite_module._BASE_SCHEMA,
            *(sqlite_module._MIGRATIONS[v] for v in range(1, version)),
        )
        for script in scripts:
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
        yield conn
        conn.execute(f"PRAGMA user_version = {version}")


def pending_purchase(conn: sqlite3.Connection, event_id: str, event_time: float, at: float) -> None:
    """Add event row 1, a Purchase `event_id` stored `at`, and its delivery to "shop:meta",
    pending since `at`."""
    conn.execute(
        "INSERT INTO events(id, site, event_name, event_id, event_time, record, created_at)"
        " VALUES (1, 'shop', 'Purchase', ?, ?, x'7b7d', ?)",
        (event_id, event_time, at),
    )
    conn.execute(
        "INSERT INTO deliveries(event_ref, route, state, attempts, not_before, updated_at)"
        " VALUES (1, 'shop:meta', 'pending', 0, 0, ?)",
        (at,),
    )


def migrated_memory() -> sqlite3.Connection:
    """A connection (autocommit) to a new in-memory database at the current schema."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    sqlite_module._migrate(conn)
    return conn


def query_plan(conn: sqlite3.Connection, sql: str, params: Any = ()) -> str:
    """The details of SQLite's plan for `sql` (EXPLAIN QUERY PLAN), joined by spaces."""
    return " ".join(str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
