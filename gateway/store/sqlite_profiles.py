"""Visitor-profile transactions of the SQLite store (run on its writer / reader threads).

Tables: ``profiles`` (one row per site and visitor id, the profile as JSON, no raw PII) and
``profile_links`` (hashed e-mail / external id / phone → every visitor id it was seen with, the
`MAX_LINKED_VISITORS` most recent ones, for cross-device lookup; schema version 6 replaced the
one-visitor-per-key ``profile_keys`` of version 2).
A merge is read-modify-write inside the single writer thread, so two near-simultaneous hits of
one visitor are applied one after the other and never lose each other's values.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Final, Protocol, TypeVar

from gateway.core.jsoncodec import dumps, loads
from gateway.core.profile import (
    MAX_LINKED_VISITORS,
    ProfileUpdate,
    VisitorProfile,
    from_json,
    lookup_keys,
    merge,
    to_json,
)
from gateway.core.record import record_carries
from gateway.store.base import (
    AppendResult,
    DeadReason,
    EraseResult,
    Identity,
    NewEvent,
    ProfileQuery,
)
from gateway.store.sqlite_append import _append_tx
from gateway.store.sqlite_dead import erase_dead_tx
from gateway.store.sqlite_host import SqliteHost
from gateway.store.sqlite_orders import erase_orders_tx
from gateway.store.sqlite_workers import _is_busy, _Job, _LoopWorker, _Touch

T = TypeVar("T")

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
"""Schema version 2 (migration 1): profiles, and one visitor per lookup key."""

LINKS_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS profile_links(
    site        TEXT NOT NULL,
    key         TEXT NOT NULL,
    visitor_id  TEXT NOT NULL,
    seen        REAL NOT NULL,
    PRIMARY KEY(site, key, visitor_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS profile_links_visitor ON profile_links(site, visitor_id);
INSERT OR IGNORE INTO profile_links(site, key, visitor_id, seen)
 SELECT k.site, k.key, k.visitor_id, p.last_seen FROM profile_keys k
 JOIN profiles p ON p.site = k.site AND p.visitor_id = k.visitor_id;
INSERT OR IGNORE INTO profile_links(site, key, visitor_id, seen)
 SELECT p.site, 'em:' || j.value, p.visitor_id, p.last_seen
 FROM profiles p, json_each(p.doc, '$.h.meta.em') j WHERE j.type = 'text';
INSERT OR IGNORE INTO profile_links(site, key, visitor_id, seen)
 SELECT p.site, 'external_id:' || j.value, p.visitor_id, p.last_seen
 FROM profiles p, json_each(p.doc, '$.h.meta.external_id') j WHERE j.type = 'text';
INSERT OR IGNORE INTO profile_links(site, key, visitor_id, seen)
 SELECT p.site, 'ph:' || j.value, p.visitor_id, p.last_seen
 FROM profiles p, json_each(p.doc, '$.h.meta.ph') j WHERE j.type = 'text';
DROP TABLE IF EXISTS profile_keys
"""
"""Schema version 6: every visitor a lookup key was seen with (``seen`` = when last), filled
from the old one-visitor index and from the identifiers each stored profile holds."""


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
    given = set(lookup_keys(update.hashed)) if update.hashed else set()
    for key in profile.lookup_keys():
        if key in given or key not in old_keys:
            link_tx(conn, site=site, key=key, visitor_id=visitor_id, now=now)
    return profile


def link_tx(conn: sqlite3.Connection, *, site: str, key: str, visitor_id: str, now: float) -> None:
    """Record that `key` was seen with the visitor now; keep the newest MAX_LINKED_VISITORS."""
    inserted = conn.execute(
        "INSERT INTO profile_links(site, key, visitor_id, seen) VALUES (?, ?, ?, ?)"
        " ON CONFLICT(site, key, visitor_id) DO UPDATE SET seen = max(seen, excluded.seen)",
        (site, key, visitor_id, now),
    ).rowcount
    if inserted:
        conn.execute(
            "DELETE FROM profile_links WHERE site = ? AND key = ? AND visitor_id IN ("
            " SELECT visitor_id FROM profile_links WHERE site = ? AND key = ?"
            " ORDER BY seen DESC, visitor_id DESC LIMIT -1 OFFSET ?)",
            (site, key, site, key, MAX_LINKED_VISITORS),
        )


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
                "SELECT visitor_id FROM profile_links WHERE site = ? AND key = ?"
                " ORDER BY seen DESC LIMIT 1",
                (site, key),
            ).fetchone()
            if row is not None:
                found = _load(conn, site, row[0])
                if found is not None:
                    break
        out.append(found)
    return out


_IDENTITIES: Final = """
SELECT 0, p.visitor_id, p.visitor_id, p.first_seen, p.last_seen, p.doc FROM profiles p
 WHERE p.site = :site AND p.visitor_id IN (SELECT value FROM json_each(:vids))
UNION ALL
SELECT 1, l.key, p.visitor_id, p.first_seen, p.last_seen, p.doc FROM profile_links l
 JOIN profiles p ON p.site = l.site AND p.visitor_id = l.visitor_id
 WHERE l.site = :site AND l.key IN (SELECT value FROM json_each(:keys))
UNION ALL
SELECT 2, a.visitor_id, p.visitor_id, p.first_seen, p.last_seen, p.doc FROM profile_links a
 CROSS JOIN profile_links b ON b.site = a.site AND b.key = a.key
 CROSS JOIN profiles p ON p.site = b.site AND p.visitor_id = b.visitor_id
 WHERE a.site = :site AND a.visitor_id IN (SELECT value FROM json_each(:vids))
"""
"""One statement for a whole request batch: the named visitors (0), the visitors linked to the
events' keys (1) and the visitors sharing a key with a named visitor (2); every branch is an
index range (profiles' primary key, profile_links' primary key and its visitor index); CROSS
JOIN pins the join order so the links of the named visitors are walked first."""


def find_identities_tx(
    conn: sqlite3.Connection, *, site: str, queries: Sequence[ProfileQuery]
) -> list[Identity]:
    """Resolve each query to its named profile and every profile linked to it, in one read."""
    vids = sorted({q.visitor_id for q in queries if q.visitor_id is not None})
    keys = sorted({key for q in queries for key in q.keys})
    by_vid: dict[str, VisitorProfile] = {}
    via: tuple[dict[str, set[str]], dict[str, set[str]]] = ({}, {})
    params = {"site": site, "vids": dumps(vids).decode(), "keys": dumps(keys).decode()}
    for kind, through, vid, first_seen, last_seen, doc in conn.execute(_IDENTITIES, params):
        if vid not in by_vid:
            by_vid[vid] = from_json(site, vid, first_seen, last_seen, loads(doc))
        if kind:
            via[kind - 1].setdefault(through, set()).add(vid)
    via_key, via_vid = via
    out: list[Identity] = []
    for query in queries:
        vid = query.visitor_id
        linked_ids = set(via_vid.get(vid, ())) if vid is not None else set()
        for key in query.keys:
            linked_ids.update(via_key.get(key, ()))
        linked_ids.discard(vid or "")
        named = by_vid.get(vid) if vid is not None else None
        out.append(Identity(named, tuple(by_vid[v] for v in sorted(linked_ids))))
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
        rows = conn.execute(
            "SELECT visitor_id FROM profile_links WHERE site = ? AND key = ?", (site, key)
        ).fetchall()
        visitors.update(row[0] for row in rows)
        conn.execute("DELETE FROM profile_links WHERE site = ? AND key = ?", (site, key))
    profiles = 0
    all_keys = set(keys)
    for vid in visitors:
        stored = _load(conn, site, vid)
        if stored is not None:
            all_keys.update(stored.lookup_keys())
        profiles += conn.execute(
            "DELETE FROM profiles WHERE site = ? AND visitor_id = ?", (site, vid)
        ).rowcount
        conn.execute("DELETE FROM profile_links WHERE site = ? AND visitor_id = ?", (site, vid))
    deliveries = 0
    rows = conn.execute(
        "SELECT e.id, e.record FROM events e WHERE e.site = ? AND EXISTS ("
        " SELECT 1 FROM deliveries d WHERE d.event_ref = e.id"
        " AND d.state IN ('pending', 'leased', 'retry', 'dead'))",
        (site,),
    ).fetchall()
    owners: list[str | None] = [*visitors] or [None]
    for event_ref, record in rows:
        if not any(record_carries(loads(record), vid, all_keys) for vid in owners):
            continue
        text = f"{DeadReason.ERASED.value}: erasure request"
        erase_dead_tx(conn, event_ref=event_ref, text=text, now=now)  # dead ones lose evidence
        erase_orders_tx(conn, event_ref=event_ref)  # its orders leave the conversion gap
        deliveries += conn.execute(
            "UPDATE deliveries SET state = 'dead', reason = ?, not_before = ?, updated_at = ?"
            " WHERE event_ref = ? AND state IN ('pending', 'leased', 'retry')",
            (text, now, now, event_ref),
        ).rowcount
        conn.execute("UPDATE events SET record = ? WHERE id = ?", (b"{}", event_ref))
    return EraseResult(profiles=profiles, deliveries=deliveries)


def expire_profiles_tx(conn: sqlite3.Connection, *, cutoff: float) -> int:
    """Delete profiles last seen before the cutoff, with their links."""
    conn.execute(
        "DELETE FROM profile_links WHERE (site, visitor_id) IN"
        " (SELECT site, visitor_id FROM profiles WHERE last_seen < ?)",
        (cutoff,),
    )
    return conn.execute("DELETE FROM profiles WHERE last_seen < ?", (cutoff,)).rowcount


PROFILE_SITES_RECHECK: Final = 1.0
"""Seconds before `has_profiles` reads again a site it found without profiles."""


def _touch_and_append_tx(
    conn: sqlite3.Connection,
    *,
    site: str,
    visitor_id: str,
    update: ProfileUpdate,
    now: float,
    events_for: Callable[[VisitorProfile], Sequence[NewEvent]],
    cutoff: float,
    merge_seconds: float,
) -> tuple[VisitorProfile, list[AppendResult]]:
    profile = touch_profile_tx(conn, site=site, visitor_id=visitor_id, update=update, now=now)
    events = tuple(events_for(profile))
    if not events:
        return profile, []
    return profile, _append_tx(
        conn, events=events, now=now, cutoff=cutoff, merge_seconds=merge_seconds
    )


class SqliteProfiles:
    """`ProfileStore` on SQLite: a mixin of `SqliteStore`."""

    _profile_sites: set[str] | None = None
    """Sites known to have profiles (None: not read yet; see `has_profiles`)."""
    _profile_sites_at = 0.0
    """When `has_profiles` last read the sites (monotonic clock)."""

    async def has_profiles(self: _ProfileHost, site: str) -> bool:
        """Return whether the site has any visitor profile (cached: a yes for good; a no is
        read again once PROFILE_SITES_RECHECK has passed, since another process sharing the
        file, `run --workers N`, may have written the site's first profile)."""
        if self._profile_sites is None:
            rows = await self._read(
                lambda c: c.execute("SELECT DISTINCT site FROM profiles").fetchall()
            )
            self._profile_sites = {row[0] for row in rows}
            self._profile_sites_at = time.monotonic()
        elif (
            site not in self._profile_sites
            and time.monotonic() - self._profile_sites_at >= PROFILE_SITES_RECHECK
        ):
            self._profile_sites_at = time.monotonic()
            found = await self._read(
                lambda c: c.execute(
                    "SELECT 1 FROM profiles WHERE site = ? LIMIT 1", (site,)
                ).fetchone()
            )
            if found is not None:
                self._profile_sites.add(site)
        return site in self._profile_sites

    async def touch_profile(
        self: _ProfileHost, site: str, visitor_id: str, update: ProfileUpdate, now: float
    ) -> VisitorProfile:
        if self._profile_sites is not None:
            self._profile_sites.add(site)
        return await self._write(
            partial(touch_profile_tx, site=site, visitor_id=visitor_id, update=update, now=now)
        )

    async def touch_and_append(
        self: _ProfileHost,
        site: str,
        visitor_id: str,
        update: ProfileUpdate,
        now: float,
        events_for: Callable[[VisitorProfile], Sequence[NewEvent]],
    ) -> tuple[VisitorProfile, list[AppendResult]]:
        if self._profile_sites is not None:
            self._profile_sites.add(site)
        self._sweep_debt += 4  # a hit's event or two, a route or two each
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[VisitorProfile, list[AppendResult]]] = loop.create_future()
        job = _Job(
            partial(
                _touch_and_append_tx,
                site=site,
                visitor_id=visitor_id,
                update=update,
                now=now,
                events_for=events_for,
                cutoff=now - self.dedup_seconds,
                merge_seconds=self.merge_seconds,
            ),
            loop,
            future,
        )
        job.now, job.touch = now, _Touch(site, visitor_id, update, events_for)
        self._writer.submit(job)
        try:
            outcome = await future
        except (sqlite3.Error, OSError) as exc:
            self.availability.failed(exc)
            raise
        if self.availability.reason is not None:
            self.availability.succeeded()
        return outcome

    async def find_profiles(
        self: _ProfileHost, site: str, queries: Sequence[ProfileQuery]
    ) -> list[VisitorProfile | None]:
        if not queries:
            return []
        return await _indexed_read(
            self, partial(find_profiles_tx, site=site, queries=tuple(queries))
        )

    async def find_identities(
        self: _ProfileHost, site: str, queries: Sequence[ProfileQuery]
    ) -> list[Identity]:
        if not queries:
            return []
        return await _indexed_read(
            self, partial(find_identities_tx, site=site, queries=tuple(queries))
        )

    async def erase(
        self: _ProfileHost, site: str, *, visitor_id: str | None, keys: Sequence[str], now: float
    ) -> EraseResult:
        return await self._write(
            partial(erase_tx, site=site, visitor_id=visitor_id, keys=tuple(keys), now=now)
        )

    async def expire_profiles(self: _ProfileHost, now: float, ttl_seconds: float) -> int:
        return await self._write(partial(expire_profiles_tx, cutoff=now - ttl_seconds))


class _ProfileHost(SqliteHost, Protocol):
    _profile_sites: set[str] | None
    _profile_sites_at: float


async def _indexed_read(host: SqliteHost, read: Callable[[sqlite3.Connection], T]) -> T:
    """Run a few indexed look-ups: on the loop's own connection when the writer runs on the
    loop (cheaper than a round trip to the reader thread: two thread switches on a busy core),
    else, or while the write lock is taken, on the reader thread."""
    writer = host._writer
    if isinstance(writer, _LoopWorker):
        try:
            return writer.run_now(read)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
    return await host._read(read)
