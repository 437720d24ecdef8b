"""Browser hits of the PostgreSQL store, coalesced: many `touch_and_append` calls, one append job.

A browser hit merges its visitor's profile and appends the hit's events in one transaction
(`ProfileStore.touch_and_append`). Sent one by one to the store's group commit, each hit would
cost its own profile statements inside the batch's transaction. `TouchBatcher` instead
gathers the hits that arrive while the previous group is being written and hands them to the
outbox as ONE append job whose ``prepare`` merges all their profiles set-based
(`postgres_merge.touch_profiles_tx`: three statements whatever the number of hits) and returns
all their events; the job's results are split back per hit. One group is in flight at a time,
so groups grow with load by themselves, as the outbox's own batches do, and a lone hit waits
for nothing.

If a group fails for a reason other than the database being unreachable (one hit's data
refused, say), each of its hits is written again alone, so one bad hit fails only its own
caller. A group PostgreSQL aborted for a deadlock or a serialization failure runs again whole
(`postgres_tx.again`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

from gateway.core.profile import VisitorProfile
from gateway.store.base import AppendResult, NewEvent
from gateway.store.postgres_conn import Conn, connection_error
from gateway.store.postgres_merge import Touch, touch_profiles_tx
from gateway.store.postgres_tx import Prepare, again

MAX_GROUP: Final = 256
"""Most hits merged by one append job."""

Submit = Callable[[Prepare, float], Awaitable[list[AppendResult]]]
"""Queues an append job whose events `prepare` returns (the store's `_append_job`)."""

Outcome = tuple[VisitorProfile, list[AppendResult]]


@dataclass(slots=True)
class _Hit:
    touch: Touch
    events_for: Callable[[VisitorProfile], Sequence[NewEvent]]
    future: asyncio.Future[Outcome]


class TouchBatcher:
    """Coalesces `touch_and_append` calls into append jobs (see the module docstring)."""

    def __init__(self, submit: Submit) -> None:
        self._submit = submit
        self._pending: list[_Hit] = []
        self._drainer: asyncio.Task[None] | None = None

    async def touch_and_append(
        self,
        touch: Touch,
        events_for: Callable[[VisitorProfile], Sequence[NewEvent]],
    ) -> Outcome:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._pending.append(_Hit(touch, events_for, future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain(), name="postgres-touches")
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                group = self._pending[:MAX_GROUP]
                del self._pending[:MAX_GROUP]
                await self._write(group)
        finally:
            self._drainer = None

    async def _write(self, group: list[_Hit]) -> None:
        """Write one group and resolve its futures; never raises (but for cancellation)."""
        try:
            outcomes = await again(lambda: self._once(group))
        except Exception as exc:
            if len(group) > 1 and not connection_error(exc):
                for hit in group:
                    await self._write([hit])
                return
            for hit in group:
                if not hit.future.done():
                    hit.future.set_exception(exc)
            return
        for hit, outcome in zip(group, outcomes, strict=True):
            if not hit.future.done():  # its caller may have been cancelled meanwhile
                hit.future.set_result(outcome)

    async def _once(self, group: list[_Hit]) -> list[Outcome]:
        profiles: list[VisitorProfile] = []
        sizes: list[int] = []

        async def prepare(conn: Conn) -> Sequence[NewEvent]:
            profiles[:] = await touch_profiles_tx(conn, [hit.touch for hit in group])
            events: list[NewEvent] = []
            sizes.clear()
            for hit, profile in zip(group, profiles, strict=True):
                mine = hit.events_for(profile)
                sizes.append(len(mine))
                events.extend(mine)
            return events

        results = await self._submit(prepare, max(hit.touch.now for hit in group))
        outcomes: list[Outcome] = []
        start = 0
        for profile, size in zip(profiles, sizes, strict=True):
            outcomes.append((profile, results[start : start + size]))
            start += size
        return outcomes
