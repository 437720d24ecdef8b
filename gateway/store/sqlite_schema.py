"""The SQLite store's schema: the version-1 tables, every migration after them, `_migrate`.

A file's version is ``PRAGMA user_version``. A new file gets `_BASE_SCHEMA` (version 1) and
then every step of `_MIGRATIONS` in order, an older file the steps it lacks, all in one
``BEGIN IMMEDIATE`` transaction (another process opening the same file waits for it); a file
newer than `SCHEMA_VERSION` is refused. The tables of each idea are defined next to its
transactions (gateway/store/sqlite_{profiles,dedup,dead,orders,stats,pauses}.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Final

from gateway.store.sqlite_dead import DEAD_SCHEMA
from gateway.store.sqlite_dedup import DEDUP_GROUP_SCHEMA
from gateway.store.sqlite_orders import LEDGER_SCHEMA, LEDGER_V8_SCHEMA
from gateway.store.sqlite_pauses import PAUSES_SCHEMA
from gateway.store.sqlite_profiles import LINKS_SCHEMA, PROFILE_SCHEMA
from gateway.store.sqlite_stats import PAIRS_BOOKED_SCHEMA, STATS_SCHEMA

SCHEMA_VERSION: Final = 13
"""Stored in ``PRAGMA user_version``; a newer file is refused, an older one migrated."""

_BASE_SCHEMA: Final = """
CREATE TABLE events(
    id          INTEGER PRIMARY KEY,
    site        TEXT NOT NULL,
    event_name  TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    event_time  REAL NOT NULL,
    record      BLOB NOT NULL,
    created_at  REAL NOT NULL
);
CREATE TABLE deliveries(
    id          INTEGER PRIMARY KEY,
    event_ref   INTEGER NOT NULL REFERENCES events(id),
    route       TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    not_before  REAL NOT NULL DEFAULT 0,
    lease_until REAL,
    reason      TEXT,
    updated_at  REAL NOT NULL
);
CREATE INDEX deliveries_due ON deliveries(route, state, not_before);
CREATE INDEX deliveries_event ON deliveries(event_ref);
CREATE TABLE dedup(
    route       TEXT NOT NULL,
    event_name  TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    first_seen  REAL NOT NULL,
    PRIMARY KEY(route, event_name, event_id)
) WITHOUT ROWID;
CREATE INDEX dedup_first_seen ON dedup(first_seen);
CREATE TABLE compacted_counts(
    route       TEXT NOT NULL,
    state       TEXT NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY(route, state)
) WITHOUT ROWID;
CREATE TABLE heartbeat(
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    at          REAL NOT NULL
);
"""
"""Schema version 1; a new file gets it and then every migration in order."""

_MERGE_SCHEMA: Final = """
CREATE INDEX IF NOT EXISTS events_key ON events(event_id, event_name);
CREATE TABLE IF NOT EXISTS dedup_counts(
    route       TEXT NOT NULL,
    pair        TEXT NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY(route, pair)
) WITHOUT ROWID;
"""

_DEDUP_REF_SCHEMA: Final = """
ALTER TABLE dedup ADD COLUMN event_ref INTEGER;
DROP INDEX IF EXISTS events_key;
"""
"""Version 4: a dedup key points at the event that claimed it, so the merge of a duplicate
finds its original through the dedup primary key; the events_key index (one random b-tree page
written per appended event) goes."""

_DEDUP_SWEEP_SCHEMA: Final = """
DROP INDEX IF EXISTS dedup_first_seen;
"""
"""Version 5: expired dedup keys are found by a sweep along the primary key (`_sweep_tx`)
instead of an index on first_seen, which cost a second b-tree insert per claimed key."""

_MIGRATIONS: Final[Mapping[int, str]] = {
    1: PROFILE_SCHEMA,
    2: _MERGE_SCHEMA,
    3: _DEDUP_REF_SCHEMA,
    4: _DEDUP_SWEEP_SCHEMA,
    5: LINKS_SCHEMA,
    6: DEAD_SCHEMA,
    7: LEDGER_V8_SCHEMA,
    8: STATS_SCHEMA,
    9: LEDGER_SCHEMA,
    10: DEDUP_GROUP_SCHEMA,
    11: PAIRS_BOOKED_SCHEMA,
    12: PAUSES_SCHEMA,
}
"""``{from_version: script}`` upgrading a file from ``from_version`` to ``from_version + 1``."""


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {version} is newer than this gateway's {SCHEMA_VERSION}"
            )
        if version == 0:
            for statement in _BASE_SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            version = 1
        for step in range(version, SCHEMA_VERSION):
            for statement in _MIGRATIONS[step].split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
