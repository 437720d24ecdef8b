"""Pure per-route circuit breaker: whole-route outages are probed, not hammered.

One breaker per route (site and destination). It only decides; the worker does the I/O and
reports each whole request's fate back. Time comes in as an argument (no clock here).

    closed ──request failed as a whole (5xx, timeout, connection error, 429)──► open
    open   ──probe succeeded──► closed  (the worker makes every waiting row due at once)
    open   ──probe failed──► open, next probe later (interval doubles up to the cap)

Closed: the worker sends full batches. Open: the worker sends nothing but one small probe batch
once `next_probe_at` has come, and never a second probe while one is in flight. The probe
interval starts at `probe_min` and doubles with every failed probe up to `probe_max`; a
Retry-After from the platform pushes the next probe later, never sooner. A success of any
request (probe or not) closes the breaker and resets the interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class BreakerState(StrEnum):
    """Whether the route sends full batches (closed) or only probes (open)."""

    CLOSED = "closed"
    OPEN = "open"


class Action(StrEnum):
    """What the worker may do now."""

    SEND = "send"
    """Closed: lease and send full batches."""
    PROBE = "probe"
    """Open and the probe is due: lease a small batch and send one request."""
    WAIT = "wait"
    """Open and the next probe is not due yet (or one is in flight): send nothing."""


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """Probe timing of an open breaker (from `[delivery]`)."""

    probe_min: float = 5.0
    probe_max: float = 20.0
    probe_batch: int = 10

    def __post_init__(self) -> None:
        if self.probe_min < 0 or self.probe_max < self.probe_min:
            raise ValueError("need 0 <= probe_min <= probe_max")
        if self.probe_batch < 1:
            raise ValueError("probe_batch must be at least 1")

    def interval(self, failures: int) -> float:
        """Return the wait before the next probe after `failures` consecutive failures (>= 1)."""
        exponent = min(max(failures - 1, 0), 32)
        return min(self.probe_max, self.probe_min * (2.0**exponent))


class Breaker:
    """The circuit breaker of one route. Not thread-safe; one worker task owns it."""

    def __init__(self, policy: BreakerPolicy = BreakerPolicy()) -> None:
        self.policy = policy
        self.state = BreakerState.CLOSED
        self.failures = 0
        """Consecutive whole-request failures since the breaker was last closed."""
        self.next_probe_at = 0.0
        self.opened_at: float | None = None
        self.reason: str | None = None
        self.probing = False
        """A probe request is in flight."""
        self.opens = 0
        """How often the breaker opened (since start)."""

    def decide(self, now: float) -> Action:
        """Return what the worker may do at `now`."""
        if self.state is BreakerState.CLOSED:
            return Action.SEND
        if self.probing or now < self.next_probe_at:
            return Action.WAIT
        return Action.PROBE

    def wait_seconds(self, now: float) -> float:
        """Return how long nothing may be sent (0 when closed or the probe is due)."""
        if self.state is BreakerState.CLOSED:
            return 0.0
        return max(0.0, self.next_probe_at - now)

    def probe_started(self) -> None:
        """Note that the probe request is being sent (one at a time)."""
        if self.state is BreakerState.OPEN:
            self.probing = True

    def probe_abandoned(self) -> None:
        """Note that the probe ended without an answer about the route (nothing to send, or
        the events were refused one by one): the next probe may go at once."""
        self.probing = False

    def succeeded(self, now: float) -> bool:
        """Record a request the platform answered as a whole; return True when this closed an
        open breaker (the caller then makes the route's waiting rows due at once)."""
        was_open = self.state is BreakerState.OPEN
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.next_probe_at = 0.0
        self.opened_at = None
        self.reason = None
        self.probing = False
        return was_open

    def failed(self, now: float, reason: str, retry_after: float | None = None) -> None:
        """Record a request that failed as a whole: open (or keep open) and schedule the next
        probe after the grown interval, and not before Retry-After."""
        if self.state is BreakerState.CLOSED:
            self.state = BreakerState.OPEN
            self.opened_at = now
            self.opens += 1
        self.failures += 1
        self.reason = reason
        self.probing = False
        wait = self.policy.interval(self.failures)
        if retry_after is not None and retry_after > wait:
            wait = retry_after
        self.next_probe_at = now + wait

    def snapshot(self, now: float) -> dict[str, object]:
        """Return the breaker's state for route health (no request data in it)."""
        opened = 0.0 if self.opened_at is None else max(0.0, now - self.opened_at)
        return {
            "breaker": self.state.value,
            "breaker_reason": self.reason,
            "breaker_failures": self.failures,
            "breaker_open_seconds": opened,
            "next_probe_seconds": self.wait_seconds(now),
        }
