"""Delivery worker for one route: claim → build → send → classify → record.

One worker per (site, destination) route. It leases due rows from the outbox, drops those the
platform would refuse anyway (too old, invalid), sends the rest in platform-sized batches through
the route's single `httpx.AsyncClient`, and records one fate per row. A request the platform
rejected as a whole is bisected so one bad event never sinks its neighbours. A refused credential
pauses the route (no hammering) and `health()` says so.

A request that fails as a whole (5xx, timeout, connection error, 429) opens the route's circuit
breaker (gateway/delivery/breaker.py): the worker then sends only one small probe batch at a
time, at a growing interval that honours Retry-After, and the rows waiting behind it count no
attempt. The first request the platform answers closes the breaker, makes every waiting row of
the route due at once and full batches resume. Per-row backoff (`RetryPolicy`) is only for the
events a platform refuses one by one. Each route has its own worker task, lease loop and HTTP
client, so one route's outage or slowness never delays another.

`Worker` holds the round (lease, drop, group, send, bisect) and the route's lifecycle (run, stop,
pause, hand back); its mixins hold the other ideas: `Exchange` one request and its answer
(gateway/delivery/exchange.py), `Judge` what an answer means for the circuit breaker
(gateway/delivery/judging.py), `Fates` how each row's fate is stored and counted
(gateway/delivery/fates.py) and `Resuming` how a pause is lifted, here or by a resume another
process recorded in the store (gateway/delivery/resuming.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping, Sequence

import httpx

from gateway.core.debuglog import SentLog
from gateway.core.event import Event
from gateway.core.routing import renamed
from gateway.core.tally import RouteTally
from gateway.delivery.bounded import each_bounded
from gateway.delivery.breaker import Action, Breaker, BreakerState
from gateway.delivery.decoded import SHARED, DecodeCache
from gateway.delivery.exchange import Exchange
from gateway.delivery.fates import Fates
from gateway.delivery.judging import Judge, Judged, Sent
from gateway.delivery.resuming import Resuming
from gateway.delivery.routestats import RouteStats
from gateway.delivery.settings import WorkerSettings
from gateway.destinations.base import Delivered, Destination, Outcome
from gateway.destinations.tokens import TokenUser
from gateway.store.availability import StoreUnavailableError
from gateway.store.base import DeadReason, Delivery, Store

log = logging.getLogger("signalgate.delivery")


CONCURRENT_REQUESTS = 8
"""Requests of one round a route keeps in flight when its rows need several (GA4: one user a
request), while its circuit is closed; one at a time otherwise (see `_send_groups`)."""


Clock = Callable[[], float]


class Worker(Exchange, Judge, Fates, Resuming):
    """Delivers the outbox rows of one route."""

    def __init__(
        self,
        route: str,
        destination: Destination,
        store: Store,
        client: httpx.AsyncClient,
        *,
        clock: Clock,
        rng: random.Random,
        settings: WorkerSettings = WorkerSettings(),  # noqa: B008 (frozen: one shared default)
        event_names: Mapping[str, str] | None = None,
        decoded: DecodeCache = SHARED,
        sent: SentLog | None = None,
    ) -> None:
        self.route = route
        self.sent = sent
        """The debug view's log of the last events sent (None: the site keeps none)."""
        self.event_names: Mapping[str, str] = event_names or {}
        """The site's per-destination name overrides (core.routing `renamed`)."""
        self.destination = destination
        self.decoded = decoded
        self._checked: Destination | None = None
        self._tokens: TokenUser | None = None
        """Decoded records, shared with the other routes (gateway/delivery/decoded.py)."""
        self.store = store
        self.client = client
        self.clock = clock
        self.rng = rng
        self.settings = settings
        self.stats = RouteStats()
        self.tally = RouteTally(destination.hash_rules)
        """Counters by event label for /metrics (gateway/core/tally.py)."""
        self.resume_at = 0.0
        self.paused_reason: str | None = None
        self.pauses = 0
        """How often the route was paused (since start)."""
        self.paused_at = 0.0
        self._resume_checked = 0.0
        self._resume_check_failed = False
        self.breaker = Breaker(settings.breaker)
        self.held: set[int] = set()
        self._done: list[int] = []
        """Rows delivered in this round, marked done together when the round ends (`_flush`):
        one store write a round instead of one a request (GA4 sends one user's events a
        request, so a round of 500 rows was 500 writes)."""
        """Ids leased by this worker and not yet given a fate (handed back by `release`)."""
        self.last_status: int | None = None
        """HTTP status of the latest answer (kept with the dead letters it decides)."""
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        """Ends the idle / paused sleep early (`stop`, `resume`)."""

    def health(self) -> dict[str, object]:
        """Return the route's state for /readyz and the admin page."""
        now = self.clock()
        return {
            "route": self.route,
            "paused": self.paused_reason is not None and now < self.resume_at,
            "paused_reason": self.paused_reason if now < self.resume_at else None,
            "waiting_seconds": max(0.0, self.resume_at - now),
            "delivered": self.stats.delivered,
            "dead": self.stats.dead,
            "retried": self.stats.retried,
            "requests": self.stats.requests,
            "last_error": self.stats.last_error,
            **self.breaker.snapshot(now),
        }

    @property
    def paused(self) -> bool:
        """Return whether credentials were refused and the pause has not ended."""
        return self.paused_reason is not None and self.clock() < self.resume_at

    async def run(self) -> None:
        """Deliver until `stop` (or cancelled), sleeping when idle or paused."""
        while not self._stop.is_set():
            try:
                handled = await self.run_once()
            except asyncio.CancelledError:
                raise
            except StoreUnavailableError:
                handled = 0  # the store logged it once; try again at the next poll
            except Exception:
                log.exception("Delivery round failed; retrying.", extra={"route": self.route})
                handled = 0
            now = self.clock()
            wait = max(0.0, self.resume_at - now, self.breaker.wait_seconds(now))
            if handled == 0 or wait > 0:
                delay = (
                    max(wait, self.settings.poll_interval) if wait else self.settings.poll_interval
                )
                delay = self._pause_sleep(now, delay)  # a paused route checks the store
                if not self._stop.is_set():  # a stop asked during the round ends the wait
                    self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)

    def stop(self) -> None:
        """Ask `run` to end after the batch in flight; rows not yet sent are handed back."""
        self._stop.set()
        self._wake.set()

    async def release(self) -> int:
        """Hand back every row this worker leased and did not finish (shutdown): they are due
        again at once for any worker, without an attempt counted. Return how many."""
        ids = sorted(self.held)
        if not ids:
            return 0
        now = self.clock()
        await self.store.mark_retry(ids, now, "handed back at shutdown", now, count_attempt=False)
        self.held.difference_update(ids)
        return len(ids)

    async def drain(self, max_rounds: int = 100) -> int:
        """Run rounds until nothing is due (or the route waits); return rows handled."""
        total = 0
        for _ in range(max_rounds):
            handled = await self.run_once()
            total += handled
            if handled == 0:
                break
        return total

    async def run_once(self) -> int:
        """Lease one batch and give every row a fate; return rows handled (0 = idle/waiting)."""
        if self.held:
            # A round failed after its lease (e.g. the store could not write a mark): those
            # rows come back now instead of when their lease expires.
            await self.release()
        now = self.clock()
        if now < self.resume_at and not await self._resumed_elsewhere(now):
            return 0
        action = self.breaker.decide(now)
        if action is Action.WAIT:
            return 0
        limit = self.destination.max_batch
        if action is Action.PROBE:
            limit = min(limit, self.settings.breaker.probe_batch)
        rows = await self.store.lease(self.route, limit, now, self.settings.lease_seconds)
        if not rows:
            return 0
        try:
            return await self._deliver(rows, now)
        finally:
            # Nothing was sent, or the answers said nothing about the route: probe again.
            self.breaker.probe_abandoned()

    async def _deliver(self, rows: list[Delivery], now: float) -> int:
        self.held.update(r.id for r in rows)
        ready: dict[str, list[tuple[Delivery, Event]]] = {}
        for row in rows:
            event = self._decode(row)
            if event is None:
                await self._dead([row], DeadReason.INTERNAL, "stored record is unreadable")
                continue
            if self.destination.too_old(event, now):
                await self._dead([row], DeadReason.TOO_OLD, "outside the platform's time window")
                continue
            problem = self.destination.validate(event)
            if problem is not None:
                await self._dead([row], DeadReason.INVALID_FIELD, problem)
                continue
            ready.setdefault(self.destination.batch_key(event), []).append((row, event))
        try:
            await self._send_groups(list(ready.values()))
        finally:
            await self._flush()  # before any release: a delivered row is never handed back
        if self._stop.is_set():
            await self.release()
        return len(rows)

    async def _send_groups(self, groups: list[list[tuple[Delivery, Event]]]) -> None:
        """Send a round's groups: up to `CONCURRENT_REQUESTS` at once while the circuit is
        closed and the destination needs no token refresh, else one after another (a probe is
        one request). Shutting down starts no more: the rest is handed back (`release`)."""
        stopping = self._stop.is_set
        if (
            len(groups) > 1
            and self.breaker.state is BreakerState.CLOSED
            and self._token_user() is None
        ):
            await each_bounded(groups, self._send, CONCURRENT_REQUESTS, stopping)
            return
        for group in groups:
            if stopping():
                break
            await self._send(group)

    def _decode(self, row: Delivery) -> Event | None:
        try:
            return renamed(self.decoded.event(row.record), self.event_names)
        except (ValueError, KeyError, TypeError):
            log.exception("Unreadable outbox record.", extra={"route": self.route, "id": row.id})
            return None

    async def _send(self, group: Sequence[tuple[Delivery, Event]]) -> None:
        now = self.clock()
        if now < self.resume_at or self.breaker.decide(now) is Action.WAIT:
            # An earlier request in this round paused the route or opened its circuit: hand
            # the rows back untouched (no attempt), due when the route may send again.
            ids = [r.id for r, _ in group]
            at = max(self.resume_at, now + self.breaker.wait_seconds(now))
            reason = "route paused" if now < self.resume_at else "circuit open"
            await self.store.mark_retry(ids, at, reason, now, count_attempt=False)
            self.held.difference_update(ids)
            return
        self.breaker.probe_started()  # no-op while closed
        events = [e for _, e in group]
        opens, pauses = self.breaker.opens, self.pauses
        verdict = await self._request(events)
        sent = Sent(self.last_status, opens, pauses)
        judged = self._judge(verdict, sent)
        if judged is Judged.FAILED:
            await self._wait_for_probe(group)
            return
        if verdict.bisect and len(group) > 1:
            if judged is Judged.CLOSED:
                await self._closed()
            self.stats.bisections += 1
            middle = len(group) // 2
            await self._send(group[:middle])
            await self._send(group[middle:])
            return
        outcomes = verdict.per_event or (verdict.outcome,) * len(group)
        by_outcome: dict[Outcome, list[Delivery]] = {}
        accepted_at = self.clock()
        for (row, event), outcome in zip(group, outcomes, strict=True):
            by_outcome.setdefault(outcome, []).append(row)
            if isinstance(outcome, Delivered):
                self.tally.delivered_event(event, accepted_at)
        for outcome, rows in by_outcome.items():
            await self._apply(outcome, rows, sent)
        if judged is Judged.CLOSED:
            await self._closed()  # after the probe's own rows have their fate
