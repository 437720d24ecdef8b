"""Visitor profiles of the PostgreSQL store (`ProfileStore`): merges, cross-device links, erasure.

Tables are the SQLite store's (gateway/store/sqlite_profiles.py): ``profiles`` (one row per
site and visitor id, the profile as JSON text, no raw PII) and ``profile_links`` (a hashed
e-mail / external id / phone → every visitor id it was seen with, the `MAX_LINKED_VISITORS`
most recent ones).

Merges (gateway/store/postgres_merge.py) lock the lookup keys they link and the visitors'
rows before reading them, so merges of one visitor on any number of replicas lose nothing and a
key keeps exactly its newest visitors. `touch_and_append` gathers the hits arriving meanwhile
into one append job (gateway/store/postgres_touches.py): their profiles are merged set-based in
the transaction of the outbox's group commit that appends their events.

Erasure takes the same key locks, then locks the profiles it deletes (by visitor id, in order),
and only then deletes their links, in a statement that sees every link committed before the
locks were granted; expiry deletes a profile and its links in one statement and skips a
profile being merged at that moment. So no link outlives its profile.

Whatever deadlock remains possible (an expiry and a merge trimming links of each other's
visitors, say) is resolved by PostgreSQL aborting one transaction after its
``deadlock_timeout`` (1 s by default), which is then run again (`postgres_tx.again`).

Look-ups (`find_profiles`, `find_identities`) are one statement per request batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from types import MappingProxyType
from typing import Final, Protocol

from gateway.core.jsoncodec import dumps, loads
from gateway.core.profile import ProfileUpdate, VisitorProfile, from_json
from gateway.core.record import record_carries
from gateway.store.base import (
    AppendResult,
    DeadReason,
    EraseResult,
    Identity,
    NewEvent,
    ProfileQuery,
)
from gateway.store.postgres_conn import Conn, Record
from gateway.store.postgres_dead import erase_dead_tx
from gateway.store.postgres_merge import LINK_LOCKS, LOCK_KEYS, Touch, touch_profiles_tx
from gateway.store.postgres_orders import erase_orders_tx
from gateway.store.postgres_touches import TouchBatcher
from gateway.store.postgres_tx import PgHost, Prepare, retrying

PROFILE_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS profiles(
    site        text NOT NULL,
    visitor_id  text NOT NULL,
    first_seen  double precision NOT NULL,
    last_seen   double precision NOT NULL,
    doc         text NOT NULL,
    PRIMARY KEY(site, visitor_id)
);
CREATE INDEX IF NOT EXISTS profiles_last_seen ON profiles(last_seen);
CREATE TABLE IF NOT EXISTS profile_links(
    site        text NOT NULL,
    key         text NOT NULL,
    visitor_id  text NOT NULL,
    seen        double precision NOT NULL,
    PRIMARY KEY(site, key, visitor_id)
);
CREATE INDEX IF NOT EXISTS profile_links_visitor ON profile_links(site, visitor_id)
"""
"""Profiles and cross-device links (idempotent: a migration that may run again)."""

NO_PROFILES_SECONDS: Final = 5.0
"""How long a replica trusts that a site has no profiles before asking again."""

EXPIRE_CHUNK: Final = 1000
"""Profiles deleted per expiry statement."""

_FIND: Final = """
SELECT 0, p.visitor_id, p.visitor_id, p.first_seen, p.last_seen, p.doc FROM profiles AS p
 WHERE p.site = $1 AND p.visitor_id = ANY($2::text[])
UNION ALL
SELECT * FROM (
    SELECT DISTINCT ON (l.key) 1, l.key, p.visitor_id, p.first_seen, p.last_seen, p.doc
    FROM profile_links AS l JOIN profiles AS p ON p.site = l.site AND p.visitor_id = l.visitor_id
    WHERE l.site = $1 AND l.key = ANY($3::text[])
    ORDER BY l.key, l.seen DESC, l.visitor_id COLLATE "C" DESC
) AS newest
"""
"""The named visitors (0) and, per lookup key, the visitor most recently seen with it (1)."""

_IDENTITIES: Final = """
SELECT 0, p.visitor_id, p.visitor_id, p.first_seen, p.last_seen, p.doc FROM profiles AS p
 WHERE p.site = $1 AND p.visitor_id = ANY($2::text[])
UNION ALL
SELECT 1, l.key, p.visitor_id, p.first_seen, p.last_seen, p.doc FROM profile_links AS l
 JOIN profiles AS p ON p.site = l.site AND p.visitor_id = l.visitor_id
 WHERE l.site = $1 AND l.key = ANY($3::text[])
UNION ALL
SELECT 2, a.visitor_id, p.visitor_id, p.first_seen, p.last_seen, p.doc FROM profile_links AS a
 JOIN profile_links AS b ON b.site = a.site AND b.key = a.key
 JOIN profiles AS p ON p.site = b.site AND p.visitor_id = b.visitor_id
 WHERE a.site = $1 AND a.visitor_id = ANY($2::text[])
"""
"""One statement per request batch: the named visitors (0), the visitors linked to the events'
keys (1) and the visitors sharing a key with a named visitor (2); each branch is an index
range (the primary keys and the links' visitor index)."""

_EXPIRE: Final = """
WITH gone AS (
    DELETE FROM profiles AS p USING (
        SELECT site, visitor_id FROM profiles WHERE last_seen < $1 LIMIT $2
        FOR UPDATE SKIP LOCKED
    ) AS old
    WHERE p.site = old.site AND p.visitor_id = old.visitor_id
    RETURNING p.site, p.visitor_id
), unlinked AS (
    DELETE FROM profile_links AS l USING gone
    WHERE l.site = gone.site AND l.visitor_id = gone.visitor_id
)
SELECT count(*) FROM gone
"""
"""Delete up to $2 profiles last seen before $1 with their links; a profile being merged right
now is skipped (its merge makes it recent again)."""

_ERASABLE: Final = """
SELECT e.id, e.record FROM events AS e
WHERE e.site = $1
  AND EXISTS (SELECT 1 FROM deliveries AS d
              WHERE d.event_ref = e.id AND d.state IN ('pending', 'leased', 'retry', 'dead'))
  AND EXISTS (SELECT 1 FROM unnest($2::bytea[]) AS n WHERE position(n IN e.record) > 0)
"""
"""Events of the site still held in the outbox whose record holds one of the needles (the
visitor ids and digests erased): the candidates `record_carries` then decides on."""

_ERASE_EVENTS: Final = """
WITH live AS (
    UPDATE deliveries SET state = 'dead', reason = $2, not_before = $3, lease_until = NULL,
                          updated_at = $3
    WHERE event_ref = ANY($1::bigint[]) AND state IN ('pending', 'leased', 'retry')
    RETURNING 1
), blank AS (
    UPDATE events SET record = convert_to('{}', 'UTF8') WHERE id = ANY($1::bigint[])
)
SELECT count(*) FROM live
"""
"""Dead-letter (as erased) the events' undelivered rows and blank their records ("{}")."""


def _clock() -> float:
    """Monotonic seconds (the event loop's clock) for the has_profiles cache."""
    return asyncio.get_running_loop().time()


def _profile(site: str, row: Record) -> VisitorProfile:
    """A profile from a (…, visitor_id, first_seen, last_seen, doc) row's last four columns."""
    n = len(row)
    return from_json(site, row[n - 4], row[n - 3], row[n - 2], loads(row[n - 1]))


async def find_profiles_tx(
    conn: Conn, *, site: str, queries: Sequence[ProfileQuery]
) -> list[VisitorProfile | None]:
    """Resolve each query: by visitor id first, else by the first lookup key that is known."""
    vids = sorted({q.visitor_id for q in queries if q.visitor_id is not None})
    keys = sorted({k for q in queries for k in q.keys})
    by_vid: dict[str, VisitorProfile] = {}
    by_key: dict[str, VisitorProfile] = {}
    for row in await conn.fetch(_FIND, site, vids, keys):
        (by_key if row[0] else by_vid)[row[1]] = _profile(site, row)
    out: list[VisitorProfile | None] = []
    for query in queries:
        found = by_vid.get(query.visitor_id) if query.visitor_id is not None else None
        for key in query.keys if found is None else ():
            found = by_key.get(key)
            if found is not None:
                break
        out.append(found)
    return out


async def find_identities_tx(
    conn: Conn, *, site: str, queries: Sequence[ProfileQuery]
) -> list[Identity]:
    """Resolve each query to its named profile and every profile linked to it, in one read."""
    vids = sorted({q.visitor_id for q in queries if q.visitor_id is not None})
    keys = sorted({key for q in queries for key in q.keys})
    by_vid: dict[str, VisitorProfile] = {}
    via: tuple[dict[str, set[str]], dict[str, set[str]]] = ({}, {})
    for row in await conn.fetch(_IDENTITIES, site, vids, keys):
        kind, through, vid = row[0], row[1], row[2]
        if vid not in by_vid:
            by_vid[vid] = _profile(site, row)
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


async def erase_tx(
    conn: Conn,
    *,
    site: str,
    visitor_id: str | None,
    keys: Sequence[str],
    now: float,
) -> EraseResult:
    """Delete the profiles and dead-letter the undelivered events that carry them."""
    given = sorted(set(keys))
    visitors: set[str] = {visitor_id} if visitor_id else set()
    if given:
        await conn.fetchval(LOCK_KEYS, LINK_LOCKS, [site] * len(given), given)
        rows = await conn.fetch(
            "DELETE FROM profile_links WHERE site = $1 AND key = ANY($2::text[])"
            " RETURNING visitor_id",
            site,
            given,
        )
        visitors.update(row[0] for row in rows)
    owners = sorted(visitors)
    all_keys = set(given)
    profiles = 0
    if owners:
        stored = await conn.fetch(
            "SELECT visitor_id, first_seen, last_seen, doc FROM profiles"
            " WHERE site = $1 AND visitor_id = ANY($2::text[]) ORDER BY visitor_id FOR UPDATE",
            site,
            owners,
        )
        for row in stored:
            all_keys.update(_profile(site, row).lookup_keys())
        profiles = await conn.fetchval(
            "WITH gone AS (DELETE FROM profiles WHERE site = $1 AND visitor_id = ANY($2::text[])"
            " RETURNING 1), unlinked AS (DELETE FROM profile_links"
            " WHERE site = $1 AND visitor_id = ANY($2::text[])) SELECT count(*) FROM gone",
            site,
            owners,
        )
    # As the values appear inside the records' JSON strings (quotes, backslashes escaped).
    needles = [dumps(text)[1:-1] for text in (*owners, *(k.split(":", 1)[-1] for k in all_keys))]
    if not needles:
        return EraseResult(profiles=int(profiles), deliveries=0)
    candidates = await conn.fetch(_ERASABLE, site, needles)
    who: list[str | None] = [*owners] or [None]
    refs = [
        int(row[0])
        for row in candidates
        if any(record_carries(loads(bytes(row[1])), vid, all_keys) for vid in who)
    ]
    if not refs:
        return EraseResult(profiles=int(profiles), deliveries=0)
    text = f"{DeadReason.ERASED.value}: erasure request"
    await erase_dead_tx(conn, event_refs=refs, text=text, now=now)  # dead ones lose evidence
    await erase_orders_tx(conn, event_refs=refs)  # their orders leave the conversion gap
    deliveries = await conn.fetchval(_ERASE_EVENTS, refs, text, now)
    return EraseResult(profiles=int(profiles), deliveries=int(deliveries))


async def expire_profiles_tx(conn: Conn, *, cutoff: float) -> tuple[int, bool]:
    """Delete up to EXPIRE_CHUNK profiles last seen before `cutoff`; return (deleted, more)."""
    deleted = int(await conn.fetchval(_EXPIRE, cutoff, EXPIRE_CHUNK))
    return deleted, deleted >= EXPIRE_CHUNK


class PostgresProfiles:
    """`ProfileStore` on PostgreSQL: a mixin of `PostgresStore`."""

    _profile_sites: frozenset[str] = frozenset()
    """Sites known to have profiles (a site's profiles, once there, stay while it has
    visitors)."""
    _touches: TouchBatcher | None = None
    """Coalesces this process's browser hits (created on the first)."""
    _no_profiles_until: Mapping[str, float] = MappingProxyType({})
    """Sites found without profiles, until when (event-loop time) that answer is trusted:
    another replica may store a site's first profile at any moment."""

    async def has_profiles(self: _ProfileHost, site: str) -> bool:
        """Whether the site has profiles: cached once true, re-asked NO_PROFILES_SECONDS after
        a false answer (API-only sites cost one look-up per period, not per request)."""
        if site in self._profile_sites:
            return True
        now = _clock()
        if self._no_profiles_until.get(site, 0.0) > now:
            return False
        async with self._pool.acquire() as conn:
            found = await conn.fetchval("SELECT 1 FROM profiles WHERE site = $1 LIMIT 1", site)
        if found is not None:
            self._profile_sites = self._profile_sites | {site}
            return True
        self._no_profiles_until = {**self._no_profiles_until, site: now + NO_PROFILES_SECONDS}
        return False

    async def touch_profile(
        self: _ProfileHost, site: str, visitor_id: str, update: ProfileUpdate, now: float
    ) -> VisitorProfile:
        if site not in self._profile_sites:
            self._profile_sites = self._profile_sites | {site}
        touch = Touch(site, visitor_id, update, now)

        async def one(conn: Conn) -> VisitorProfile:
            (profile,) = await touch_profiles_tx(conn, [touch])
            return profile

        return await retrying(self._tx, one)

    async def touch_and_append(
        self: _ProfileHost,
        site: str,
        visitor_id: str,
        update: ProfileUpdate,
        now: float,
        events_for: Callable[[VisitorProfile], Sequence[NewEvent]],
    ) -> tuple[VisitorProfile, list[AppendResult]]:
        """Merged with the hits arriving meanwhile (`postgres_touches.TouchBatcher`), inside the
        transaction of the outbox's group commit that appends their events."""
        if site not in self._profile_sites:
            self._profile_sites = self._profile_sites | {site}
        touches = self._touches
        if touches is None:
            append_job = self._append_job

            async def submit(prepare: Prepare, at: float) -> list[AppendResult]:
                return await append_job((), at, prepare=prepare)

            touches = self._touches = TouchBatcher(submit)
        return await touches.touch_and_append(Touch(site, visitor_id, update, now), events_for)

    async def find_profiles(
        self: PgHost, site: str, queries: Sequence[ProfileQuery]
    ) -> list[VisitorProfile | None]:
        if not queries:
            return []
        async with self._pool.acquire() as conn:
            return await find_profiles_tx(conn, site=site, queries=tuple(queries))

    async def find_identities(
        self: PgHost, site: str, queries: Sequence[ProfileQuery]
    ) -> list[Identity]:
        if not queries:
            return []
        async with self._pool.acquire() as conn:
            return await find_identities_tx(conn, site=site, queries=tuple(queries))

    async def erase(
        self: PgHost, site: str, *, visitor_id: str | None, keys: Sequence[str], now: float
    ) -> EraseResult:
        return await retrying(
            self._tx,
            partial(erase_tx, site=site, visitor_id=visitor_id, keys=tuple(keys), now=now),
        )

    async def expire_profiles(self: PgHost, now: float, ttl_seconds: float) -> int:
        total = 0
        while True:
            deleted, more = await retrying(
                self._tx, partial(expire_profiles_tx, cutoff=now - ttl_seconds)
            )
            total += deleted
            if not more:
                return total


class _ProfileHost(PgHost, Protocol):
    _profile_sites: frozenset[str]
    _no_profiles_until: Mapping[str, float]
    _touches: TouchBatcher | None
