"""Recording the fate of leased rows: done, retried, dead-lettered or waiting for a probe or the
end of a pause, with the route's counters, tally and log lines that go with each fate.

`Fates` is a mixin of `Worker` (gateway/delivery/worker.py). A row stays in `held` until its
fate is stored, so a failed round hands back exactly the rows that have none.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Mapping, Sequence

from gateway.core.debuglog import SentLog
from gateway.core.event import Event
from gateway.core.routing import renamed
from gateway.core.tally import RouteTally
from gateway.delivery.breaker import Breaker
from gateway.delivery.decoded import DecodeCache
from gateway.delivery.evidence import evidence_of
from gateway.delivery.judging import Sent
from gateway.delivery.routestats import RouteStats
from gateway.delivery.sentlog import note_refused
from gateway.delivery.settings import WorkerSettings
from gateway.destinations.base import Delivered, Destination, Outcome, Paused, Permanent, Retry
from gateway.store.base import DeadReason, Delivery, Store

log = logging.getLogger("signalgate.delivery")


class Fates:
    """Stores each row's fate and counts it: a mixin of `Worker`."""

    route: str
    destination: Destination
    store: Store
    clock: Callable[[], float]
    rng: random.Random
    settings: WorkerSettings
    sent: SentLog | None
    event_names: Mapping[str, str]
    decoded: DecodeCache
    stats: RouteStats
    tally: RouteTally
    breaker: Breaker
    held: set[int]
    _done: list[int]
    resume_at: float
    paused_reason: str | None
    paused_at: float
    pauses: int

    async def _flush(self) -> None:
        """Mark the rows delivered in this round done, in one store write."""
        ids, self._done = self._done, []
        if ids:
            await self.store.mark_done(ids, self.clock())
            self.held.difference_update(ids)  # only once the fate is stored

    def _event_of(self, row: Delivery) -> Event | None:
        """`_decode` without its log line (the row's fate already says it is unreadable)."""
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return renamed(self.decoded.event(row.record), self.event_names)
        return None

    async def _wait_for_probe(self, group: Sequence[tuple[Delivery, Event]]) -> None:
        """Schedule the rows of a request that failed as a whole for the next probe (one
        attempt each), instead of giving each its own backoff."""
        now = self.clock()
        ids = [r.id for r, _ in group]
        reason = self.breaker.reason or "route unavailable"
        self.stats.retried += len(ids)
        self.tally.retried_rows(r.event_name for r, _ in group)
        self.stats.last_error = reason
        await self.store.mark_retry(ids, self.breaker.next_probe_at, reason, now)
        self.held.difference_update(ids)

    async def _apply(self, outcome: Outcome, rows: list[Delivery], sent: Sent) -> None:
        await self._record(outcome, rows, sent)
        if not isinstance(outcome, Delivered):  # delivered rows stay held until `_flush`
            self.held.difference_update(r.id for r in rows)  # only once the fate is stored

    async def _record(self, outcome: Outcome, rows: list[Delivery], sent: Sent) -> None:
        now = self.clock()
        ids = [r.id for r in rows]
        match outcome:
            case Delivered():
                self._done.extend(ids)  # marked done at the end of the round (`_flush`)
                self.stats.delivered += len(ids)
                if self.paused_reason is not None and sent.pauses == self.pauses:
                    log.info("Route resumed.", extra={"route": self.route})
                    self.paused_reason = None
            case Retry(reason=reason, after=after):
                self.stats.retried += len(ids)
                self.tally.retried_rows(r.event_name for r in rows)
                self.stats.last_error = reason
                if after is not None:
                    self.resume_at = max(self.resume_at, now + after)
                for row in rows:
                    wait = self.settings.policy.delay(row.attempts, self.rng.random(), after)
                    await self.store.mark_retry([row.id], now + wait, reason, now)
                log.warning(
                    "Delivery will be retried.",
                    extra={"route": self.route, "rows": len(ids), "reason": reason},
                )
            case Permanent(reason=reason, detail=detail):
                await self._dead(rows, reason, detail, sent.status)
            case Paused(reason=reason):
                self.stats.last_error = reason
                if self.paused_reason is None:
                    log.error(
                        "Route paused: credentials or configuration refused.",
                        extra={"route": self.route, "reason": reason},
                    )
                self.paused_reason = reason
                self.paused_at = now
                self.pauses += 1
                self.resume_at = now + self.settings.pause_seconds
                await self.store.mark_retry(ids, self.resume_at, reason, now, count_attempt=False)

    async def _dead(
        self, rows: Sequence[Delivery], reason: DeadReason, detail: str, status: int | None = None
    ) -> None:
        """Give rows up; `status` is the platform's answer (None: refused before sending)."""
        evidence = evidence_of(self.destination, rows, self._event_of, status, detail)
        await self.store.mark_dead(
            [r.id for r in rows], reason, detail, self.clock(), evidence=evidence
        )
        self.held.difference_update(r.id for r in rows)
        if self.sent is not None and status is None:  # refused unsent: the debug view says so
            note_refused(self.sent, rows, self._event_of, f"{reason.value}: {detail}", self.clock())
        self.stats.dead += len(rows)
        self.tally.dead_rows((r.event_name for r in rows), reason.value)
        self.stats.dead_reasons[reason.value] = self.stats.dead_reasons.get(reason.value, 0) + len(
            rows
        )
        self.stats.last_error = f"{reason.value}: {detail}"
        level = logging.ERROR if reason is DeadReason.INTERNAL else logging.WARNING
        log.log(
            level,
            "Delivery dead-lettered.",
            extra={"route": self.route, "rows": len(rows), "reason": reason.value},
        )
