"""The dedup keys of the SQLite store (schema version 11): one row per event and claim.

A dedup key is (route, event name, event id): the first event to claim it within the dedup
window gets the route's delivery row, and a later copy with the same key is a duplicate (merged
into the original while that is undelivered, else only counted). Until version 10 the table
held one row per key, so an event sent to ten destinations wrote ten rows into a random-access
b-tree. Now a row is one event's claim: the routes whose keys it won (``routes``, each between
two `SEP` characters), under the event's (name, id), its row id and the claim's time::

    (event_name, event_id, event_ref) → routes, first_seen

A key (route, name, id) is held by the row of that (name, id) whose ``routes`` holds the
route; it is *fresh* while ``first_seen`` is after the window's cutoff, and a fresh key cannot
be claimed again. At most one fresh row holds a key (a claim only takes keys no fresh row
holds), so the holder is well defined; expired rows stay until the sweep (`sweep_tx`) deletes
them, and a key's newest row names the event that last held it (the order ledger reads it).

`claim_all_tx` is the usual case: one route set for a whole batch, no key of the batch held
by a fresh row and no (name, id) twice in the batch: one probe per event, one row per event.
`claim_tx` is the general road: it reads the fresh rows of each event's (name, id) once and
decides per key, the first occurrence in the batch winning, exactly as a per-key table did.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from functools import lru_cache
from typing import Final

from gateway.store.base import NewEvent

SEP: Final = "\x1f"
"""Delimits the routes of a row (route names never hold control characters)."""

DEDUP_GROUP_SCHEMA: Final = """
ALTER TABLE dedup RENAME TO dedup_v10;
CREATE TABLE dedup(
    event_name  TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    event_ref   INTEGER NOT NULL,
    routes      TEXT NOT NULL,
    first_seen  REAL NOT NULL,
    PRIMARY KEY(event_name, event_id, event_ref)
) WITHOUT ROWID;
INSERT INTO dedup(event_name, event_id, event_ref, routes, first_seen)
SELECT event_name, event_id, coalesce(event_ref, 0),
    char(31) || group_concat(route, char(31)) || char(31), max(first_seen)
FROM dedup_v10 GROUP BY event_name, event_id, coalesce(event_ref, 0);
DROP TABLE dedup_v10
"""
"""Schema version 11 (migration 10): one dedup row per event's claim instead of one per key.
A key claimed before version 4 names no event: its row's event_ref is 0 (no event has it)."""

Owner = int | None
"""The row id of the event holding a key (None: a key from before version 4, no event)."""


@lru_cache(maxsize=256)
def route_set(routes: tuple[str, ...]) -> str:
    """The ``routes`` text of a claim of these routes."""
    return SEP + SEP.join(routes) + SEP


def holds(routes_text: str, route: str) -> bool:
    """Whether a row's ``routes`` holds `route`."""
    return f"{SEP}{route}{SEP}" in routes_text


_FRESH_IN_RANGE: Final = (
    "SELECT 1 FROM events e JOIN dedup k ON k.event_name = e.event_name"
    " AND k.event_id = e.event_id WHERE e.id BETWEEN ?1 AND ?2 AND k.first_seen > ?3 LIMIT 1"
)

_CLAIM_RANGE: Final = (
    "INSERT OR REPLACE INTO dedup(event_name, event_id, event_ref, routes, first_seen)"
    " SELECT event_name, event_id, id, ?1, ?2 FROM events WHERE id BETWEEN ?3 AND ?4"
)
"""One claim row per event row in ?3..?4. REPLACE: an event id may be reused once compaction
freed the newest rows, and the expired claim of that id is overwritten."""

_CLAIM: Final = (
    "INSERT OR REPLACE INTO dedup(event_name, event_id, event_ref, routes, first_seen)"
    " VALUES (?, ?, ?, ?, ?)"
)
"""A claim row; a row of the same (name, id, row id) is replaced (`claim_tx` keeps the keys of
a fresh one)."""

_FRESH: Final = (
    "SELECT event_ref, routes FROM dedup WHERE event_name = ? AND event_id = ? AND first_seen > ?"
)


def claim_all_tx(
    conn: sqlite3.Connection,
    *,
    events: Sequence[NewEvent],
    routes: tuple[str, ...],
    first: int,
    now: float,
    cutoff: float,
) -> bool:
    """If every key of the batch is free, claim them all and return True; else claim nothing.

    The events (all sent to `routes`) are the event rows ``first``, ``first + 1``, … just
    inserted."""
    if len({(e.event_name, e.event_id) for e in events}) != len(events):
        return False  # a (name, id) twice in the batch: the second copy is a duplicate
    last = first + len(events) - 1
    if conn.execute(_FRESH_IN_RANGE, (first, last, cutoff)).fetchone() is not None:
        return False
    conn.execute(_CLAIM_RANGE, (route_set(routes), now, first, last))
    return True


def claim_tx(
    conn: sqlite3.Connection,
    *,
    events: Sequence[NewEvent],
    first: int,
    now: float,
    cutoff: float,
) -> tuple[dict[int, list[str]], dict[tuple[int, str], Owner]]:
    """Claim each event's free keys (event i is to be row ``first + i``), in batch order.

    Returns the routes each event (by index) won, and for every key an event lost, the row id
    of its holder (an earlier event of the batch, or the fresh row's event)."""
    won: dict[int, list[str]] = {}
    lost: dict[tuple[int, str], Owner] = {}
    claimed: dict[tuple[str, str, str], int] = {}
    fresh_of: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for i, e in enumerate(events):
        name_id = (e.event_name, e.event_id)
        fresh = fresh_of.get(name_id)
        if fresh is None:
            fresh = fresh_of[name_id] = conn.execute(_FRESH, (*name_id, cutoff)).fetchall()
        for route in e.routes:
            j = claimed.get((route, *name_id))
            if j is not None:
                lost[i, route] = first + j
                continue
            holder = next((ref for ref, text in fresh if holds(text, route)), None)
            if holder is not None:
                lost[i, route] = holder or None
                continue
            claimed[route, *name_id] = i
            won.setdefault(i, []).append(route)
    rows = []
    for i, routes in won.items():
        e = events[i]
        held = [
            r
            for ref, text in fresh_of[e.event_name, e.event_id]
            if ref == first + i  # a row id reused after compaction: keep that claim's keys
            for r in text.strip(SEP).split(SEP)
        ]
        rows.append((e.event_name, e.event_id, first + i, route_set((*held, *routes)), now))
    conn.executemany(_CLAIM, rows)
    return won, lost


def sweep_tx(
    conn: sqlite3.Connection,
    *,
    cutoff: float,
    start: tuple[str, str, int] | None,
    limit: int,
) -> tuple[int, tuple[str, str, int] | None]:
    """Visit up to `limit` dedup rows after `start` (in key order); delete those claimed
    before `cutoff`. Return the keys deleted (a row holds one per route) and where to go on
    (None: the end of the table was reached)."""
    if start is None:
        rows = conn.execute(
            "SELECT event_name, event_id, event_ref, first_seen, routes FROM dedup"
            " ORDER BY event_name, event_id, event_ref LIMIT ?",
            (limit,),
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT event_name, event_id, event_ref, first_seen, routes FROM dedup"
            " WHERE (event_name, event_id, event_ref) > (?, ?, ?)"
            " ORDER BY event_name, event_id, event_ref LIMIT ?",
            (*start, limit),
        ).fetchall()
    expired = [r for r in rows if r[3] < cutoff]
    deleted = 0
    for name, event_id, ref, _, routes in expired:
        gone = conn.execute(
            "DELETE FROM dedup WHERE event_name = ? AND event_id = ? AND event_ref = ?"
            " AND first_seen < ?",
            (name, event_id, ref, cutoff),
        ).rowcount
        if gone:
            deleted += routes.count(SEP) - 1
    if len(rows) < limit:
        return deleted, None
    last = rows[-1]
    return deleted, (last[0], last[1], last[2])
