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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

import httpx

from gateway.core.debuglog import SentLog
from gateway.core.event import Event
from gateway.core.routing import renamed
from gateway.core.tally import RouteTally
from gateway.delivery import redact
from gateway.delivery.bounded import each_bounded
from gateway.delivery.breaker import Action, Breaker, BreakerPolicy, BreakerState
from gateway.delivery.decoded import SHARED, DecodeCache
from gateway.delivery.evidence import evidence_of
from gateway.delivery.http1 import Http1Transport
from gateway.delivery.retry import RetryPolicy
from gateway.delivery.sentlog import note_refused, note_sent
from gateway.delivery.unbind import unbind
from gateway.destinations.base import (
    BatchVerdict,
    Delivered,
    Destination,
    Outcome,
    Paused,
    Permanent,
    Retry,
)
from gateway.destinations.tokens import TokenUser
from gateway.store.availability import StoreUnavailableError
from gateway.store.base import DeadReason, Delivery, Store

log = logging.getLogger("signalgate.delivery")


class _Judged(Enum):
    FAILED = "failed"
    CLOSED = "closed"


CONCURRENT_REQUESTS = 8
"""Requests of one round a route keeps in flight when its rows need several (GA4: one user a
request), while its circuit is closed; one at a time otherwise (see `_send_groups`)."""


@dataclass(frozen=True, slots=True)
class _Sent:
    """What held when a request went out: its answer's status and the breaker / pause counts,
    so that an answer to a request sent before a concurrent one opened the circuit or paused
    the route neither closes the circuit nor lifts the pause."""

    status: int | None
    opens: int
    pauses: int


Clock = Callable[[], float]


@dataclass
class RouteStats:
    """Counters of one route since start (the store holds the durable totals)."""

    delivered: int = 0
    dead: int = 0
    retried: int = 0
    requests: int = 0
    bisections: int = 0
    latency_sum: float = 0.0
    last_error: str | None = None
    dead_reasons: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Timing knobs of a worker (from `[delivery]`)."""

    lease_seconds: float = 60.0
    poll_interval: float = 0.2
    pause_seconds: float = 300.0
    policy: RetryPolicy = RetryPolicy()
    breaker: BreakerPolicy = BreakerPolicy()


def make_client(
    timeout: float, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """Return the HTTP client of one route: no redirects followed, bounded timeouts; its
    request log lines carry no query string (tokens; gateway/delivery/redact.py). Its transport
    is `Http1Transport` (gateway/delivery/http1.py) unless one is given or the environment
    names an HTTP proxy (httpx's own transport honours it)."""
    redact.install()
    if transport is None and not urllib.request.getproxies():
        transport = Http1Transport()
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        headers={"user-agent": "signalgate/0.1"},
    )


class Worker:
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
        settings: WorkerSettings = WorkerSettings(),
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
                if not self._stop.is_set():  # a stop asked during the round ends the wait
                    self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)

    def stop(self) -> None:
        """Ask `run` to end after the batch in flight; rows not yet sent are handed back."""
        self._stop.set()
        self._wake.set()

    def resume(self) -> str | None:
        """Lift the route's pause now (an operator fixed the credentials) and wake `run`;
        return the pause's reason, None if it was not paused. The rows the pause made wait
        are due again once the caller releases them (`Store.release_waiting`)."""
        reason = self.paused_reason if self.paused else None
        if reason is not None:
            log.info("Route resumed by the operator.", extra={"route": self.route})
        self.paused_reason = None
        self.resume_at = 0.0
        self._wake.set()
        return reason

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
        if now < self.resume_at:
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

    async def _flush(self) -> None:
        """Mark the rows delivered in this round done, in one store write."""
        ids, self._done = self._done, []
        if ids:
            await self.store.mark_done(ids, self.clock())
            self.held.difference_update(ids)  # only once the fate is stored

    def _decode(self, row: Delivery) -> Event | None:
        try:
            return renamed(self.decoded.event(row.record), self.event_names)
        except (ValueError, KeyError, TypeError):
            log.exception("Unreadable outbox record.", extra={"route": self.route, "id": row.id})
            return None

    def _event_of(self, row: Delivery) -> Event | None:
        """`_decode` without its log line (the row's fate already says it is unreadable)."""
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return renamed(self.decoded.event(row.record), self.event_names)
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
        sent = _Sent(self.last_status, opens, pauses)
        judged = self._judge(verdict, sent)
        if judged is _Judged.FAILED:
            await self._wait_for_probe(group)
            return
        if verdict.bisect and len(group) > 1:
            if judged is _Judged.CLOSED:
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
        if judged is _Judged.CLOSED:
            await self._closed()  # after the probe's own rows have their fate

    async def _request(self, events: Sequence[Event]) -> BatchVerdict:
        refused = await self._refresh_token()
        if refused is not None:
            return BatchVerdict(refused)
        request = self.destination.build_request(events)
        started = self.clock()
        self.stats.requests += 1
        try:
            response = await self.client.send(request)
            await response.aread()
        except httpx.TimeoutException:
            return BatchVerdict(Retry("timeout"))
        except httpx.TransportError as exc:
            return BatchVerdict(Retry(f"transport error: {type(exc).__name__}"))
        finally:
            self.stats.latency_sum += self.clock() - started
        self.last_status = response.status_code
        try:
            verdict = self.destination.classify(events, response, self.clock())
        finally:
            unbind(response)  # freed on return, not by the cycle collector (delivery/unbind.py)
        if self.sent is not None:  # the debug view (gateway/delivery/sentlog.py)
            note_sent(self.sent, request, response.status_code, events, verdict, self.clock())
        return verdict

    async def _refresh_token(self) -> Outcome | None:
        """Fetch a new access token first when the destination needs one (TokenUser); return
        the outcome for the whole batch if that failed (the answer is the destination's to read;
        nothing of it is logged)."""
        destination = self._token_user()
        if destination is None:
            return None
        request = destination.token_request(self.clock())
        if request is None:
            return None
        self.stats.requests += 1
        try:
            response = await self.client.send(request)
            await response.aread()
        except httpx.TimeoutException:
            return Retry("token endpoint: timeout")
        except httpx.TransportError as exc:
            return Retry(f"token endpoint: transport error: {type(exc).__name__}")
        try:
            return destination.token_answer(response, self.clock())
        finally:
            unbind(response)

    def _token_user(self) -> TokenUser | None:
        """Return the destination if it fetches access tokens (TokenUser), else None; checked
        once per destination object (a runtime protocol check costs ~30 us a request)."""
        destination = self.destination
        if destination is not self._checked:
            self._checked = destination
            self._tokens = destination if isinstance(destination, TokenUser) else None
        return self._tokens

    def _judge(self, verdict: BatchVerdict, sent: _Sent) -> _Judged | None:
        """Feed the breaker with a request's fate: FAILED when the request failed as a whole,
        CLOSED when the platform answered and that closed an open circuit. A request that was
        in flight when a concurrent one opened the circuit changes the breaker no further:
        its rows wait for the probe like the others, and its answer closes nothing."""
        now = self.clock()
        outcome = verdict.outcome
        whole = verdict.per_event is None and not verdict.bisect
        if whole and isinstance(outcome, Paused):
            return None  # credentials: the route's pause handles it
        stale = sent.opens != self.breaker.opens
        if whole and isinstance(outcome, Retry):
            if stale:
                return _Judged.FAILED
            if self.breaker.state is BreakerState.CLOSED:
                log.warning(
                    "Route circuit opened: platform unavailable; probing.",
                    extra={"route": self.route, "reason": outcome.reason},
                )
            self.breaker.failed(now, outcome.reason, outcome.after)
            return _Judged.FAILED
        # The platform answered (as a whole or event by event): it is up.
        if stale:
            return None
        return _Judged.CLOSED if self.breaker.succeeded(now) else None

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

    async def _closed(self) -> None:
        try:
            released = await self.store.release_waiting(self.route, self.clock())
        except StoreUnavailableError:
            # The waiting rows still become due at the probe time they were given: later, not
            # lost (the store logged the failure once).
            released = 0
        log.info("Route circuit closed.", extra={"route": self.route, "rows": released})

    async def _apply(self, outcome: Outcome, rows: list[Delivery], sent: _Sent) -> None:
        await self._record(outcome, rows, sent)
        if not isinstance(outcome, Delivered):  # delivered rows stay held until `_flush`
            self.held.difference_update(r.id for r in rows)  # only once the fate is stored

    async def _record(self, outcome: Outcome, rows: list[Delivery], sent: _Sent) -> None:
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
