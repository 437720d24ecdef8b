"""Profile merges of the PostgreSQL store, set-based: any number of hits in three statements.

`touch_profiles_tx` merges a batch of hits (`Touch`: site, visitor id, update, time) into
``profiles`` and links their lookup keys in ``profile_links`` (tables: postgres_profiles.py),
inside the caller's transaction:

1. *Lock the keys*: one transaction-scoped advisory lock per (site, lookup key) the hits carry,
   all in one statement, ordered by the lock's hash (skipped when no hit carries a key). The
   links of one key are then inserted and trimmed by one transaction at a time, so a key keeps
   exactly its `MAX_LINKED_VISITORS` newest visitors whatever the number of replicas.
2. *Lock and read the profiles*: one ``INSERT … ON CONFLICT DO UPDATE`` of an empty placeholder
   per visitor, in (site, visitor id) order, creates the missing rows and locks the existing
   ones, RETURNing each row's latest committed version. A merge of the same visitor on another
   replica waits on that lock and then reads this one's result: no value is ever lost.
3. *Merge* in Python (`gateway.core.profile.merge`), hit after hit in the batch's order (one
   visitor may be hit twice in one batch), then *write* every merged profile and every new or
   refreshed link in one statement, which returns the links created;
4. *trim* the keys that got a new visitor to their newest links (only when one did).

Every transaction takes its locks in the same order (key locks by hash, then rows by key), so
two replicas merging overlapping batches wait for each other but never deadlock on these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, NamedTuple

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
from gateway.store.postgres_conn import Conn

LINK_LOCKS: Final = 0x5347_4C4B
"""The first key of the advisory locks taken per (site, lookup key): a space of its own."""


class Touch(NamedTuple):
    """One hit to merge into a visitor's profile."""

    site: str
    visitor_id: str
    update: ProfileUpdate
    now: float


LOCK_KEYS: Final = """
SELECT count(pg_advisory_xact_lock($1::int, h)) FROM (
    SELECT DISTINCT hashtext(s || chr(31) || k) AS h
    FROM unnest($2::text[], $3::text[]) AS x(s, k) ORDER BY h
) AS hashes
"""
"""Take the advisory locks (space $1) of the (site $2, lookup key $3) pairs, by hash."""

_LOCK_AND_READ: Final = """
INSERT INTO profiles AS p(site, visitor_id, first_seen, last_seen, doc)
SELECT DISTINCT ON (v.site, v.visitor_id) v.site, v.visitor_id, v.now, v.now, ''
FROM unnest($1::text[], $2::text[], $3::float8[]) AS v(site, visitor_id, now)
ORDER BY v.site, v.visitor_id, v.now
ON CONFLICT (site, visitor_id) DO UPDATE SET last_seen = p.last_seen
RETURNING p.site, p.visitor_id, p.first_seen, p.last_seen, p.doc
"""
"""Create each visitor's row (an empty placeholder, doc '') or lock the existing one, in key
order; return each row's latest committed version."""

_WRITE: Final = """
WITH saved AS (
    UPDATE profiles AS p SET last_seen = u.last_seen, doc = u.doc
    FROM unnest($1::text[], $2::text[], $3::float8[], $4::text[])
         AS u(site, visitor_id, last_seen, doc)
    WHERE p.site = u.site AND p.visitor_id = u.visitor_id
), linked AS (
    INSERT INTO profile_links AS l(site, key, visitor_id, seen)
    SELECT x.site, x.key, x.visitor_id, max(x.seen)
    FROM unnest($5::text[], $6::text[], $7::text[], $8::float8[]) AS x(site, key, visitor_id, seen)
    GROUP BY x.site, x.key, x.visitor_id
    ORDER BY x.site, x.key, x.visitor_id
    ON CONFLICT (site, key, visitor_id) DO UPDATE SET seen = greatest(l.seen, excluded.seen)
    RETURNING l.site, l.key, l.xmax = 0 AS created
)
SELECT DISTINCT site, key FROM linked WHERE created
"""
"""Store the merged profiles and link (site, key, visitor, seen) $5..$8; return the (site, key)
pairs that got a visitor they did not have (a row inserted, not updated: ``xmax = 0``)."""

_TRIM: Final = """
DELETE FROM profile_links AS l USING (
    SELECT site, key, visitor_id FROM (
        SELECT w.site, w.key, w.visitor_id,
               row_number() OVER (PARTITION BY w.site, w.key
                                  ORDER BY w.seen DESC, w.visitor_id COLLATE "C" DESC) AS n
        FROM unnest($1::text[], $2::text[]) AS t(site, key)
        JOIN profile_links AS w ON w.site = t.site AND w.key = t.key
    ) AS ranked WHERE n > $3
) AS old
WHERE l.site = old.site AND l.key = old.key AND l.visitor_id = old.visitor_id
"""
"""Keep the newest MAX_LINKED_VISITORS links of each (site $1, key $2)."""


async def touch_profiles_tx(conn: Conn, touches: Sequence[Touch]) -> list[VisitorProfile]:
    """Merge the hits in order; return each hit's profile right after its own merge (see the
    module docstring). Runs inside the caller's transaction."""
    if not touches:
        return []
    keyed = sorted(
        {(t.site, key) for t in touches if t.update.hashed for key in lookup_keys(t.update.hashed)}
    )
    if keyed:
        await conn.fetchval(LOCK_KEYS, LINK_LOCKS, [k[0] for k in keyed], [k[1] for k in keyed])
    rows = await conn.fetch(
        _LOCK_AND_READ,
        [t.site for t in touches],
        [t.visitor_id for t in touches],
        [t.now for t in touches],
    )
    state: dict[tuple[str, str], VisitorProfile | None] = {}
    for row in rows:
        site, vid, doc = row[0], row[1], row[4]
        state[site, vid] = None if doc == "" else from_json(site, vid, row[2], row[3], loads(doc))
    out: list[VisitorProfile] = []
    links: list[tuple[str, str, str, float]] = []
    for t in touches:
        old = state[t.site, t.visitor_id]
        profile = merge(old, t.site, t.visitor_id, t.update, t.now)
        state[t.site, t.visitor_id] = profile
        out.append(profile)
        given = set(lookup_keys(t.update.hashed)) if t.update.hashed else set()
        had = set(old.lookup_keys()) if old is not None else set()
        links += [
            (t.site, key, t.visitor_id, t.now)
            for key in profile.lookup_keys()
            if key in given or key not in had
        ]
    final = [p for p in state.values() if p is not None]
    created = await conn.fetch(
        _WRITE,
        [p.site for p in final],
        [p.visitor_id for p in final],
        [p.last_seen for p in final],
        [dumps(to_json(p)).decode() for p in final],
        [link[0] for link in links],
        [link[1] for link in links],
        [link[2] for link in links],
        [link[3] for link in links],
    )
    if created:
        await conn.execute(
            _TRIM, [r[0] for r in created], [r[1] for r in created], MAX_LINKED_VISITORS
        )
    return out
