"""The timing knobs of a route's delivery worker (from `[delivery]`)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.delivery.breaker import BreakerPolicy
from gateway.delivery.retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Timing knobs of a worker (from `[delivery]`)."""

    lease_seconds: float = 60.0
    poll_interval: float = 0.2
    pause_seconds: float = 300.0
    resume_check: float = 2.0
    """Seconds between a paused route's checks for a resume recorded by another process
    (gateway/delivery/resuming.py): a resume reaches every worker within about this long."""
    policy: RetryPolicy = RetryPolicy()
    breaker: BreakerPolicy = BreakerPolicy()
