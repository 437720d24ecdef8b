"""Visitor-profile transactions of the SQLite store (run on its writer / reader threads).

Tables: ``profiles`` (one row per site and visitor id, the profile as JSON, no raw PII) and
``profile_keys`` (hashed e-mail / external id / phone → visitor id, for cross-device lookup).
A merge is read-modify-write inside the single writer thread, so two near-simultaneous hits of
one visitor are applied one after the other and never lose each other's values.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final

from gateway.core.jsoncodec import dumps, loads
from gateway.core.profile import ProfileUpdate, VisitorProfile, from_json, merge, to_json
from gateway.core.record import record_carries
from gateway.store.base import DeadReason, EraseResult, ProfileQuery

PROFILE_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS profiles(
    site        TEXT NOT NULL,
    visitor_id  TEXT NOT NULL,
    first_seen  REAL NOT NULL,
    last_seen   REAL NOT NULL,
    doc         TEXT NOT NULL,
    PRIMARY KEY(site, visitor_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS profiles_last_seen ON profiles(last_seen);
CREATE TABLE IF NOT EXISTS profile_keys(
    site        TEXT NOT NULL,
    key         TEXT NOT NULL,
    visitor_id  TEXT NOT NULL,
    PRIMARY KEY(site, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS profile_keys_visitor ON profile_keys(site, visitor_id);
"""


def _load(conn: sqlite3.Connection, site: str, visitor_id: str) -> VisitorProfile | None:
    row = conn.execute(
        "SELECT first_seen, last_seen, doc FROM profiles WHERE site = ? AND visitor_id = ?",
        (site, visitor_id),
    ).fetchone()
    if row is None:
        return None
    return from_json(site, visitor_id, row[0], row[1], loads(row[2]))


def touch_profile_tx(
    conn: sqlite3.Connection, *, site: str, visitor_id: str, update: ProfileUpdate, now: float
) -> VisitorProfile:
    """Merge one update into the stored profile and index its lookup keys."""
    old = _load(conn, site, visitor_id)
    profile = merge(old, site, visitor_id, update, now)
    conn.execute(
        "INSERT INTO profiles(site, visitor_id, first_seen, last_seen, doc) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT(site, visitor_id) DO UPDATE SET last_seen = excluded.last_seen,"
        " doc = excluded.doc",
        (site, visitor_id, profile.first_seen, profile.last_seen,
         dumps(to_json(profile)).decode()),
    )  # fmt: skip
    old_keys = set(old.lookup_keys()) if old is not None else set()
    for key in profile.lookup_keys():
        if key not in old_keys:
            conn.execute(
                "INSERT INTO profile_keys(site, key, visitor_id) VALUES (?, ?, ?)"
                " ON CONFLICT(site, key) DO UPDATE SET visitor_id = excluded.visitor_id",
                (site, key, visitor_id),
            )
    return profile


def find_profiles_tx(
    conn: sqlite3.Connection, *, site: str, queries: Sequence[ProfileQuery]
) -> list[VisitorProfile | None]:
    """Resolve each query: by visitor id first, else by the first lookup key that is known."""
    out: list[VisitorProfile | None] = []
    for query in queries:
        found: VisitorProfile | None = None
        if query.visitor_id is not None:
            found = _load(conn, site, query.visitor_id)
        for key in query.keys if found is None else ():
            row = conn.execute(
                "SELECT visitor_id FROM profile_keys WHERE site = ? AND key = ?", (site, key)
            ).fetchone()
            if row is not None:
                found = _load(conn, site, row[0])
                if found is not None:
                    break
        out.append(found)
    return out


def erase_tx(
    conn: sqlite3.Connection,
    *,
    site: str,
    visitor_id: str | None,
    keys: Sequence[str],
    now: float,
) -> EraseResult:
    """Delete the profiles and dead-letter the undelivered events that carry them."""
    visitors: set[str] = {visitor_id} if visitor_id else set()
    for key in keys:
        row = conn.execute(
            "SELECT visitor_id FROM profile_keys WHERE site = ? AND key = ?", (site, key)
        ).fetchone()
        if row is not None:
            visitors.add(row[0])
    profiles = 0
    all_keys = set(keys)
    for vid in visitors:
        stored = _load(conn, site, vid)
        if stored is not None:
            all_keys.update(stored.lookup_keys())
        profiles += conn.execute(
            "DELETE FROM profiles WHERE site = ? AND visitor_id = ?", (site, vid)
        ).rowcount
        conn.execute("DELETE FROM profile_keys WHERE site = ? AND visitor_id = ?", (site, vid))
    deliveries = 0
    rows = conn.execute(
        "SELECT e.id, e.record FROM events e WHERE e.site = ? AND EXISTS ("
        " SELECT 1 FROM deliveries d WHERE d.event_ref = e.id"
        " AND d.state IN ('pending', 'leased', 'retry'))",
        (site,),
    ).fetchall()
    owners: list[str | None] = [*visitors] or [None]
    for event_ref, record in rows:
        if not any(record_carries(loads(record), vid, all_keys) for vid in owners):
            continue
        deliveries += conn.execute(
            "UPDATE deliveries SET state = 'dead', reason = ?, not_before = ?, updated_at = ?"
            " WHERE event_ref = ? AND state IN ('pending', 'leased', 'retry')",
            (f"{DeadReason.ERASED.value}: erasure request", now, now, event_ref),
        ).rowcount
        conn.execute("UPDATE events SET record = ? WHERE id = ?", (b"{}", event_ref))
    return EraseResult(profiles=profiles, deliveries=deliveries)


def expire_profiles_tx(conn: sqlite3.Connection, *, cutoff: float) -> int:
    """Delete profiles last seen before the cutoff, with their lookup keys."""
    conn.execute(
        "DELETE FROM profile_keys WHERE (site, visitor_id) IN"
        " (SELECT site, visitor_id FROM profiles WHERE last_seen < ?)",
        (cutoff,),
    )
    return conn.execute("DELETE FROM profiles WHERE last_seen < ?", (cutoff,)).rowcount
