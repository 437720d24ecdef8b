"""The PostgreSQL store's schema: an append-only list of migrations, applied on `open`.

Migration ``MIGRATIONS[i]`` brings a database from schema version ``i`` to ``i + 1``; table
``schema_version`` holds the versions applied. `migrate` runs on every `PostgresStore.open`, in
one transaction holding a transaction-scoped advisory lock: N replicas starting together wait
for each other, the first applies what is missing and the others find nothing left to do. A
database newer than this gateway is refused (an older gateway must not write to a schema it
does not know). New tables and columns go in NEW entries at the END of the tuple; an entry that
shipped is never edited. Each entry is one script of several statements (run with the simple
query protocol, so no parameters) and is written to be idempotent (``IF NOT EXISTS``).

Version 1, the outbox (gateway/store/postgres.py documents how each table is used):

* ``events``: one row per accepted event that won at least one dedup key; its id comes from a
  sequence (``events_id_seq``) that the append statement draws from for every event it sees.
* ``deliveries``: one row per event and destination route, the outbox state machine of
  gateway/store/base.py. ``not_before`` is the time key of the row's state (0 for pending, the
  retry time, the lease's end, the time it became done / dead), so the one index
  ``(route, state, not_before, id)`` serves the lease, the dead-letter listing and compaction.
* ``dedup``: one row per (route, event_name, event_id) seen within the dedup window, naming the
  event that claimed it (``event_ref``), which is where a duplicate is merged.
* ``compacted_counts`` / ``dedup_counts``: counters that outlive compaction.
* ``heartbeat``: the one row `ping` writes.

Times are epoch seconds (``double precision``), as everywhere in the gateway.
"""

from __future__ import annotations

from typing import Final

from gateway.store.postgres_conn import Conn
from gateway.store.postgres_dead import DEAD_SCHEMA
from gateway.store.postgres_orders import ORDERS_SCHEMA
from gateway.store.postgres_pauses import PAUSES_SCHEMA
from gateway.store.postgres_profiles import PROFILE_SCHEMA
from gateway.store.postgres_stats import PAIRS_BOOKED_SCHEMA, STATS_SCHEMA

__all__ = ["LOCK_KEY", "MIGRATIONS", "MIGRATION_TIMEOUT", "SchemaTooNewError", "migrate"]

LOCK_KEY: Final = 0x5167_6174_6531
"""`pg_advisory_xact_lock` key of the migration ("Sgate1"): any constant, the same everywhere."""

MIGRATION_TIMEOUT: Final = 3600.0
"""Seconds one migration script may run (the pool's statement timeout is far shorter)."""

_OUTBOX: Final = """
CREATE SEQUENCE IF NOT EXISTS events_id_seq;
CREATE TABLE IF NOT EXISTS events(
    id          bigint PRIMARY KEY,
    site        text NOT NULL,
    event_name  text NOT NULL,
    event_id    text NOT NULL,
    event_time  double precision NOT NULL,
    record      bytea NOT NULL,
    created_at  double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries(
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_ref   bigint NOT NULL,
    route       text NOT NULL,
    state       text NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    not_before  double precision NOT NULL DEFAULT 0,
    lease_until double precision,
    reason      text,
    updated_at  double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(route, state, not_before, id);
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries(event_ref);
CREATE TABLE IF NOT EXISTS dedup(
    route       text NOT NULL,
    event_name  text NOT NULL,
    event_id    text NOT NULL,
    first_seen  double precision NOT NULL,
    event_ref   bigint NOT NULL,
    PRIMARY KEY(route, event_name, event_id)
);
CREATE TABLE IF NOT EXISTS compacted_counts(
    route       text NOT NULL,
    state       text NOT NULL,
    n           bigint NOT NULL,
    PRIMARY KEY(route, state)
);
CREATE TABLE IF NOT EXISTS dedup_counts(
    route       text NOT NULL,
    pair        text NOT NULL,
    n           bigint NOT NULL,
    PRIMARY KEY(route, pair)
);
CREATE TABLE IF NOT EXISTS heartbeat(
    id          integer PRIMARY KEY CHECK (id = 1),
    at          double precision NOT NULL
);
"""

MIGRATIONS: Final[tuple[str, ...]] = (
    _OUTBOX,
    # Append new migrations here (never edit one above).
    PROFILE_SCHEMA,  # 2: visitor profiles and cross-device links (postgres_profiles.py)
    DEAD_SCHEMA,  # 3: dead-letter evidence, the dead rows' index (postgres_dead.py)
    STATS_SCHEMA,  # 4: per-minute stats rollups (postgres_stats.py)
    ORDERS_SCHEMA,  # 5: the lean order ledger, one row per order event (postgres_orders.py)
    PAIRS_BOOKED_SCHEMA,  # 6: the dedup_pair booking's copy of the counters (postgres_stats.py)
    PAUSES_SCHEMA,  # 7: the last operator resume of each route (postgres_pauses.py)
)
"""``MIGRATIONS[i]`` upgrades schema version ``i`` to ``i + 1``."""


class SchemaTooNewError(RuntimeError):
    """The database was migrated by a newer gateway than this one."""


_VERSION_TABLE: Final = """
CREATE TABLE IF NOT EXISTS schema_version(
    version     integer PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


async def migrate(conn: Conn, migrations: tuple[str, ...] = MIGRATIONS) -> int:
    """Apply the missing migrations in one transaction; return the schema version now.

    `conn` must not be inside a transaction. Idempotent, and safe to run from many processes at
    once: the advisory lock serialises them, and each finds what the previous one applied.
    """
    async with conn.transaction():
        # waits while another process migrates, however long that takes
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY, timeout=MIGRATION_TIMEOUT)
        await conn.execute(_VERSION_TABLE)
        version = int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
        if version > len(migrations):
            raise SchemaTooNewError(
                f"the PostgreSQL schema is at version {version}, newer than this gateway's "
                f"{len(migrations)}: upgrade the gateway"
            )
        for target in range(version + 1, len(migrations) + 1):
            # A migration may rebuild a big table: the statement timeout is not for it.
            await conn.execute(migrations[target - 1], timeout=MIGRATION_TIMEOUT)
            await conn.execute("INSERT INTO schema_version(version) VALUES ($1)", target)
        return len(migrations)
