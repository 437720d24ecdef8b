"""The PostgreSQL store's append: dedup claims, delivery rows and duplicate merges, set-based.

`claim` writes a whole batch of events with ONE statement: the events travel as arrays (one
per column, ``unnest``ed server-side), each draws an id from ``events_id_seq``, each route's
dedup key is claimed with ``INSERT … ON CONFLICT DO UPDATE … WHERE first_seen <= cutoff`` (a
key seen since the cutoff is left alone), and only the events that won a key are stored, with
one pending delivery row per key won. It returns which (event, route) pairs won. Keys are
claimed in key order, so two processes claiming overlapping keys lock them in the same order
(no deadlock); of two concurrent claims of one key, the second waits for the first's commit
and then loses it.

A key that occurs twice in one batch is claimed by its first occurrence only (a second row for
the same key in one upsert is an error in PostgreSQL); the later one is a duplicate like any
other.

`merge_duplicates` handles the (event, route) pairs that lost their key, as the SQLite store
does (`gateway.store.sqlite_append._merge_duplicates`): a duplicate whose original delivery row is
still pending is merged into the stored record (core.merge: union of identifiers, backend values
win), at most once per original and batch; every duplicate is counted per route and source
pair ("api+loader", named from the original's own channel: unlike the SQLite store, where
the key of a second route then reads the record the first merge gave the backend's channel and
counts "api+api"). It locks the originals' delivery rows (``FOR UPDATE``, in id order) before
reading their state, so a lease taking the row at the same moment either came first (the row is
leased: no merge) or waits (its ``SKIP LOCKED`` passes the row until the merge committed).
It must run inside a transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from gateway.core.merge import source_pair
from gateway.core.record import channel_of, merge_records
from gateway.store.base import AppendResult, NewEvent
from gateway.store.postgres_conn import Conn

__all__ = ["Claimed", "claim", "merge_duplicates", "result_of"]

_CLAIM: Final = """
WITH ev AS MATERIALIZED (
    SELECT nextval('events_id_seq') AS id, u.*
    FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::bytea[])
        WITH ORDINALITY AS u(site, event_name, event_id, event_time, record, i)
),
claim AS (
    INSERT INTO dedup AS d (route, event_name, event_id, first_seen, event_ref)
    SELECT k.route, ev.event_name, ev.event_id, $8, ev.id
    FROM unnest($6::text[], $7::int8[]) WITH ORDINALITY AS k(route, i, o)
    JOIN ev ON ev.i = k.i
    ORDER BY k.o
    ON CONFLICT (route, event_name, event_id) DO UPDATE
        SET first_seen = excluded.first_seen, event_ref = excluded.event_ref
        WHERE d.first_seen <= $9
    RETURNING d.route, d.event_ref
),
won AS (
    SELECT ev.i, ev.id, claim.route FROM claim JOIN ev ON ev.id = claim.event_ref
),
new_events AS (
    INSERT INTO events(id, site, event_name, event_id, event_time, record, created_at)
    SELECT id, site, event_name, event_id, event_time, record, $8 FROM ev
    WHERE id IN (SELECT id FROM won)
),
new_deliveries AS (
    INSERT INTO deliveries(event_ref, route, state, attempts, not_before, updated_at)
    SELECT id, route, 'pending', 0, $10, $8 FROM won ORDER BY i, route
)
SELECT i, route FROM won
"""
"""$1..$5: the events' columns; $6, $7: the keys to claim (route, 1-based event index), in key
order; $8 now; $9 the dedup cutoff; $10 the new rows' not_before (0, or the end of the merge
window)."""

_ORIGINALS: Final = """
SELECT l.o, e.id, e.record, d.state
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
    WITH ORDINALITY AS l(route, event_name, event_id, site, o)
JOIN dedup k ON k.route = l.route AND k.event_name = l.event_name AND k.event_id = l.event_id
JOIN events e ON e.id = k.event_ref AND e.site = l.site
JOIN deliveries d ON d.event_ref = e.id AND d.route = k.route
ORDER BY d.id
FOR UPDATE OF d
"""
"""The original (event id, record, delivery state) of each lost key, its delivery row locked."""

_SET_RECORDS: Final = """
UPDATE events e SET record = u.record
FROM unnest($1::int8[], $2::bytea[]) AS u(id, record) WHERE e.id = u.id
"""

_COUNT_DUPLICATES: Final = """
INSERT INTO dedup_counts(route, pair, n)
SELECT route, pair, count(*) FROM unnest($1::text[], $2::text[]) AS u(route, pair)
GROUP BY route, pair ORDER BY route, pair
ON CONFLICT (route, pair) DO UPDATE SET n = dedup_counts.n + excluded.n
"""


@dataclass(frozen=True, slots=True)
class Claimed:
    """What `claim` did: the routes each event won, and the (event index, route) pairs lost."""

    won: dict[int, list[str]]
    lost: list[tuple[int, str]]


async def claim(
    conn: Conn, events: Sequence[NewEvent], *, now: float, cutoff: float, due: float
) -> Claimed:
    """Store the events that win a dedup key and their delivery rows (one statement)."""
    seen: set[tuple[str, str, str]] = set()
    keys: list[tuple[str, str, str, int]] = []
    for i, e in enumerate(events):
        for route in e.routes:
            key = (route, e.event_name, e.event_id)
            if key not in seen:
                seen.add(key)
                keys.append((*key, i + 1))
    keys.sort()
    rows = await conn.fetch(
        _CLAIM,
        [e.site for e in events],
        [e.event_name for e in events],
        [e.event_id for e in events],
        [e.event_time for e in events],
        [e.record for e in events],
        [k[0] for k in keys],
        [k[3] for k in keys],
        now,
        cutoff,
        due,
    )
    won: dict[int, list[str]] = {}
    for row in rows:
        won.setdefault(int(row[0]) - 1, []).append(row[1])
    lost = [
        (i, route)
        for i, e in enumerate(events)
        for route in e.routes
        if route not in won.get(i, ())
    ]
    return Claimed(won, lost)


async def merge_duplicates(
    conn: Conn, events: Sequence[NewEvent], lost: Sequence[tuple[int, str]]
) -> list[tuple[int, str, str, str, str]]:
    """Merge and count the duplicates `lost` (see the module docstring); in a transaction.

    Returns the backend-and-browser pairs found: (original event ref, route, event_name,
    event_id, pair) for the order ledger.
    """
    if not lost:
        return []
    rows = await conn.fetch(
        _ORIGINALS,
        [route for _, route in lost],
        [events[i].event_name for i, _ in lost],
        [events[i].event_id for i, _ in lost],
        [events[i].site for i, _ in lost],
    )
    original = {int(r[0]) - 1: (int(r[1]), bytes(r[2]), str(r[3])) for r in rows}
    records: dict[int, bytes] = {}
    merged: set[int] = set()
    pairs: list[tuple[str, str]] = []
    paired: list[tuple[int, str, str, str, str]] = []
    for o, (i, route) in enumerate(lost):
        new = events[i]
        found = original.get(o)
        if found is None:
            pairs.append((route, source_pair_of(None, new.record)))
            continue
        ref, old, state = found
        # The pair names the channel the original came from, even when an earlier duplicate of
        # this batch already merged into it (a merged record takes the backend's channel).
        pair = source_pair_of(old, new.record)
        pairs.append((route, pair))
        if pair.startswith("api+") and pair != "api+api":  # a backend and a browser copy
            paired.append((ref, route, new.event_name, new.event_id, pair))
        if state == "pending" and ref not in merged and old != b"{}":
            try:
                record, _ = merge_records(old, new.record)
            except (ValueError, KeyError, TypeError):
                continue  # not a gateway event record: keep the original untouched
            records[ref] = record
            merged.add(ref)
    if records:
        refs = sorted(records)
        await conn.execute(_SET_RECORDS, refs, [records[r] for r in refs])
    await conn.execute(_COUNT_DUPLICATES, [p[0] for p in pairs], [p[1] for p in pairs])
    return paired


def source_pair_of(old: bytes | None, new: bytes) -> str:
    """The source pair of a duplicate ("api+loader"; "api" twice: "api+api")."""
    return source_pair(channel_of(old) if old is not None else "unknown", channel_of(new))


def result_of(routes: tuple[str, ...], won: Sequence[str]) -> AppendResult:
    """The result of an event that won the keys of `won` among its `routes`."""
    if not won:
        return _none_won(len(routes))
    if len(won) == len(routes):
        return _all_won(len(routes))
    lost = tuple(r for r in routes if r not in won)
    return AppendResult(created=len(won), deduplicated=len(lost), duplicates=lost)


@functools.cache
def _all_won(routes: int) -> AppendResult:
    return AppendResult(created=routes, deduplicated=0)


@functools.cache
def _none_won(routes: int) -> AppendResult:
    return AppendResult(created=0, deduplicated=routes)
