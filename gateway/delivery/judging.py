"""Judging a request's answer for the route's circuit breaker: did the platform fail as a whole
(open the circuit or keep it open), answer (close it), or was the answer stale?

`Judge` is a mixin of `Worker` (gateway/delivery/worker.py); the breaker's own state machine is
gateway/delivery/breaker.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from gateway.delivery.breaker import Breaker, BreakerState
from gateway.destinations.base import BatchVerdict, Paused, Retry
from gateway.store.availability import StoreUnavailableError
from gateway.store.base import Store

log = logging.getLogger("signalgate.delivery")


class Judged(Enum):
    FAILED = "failed"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Sent:
    """What held when a request went out: its answer's status and the breaker / pause counts,
    so that an answer to a request sent before a concurrent one opened the circuit or paused
    the route neither closes the circuit nor lifts the pause."""

    status: int | None
    opens: int
    pauses: int


class Judge:
    """Feeds the route's breaker with each request's fate: a mixin of `Worker`."""

    route: str
    store: Store
    clock: Callable[[], float]
    breaker: Breaker

    def _judge(self, verdict: BatchVerdict, sent: Sent) -> Judged | None:
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
                return Judged.FAILED
            if self.breaker.state is BreakerState.CLOSED:
                log.warning(
                    "Route circuit opened: platform unavailable; probing.",
                    extra={"route": self.route, "reason": outcome.reason},
                )
            self.breaker.failed(now, outcome.reason, outcome.after)
            return Judged.FAILED
        # The platform answered (as a whole or event by event): it is up.
        if stale:
            return None
        return Judged.CLOSED if self.breaker.succeeded(now) else None

    async def _closed(self) -> None:
        try:
            released = await self.store.release_waiting(self.route, self.clock())
        except StoreUnavailableError:
            # The waiting rows still become due at the probe time they were given: later, not
            # lost (the store logged the failure once).
            released = 0
        log.info("Route circuit closed.", extra={"route": self.route, "rows": released})
