"""Dead letters of the PostgreSQL store (`DeadLetterStore`): evidence, listing, replay, erasure.

Table ``dead_letters`` is the SQLite store's (gateway/store/sqlite_dead.py): per dead
``deliveries`` row, what the worker knew when it gave the row up (the platform's HTTP status,
NULL when the gateway's own check refused the event unsent; a bounded excerpt of its error;
the request body built for that one event: hashed identifiers only, never a token). A partial
index ``(route, id) WHERE state = 'dead'`` holds the dead rows only, so the listing and the
replay page through them in id order without visiting the delivered backlog.

`mark_dead` (gateway/store/postgres.py) hands each row's evidence to `_on_dead` in its own
transaction, right after its update; evidence is kept only for rows that are dead in that
transaction, so a late worker's mark of a row delivered since keeps nothing.

Replay is one statement: it makes the selected rows pending again exactly as an append creates
them (attempts 0, due at once) only where they are still dead (``state = 'dead'`` is re-checked
on the locked row), deletes their evidence, and is therefore idempotent: replaying a row twice,
from one replica or two at once, or one that was delivered since, sends nothing. Rows dead for
consent or erasure are never revived (`NOT_REPLAYABLE`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, Final

from gateway.store.base import (
    NOT_REPLAYABLE,
    DeadEvidence,
    DeadLetter,
    DeadPage,
    DeadQuery,
    DeliveryInfo,
    DeliveryState,
    ReplayResult,
    ReplaySelection,
)
from gateway.store.postgres_conn import Conn, Record
from gateway.store.postgres_tx import PgHost, retrying

DEAD_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS dead_letters(
    delivery_id bigint PRIMARY KEY,
    status      integer,
    answer      text NOT NULL,
    payload     bytea
);
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries(route, id) WHERE state = 'dead'
"""
"""Dead-letter evidence and the index of dead rows (idempotent: a migration that may run
again). Runs after the outbox tables exist."""

MAX_ANSWER: Final = 1000
"""Characters of the platform's error kept per dead letter."""
MAX_PAYLOAD: Final = 65536
"""Bytes of the request body kept per dead letter (one event's body is far smaller)."""

_CODE: Final = "split_part(d.reason, ':', 1)"
"""The DeadReason value of a dead row (`reason` holds "<value>: <detail>" or "<value>")."""

_KEEP: Final = """
INSERT INTO dead_letters AS x(delivery_id, status, answer, payload)
SELECT e.id, e.status, e.answer, e.payload
FROM unnest($1::bigint[], $2::int[], $3::text[], $4::bytea[]) AS e(id, status, answer, payload)
WHERE EXISTS (SELECT 1 FROM deliveries AS d WHERE d.id = e.id AND d.state = 'dead')
ORDER BY e.id
ON CONFLICT (delivery_id) DO UPDATE
SET status = excluded.status, answer = excluded.answer, payload = excluded.payload
"""
"""Keep the evidence of the rows that are dead (in this transaction, after `mark_dead`)."""

_PAGE: Final = """
SELECT d.id, d.route, e.event_name, e.event_id, d.state, d.attempts, d.reason, d.updated_at,
       e.event_time, x.delivery_id, x.status, x.answer, x.payload
FROM deliveries AS d JOIN events AS e ON e.id = d.event_ref
LEFT JOIN dead_letters AS x ON x.delivery_id = d.id
"""


def _filters(
    route: str | None, reason: str | None, since: float | None, args: list[Any]
) -> list[str]:
    """WHERE terms for the filters that are set, appending their values to `args`. The terms
    are constant SQL text; every value is a bound argument, never part of the text."""
    where = ["d.state = 'dead'"]
    if route is not None:
        args.append(route)
        where.append(f"d.route = ${len(args)}")
    if reason is not None:
        args.append(reason)
        where.append(f"{_CODE} = ${len(args)}")
    if since is not None:
        args.append(since)
        where.append(f"d.not_before >= ${len(args)}")
    return where


def _bytes(value: bytes | None) -> bytes | None:
    return None if value is None else bytes(value)


def _letter(r: Record) -> DeadLetter:
    return DeadLetter(
        info=DeliveryInfo(
            id=r[0],
            route=r[1],
            event_name=r[2],
            event_id=r[3],
            state=DeliveryState(r[4]),
            attempts=r[5],
            reason=r[6],
            updated_at=r[7],
        ),
        event_time=r[8],
        evidence=None
        if r[9] is None
        else DeadEvidence(
            status=r[10], answer=r[11], payload=None if r[12] is None else bytes(r[12])
        ),
    )


async def keep_evidence_tx(conn: Conn, *, evidence: Mapping[int, DeadEvidence]) -> None:
    """Keep each dead row's evidence (bounded); rows that are not dead keep nothing."""
    kept = sorted(evidence.items())
    if not kept:
        return
    await conn.execute(
        _KEEP,
        [i for i, _ in kept],
        [e.status for _, e in kept],
        [e.answer[:MAX_ANSWER] for _, e in kept],
        [None if e.payload is None else e.payload[:MAX_PAYLOAD] for _, e in kept],
    )


async def dead_page_tx(conn: Conn, *, query: DeadQuery) -> DeadPage:
    """One page of dead letters with their evidence, in id order (ids above `query.after`)."""
    args: list[Any] = []
    where = _filters(query.route, query.reason, query.since, args)
    args += [query.after, query.limit + 1]
    where.append(f"d.id > ${len(args) - 1}")
    sql = _PAGE + f" WHERE {' AND '.join(where)} ORDER BY d.id LIMIT ${len(args)}"
    rows = await conn.fetch(sql, *args)
    more = len(rows) > query.limit
    letters = tuple(_letter(r) for r in rows[: query.limit])
    return DeadPage(letters, letters[-1].info.id if more and letters else None)


def _replayable(selection: ReplaySelection, after: int, args: list[Any]) -> str:
    """The condition of the selection's replayable dead rows (ids above `after` unless an id
    list is given), appending its values to `args`."""
    args.append(sorted(NOT_REPLAYABLE))
    never = len(args)
    where = _filters(selection.route, selection.reason, None, args)
    where.append(f"{_CODE} <> ALL(${never}::text[])")
    if selection.ids is not None:
        args.append(sorted(set(selection.ids)))
        where.append(f"d.id = ANY(${len(args)}::bigint[])")
    else:
        args.append(after)
        where.append(f"d.id > ${len(args)}")
    return " AND ".join(where)


async def replay_tx(conn: Conn, *, selection: ReplaySelection, now: float) -> ReplayResult:
    """Make the selected replayable dead rows pending again; see the module docstring."""
    args: list[Any] = [now]
    condition = _replayable(selection, selection.after, args)
    limit = ""
    if selection.ids is None:
        args.append(selection.limit)
        limit = f" LIMIT ${len(args)}"
    sql = (
        "WITH picked AS (SELECT d.id FROM deliveries AS d"  # noqa: S608 - see _filters
        f" WHERE {condition} ORDER BY d.id{limit} FOR UPDATE),"
        " revived AS (UPDATE deliveries AS d SET state = 'pending', attempts = 0,"
        " not_before = 0, lease_until = NULL, reason = 'replayed', updated_at = $1"
        " FROM picked WHERE d.id = picked.id AND d.state = 'dead' RETURNING d.id),"
        " forgotten AS (DELETE FROM dead_letters WHERE delivery_id IN (SELECT id FROM revived))"
        " SELECT id FROM revived ORDER BY id"
    )
    ids = [row[0] for row in await conn.fetch(sql, *args)]
    if selection.ids is not None:
        asked = len(set(selection.ids))
        last = max(selection.ids, default=None)
        return ReplayResult(replayed=len(ids), skipped=asked - len(ids), last_id=last, remaining=0)
    last_id = ids[-1] if ids else None
    rest: list[Any] = []
    condition = _replayable(selection, last_id if last_id is not None else selection.after, rest)
    remaining = await conn.fetchval(
        f"SELECT count(*) FROM deliveries AS d WHERE {condition}",  # noqa: S608 - see _filters
        *rest,
    )
    return ReplayResult(replayed=len(ids), skipped=0, last_id=last_id, remaining=int(remaining))


async def erase_dead_tx(conn: Conn, *, event_refs: Sequence[int], text: str, now: float) -> None:
    """Erasure: the events' dead rows become `erased` (never replayed: their record is gone)
    and lose their evidence, whose payload holds the events' hashed identifiers."""
    await conn.execute(
        "WITH relabelled AS (UPDATE deliveries SET reason = $2, updated_at = $3"
        " WHERE event_ref = ANY($1::bigint[]) AND state = 'dead' RETURNING id)"
        " DELETE FROM dead_letters WHERE delivery_id IN"
        " (SELECT id FROM deliveries WHERE event_ref = ANY($1::bigint[]))",
        sorted(set(event_refs)),
        text,
        now,
    )


class PostgresDeadLetters:
    """`DeadLetterStore` on PostgreSQL, and the evidence `mark_dead` keeps: a mixin of
    `PostgresStore`."""

    async def _on_dead(
        self, conn: Conn, ids: Sequence[int], evidence: Mapping[int, DeadEvidence]
    ) -> None:
        await keep_evidence_tx(conn, evidence={i: evidence[i] for i in ids if i in evidence})

    async def dead_page(self: PgHost, query: DeadQuery) -> DeadPage:
        if query.limit <= 0:
            return DeadPage((), None)
        async with self._pool.acquire() as conn:
            return await dead_page_tx(conn, query=query)

    async def replay(self: PgHost, selection: ReplaySelection, now: float) -> ReplayResult:
        return await retrying(self._tx, partial(replay_tx, selection=selection, now=now))
