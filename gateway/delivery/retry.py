"""Pure retry policy: exponential backoff with full jitter that honours Retry-After."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff = uniform(0, min(cap, base * 2**attempts)), never sooner than Retry-After."""

    base: float = 1.0
    cap: float = 600.0

    def delay(self, attempts: int, jitter: float, retry_after: float | None = None) -> float:
        """Return seconds to wait after the `attempts`-th failure; `jitter` is uniform [0, 1)."""
        ceiling = min(self.cap, self.base * (2.0 ** min(max(attempts, 0), 32)))
        wait = max(0.0, min(jitter, 1.0)) * ceiling
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait
