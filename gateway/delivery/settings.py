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
    policy: RetryPolicy = RetryPolicy()
    breaker: BreakerPolicy = BreakerPolicy()
