"""Appending events to the SQLite outbox: the batch insert, dedup claims, duplicate merges.

`_append_tx` writes a batch of events and their delivery rows with a fixed handful of
statements; the dedup table (gateway/store/sqlite_dedup.py) decides which (route, name, id)
keys each event wins, and `_merge_duplicates` folds a duplicate into its still-undelivered
original. `_append_orders_tx` adds the order ledger rows (gateway/store/sqlite_orders.py) in
the same transaction. They run on the writer (gateway/store/sqlite_writer.py), alone or as the
merged insert of a whole group commit.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Final

from gateway.core.merge import source_pair
from gateway.core.orders import OrderEntry
from gateway.core.record import channel_of, merge_records
from gateway.store.base import AppendResult, NewEvent
from gateway.store.sqlite_dedup import Owner, claim_all_tx, claim_tx
from gateway.store.sqlite_orders import EventKey, mark_paired_tx, record_orders_tx

_INSERT_EVENT: Final = (
    "INSERT INTO events(id, site, event_name, event_id, event_time, record, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)

_DELIVER_NEW: Final = (
    "INSERT INTO deliveries(event_ref, route, state, attempts, not_before, updated_at)"
    " SELECT id, ?1, 'pending', 0, ?2, ?3 FROM events WHERE id BETWEEN ?4 AND ?5 ORDER BY id"
)


def _append_tx(
    conn: sqlite3.Connection,
    *,
    events: tuple[NewEvent, ...],
    now: float,
    cutoff: float,
    merge_seconds: float = 0.0,
    paired: set[tuple[str, str, str]] | None = None,
) -> list[AppendResult]:
    """Insert the events' delivery rows, skipping (route, name, id) keys seen since `cutoff`.

    A fixed handful of statements whatever the batch size: event i gets the id ``base + 1 + i``
    up front. When all events share one routes tuple (one site's request, the usual case), the
    events go in with one executemany; if no key of the batch is held (`claim_all_tx`: one
    probe per event), each event's claim is one dedup row; when every key was won (that way or
    key by key), each route's delivery rows go in with one INSERT … SELECT. Otherwise (and for
    mixed routes) `claim_tx` decides key by key; events that won nothing are not kept (rowid
    gaps are harmless) and the lost keys are merged or counted as duplicates (sqlite_dedup.py
    explains the dedup rows).
    """
    (base,) = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
    due = now + merge_seconds if merge_seconds > 0 else 0.0
    first = events[0].routes
    rows = [
        (base + 1 + i, e.site, e.event_name, e.event_id, e.event_time, e.record, now)
        for i, e in enumerate(events)
    ]
    last = base + len(events)
    if all(e.routes is first or e.routes == first for e in events):
        conn.executemany(_INSERT_EVENT, rows)
        claimed: dict[int, list[str]] = {}
        lost: dict[tuple[int, str], Owner] = {}
        if not claim_all_tx(
            conn, events=events, routes=first, first=base + 1, now=now, cutoff=cutoff
        ):
            claimed, lost = claim_tx(conn, events=events, first=base + 1, now=now, cutoff=cutoff)
        if not lost:  # every key won: each route's rows in one statement
            for route in first:
                conn.execute(_DELIVER_NEW, (route, due, now, base + 1, last))
            return [_won_all(len(first))] * len(events)
        unclaimed = [(base + 1 + i,) for i in range(len(events)) if i not in claimed]
        conn.executemany("DELETE FROM events WHERE id = ?", unclaimed)
    else:
        claimed, lost = claim_tx(conn, events=events, first=base + 1, now=now, cutoff=cutoff)
        conn.executemany(_INSERT_EVENT, [rows[i] for i in sorted(claimed)])
    conn.executemany(
        "INSERT INTO deliveries(event_ref, route, state, attempts, not_before, updated_at)"
        " VALUES (?, ?, 'pending', 0, ?, ?)",
        [(base + 1 + i, route, due, now) for i in sorted(claimed) for route in claimed[i]],
    )
    if lost:
        _merge_duplicates(conn, events, lost, paired)
    return [_result(e.routes, claimed.get(i, ())) for i, e in enumerate(events)]


def _append_orders_tx(
    conn: sqlite3.Connection,
    *,
    events: tuple[NewEvent, ...],
    orders: tuple[OrderEntry, ...],
    now: float,
    cutoff: float,
    merge_seconds: float,
) -> list[AppendResult]:
    """`_append_tx`, then the order ledger rows, each with its event's row id when the append
    stored the event (it won a dedup key)."""
    if not events:
        record_orders_tx(conn, orders=orders, now=now)
        return []
    paired: set[tuple[str, str, str]] = set()
    (base,) = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
    results = _append_tx(
        conn,
        events=events,
        now=now,
        cutoff=cutoff,
        merge_seconds=merge_seconds,
        paired=paired,
    )
    refs: dict[EventKey, int] = {}
    for i, (e, result) in enumerate(zip(events, results, strict=True)):
        if result.created:  # event i is stored as row base + 1 + i (see `_append_tx`)
            refs.setdefault((e.site, e.event_name, e.event_id), base + 1 + i)
    record_orders_tx(conn, orders=orders, now=now, paired=paired, refs=refs)
    return results


def _result(routes: tuple[str, ...], won: Sequence[str]) -> AppendResult:
    """The result of an event that won the keys of `won` among its `routes`."""
    if not won or len(won) == len(routes):
        return AppendResult(created=len(won), deduplicated=len(routes) - len(won))
    lost = tuple(r for r in routes if r not in won)
    return AppendResult(created=len(won), deduplicated=len(lost), duplicates=lost)


@functools.cache
def _won_all(routes: int) -> AppendResult:
    """The result of an event that won all its `routes` (immutable: one shared instance)."""
    return AppendResult(created=routes, deduplicated=0)


def _merge_duplicates(
    conn: sqlite3.Connection,
    events: tuple[NewEvent, ...],
    lost: Mapping[tuple[int, str], Owner],
    paired: set[tuple[str, str, str]] | None = None,
) -> None:
    """Fold duplicate copies into their still-undelivered original; count every duplicate.

    `lost` maps the (event index, route) pairs whose dedup key was already claimed to the
    event holding it (sqlite_dedup.claim_tx), in batch order. A duplicate
    whose original delivery is still pending (inside its merge window, or simply not sent yet)
    is merged into the stored record (core.merge: union of identifiers, backend values win);
    after delivery it is only counted, per route and source pair (e.g. "api+loader"). A key
    claimed before schema version 4 has no event ref: its duplicate is only counted.
    """
    merged: set[int] = set()
    for (i, route), owner in lost.items():
        new = events[i]
        row = conn.execute(
            "SELECT e.id, e.record, d.state FROM events e"
            " JOIN deliveries d ON d.event_ref = e.id AND d.route = ?"
            " WHERE e.id = ? AND e.site = ? AND e.event_id = ? AND e.event_name = ?",
            (route, owner, new.site, new.event_id, new.event_name),
        ).fetchone()
        if row is None:
            pair = source_pair_of(None, new.record)
        else:
            ref, old, state = row
            pair = source_pair_of(bytes(old), new.record)
            if pair.startswith("api+") and pair != "api+api":  # a backend and a browser copy
                mark_paired_tx(  # the backend's came first
                    conn,
                    site=new.site,
                    event_name=new.event_name,
                    event_id=new.event_id,
                    route=route,
                )
                if paired is not None:  # the browser's came first: the caller's ledger rows
                    paired.add((route, new.event_name, new.event_id))
            if state == "pending" and ref not in merged and bytes(old) != b"{}":
                try:
                    record, _ = merge_records(bytes(old), new.record)
                except (ValueError, KeyError, TypeError):
                    record = None  # not a gateway event record: keep the original untouched
                if record is not None:
                    conn.execute("UPDATE events SET record = ? WHERE id = ?", (record, ref))
                    merged.add(ref)
        conn.execute(
            "INSERT INTO dedup_counts(route, pair, n) VALUES (?, ?, 1)"
            " ON CONFLICT(route, pair) DO UPDATE SET n = n + 1",
            (route, pair),
        )


def source_pair_of(old: bytes | None, new: bytes) -> str:
    """Return the source pair of a duplicate ("api+loader"; "api" twice → "api+api")."""
    return source_pair(channel_of(old) if old is not None else "unknown", channel_of(new))
