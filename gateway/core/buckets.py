"""Token buckets per key with a bounded table (pure: the caller passes the time).

Each key (a client address) holds up to `burst` tokens and regains `per_second`; a request
takes one. The table keeps at most `max_keys` keys: when it is full, the keys whose buckets are
full again (idle long enough to be forgotten without changing any answer) are dropped first,
then the oldest-seen ones. A shared bucket (key None) can cap the total as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Buckets"]


@dataclass
class Buckets:
    """Per-key token buckets: `take(key, now)` answers 0.0 (allowed) or the seconds to wait."""

    burst: float
    per_second: float
    max_keys: int = 4096
    _tokens: dict[str | None, tuple[float, float]] = field(default_factory=dict, repr=False)
    """key → (tokens, time they were counted), in insertion order (oldest first)."""

    def __post_init__(self) -> None:
        if self.burst < 1 or self.per_second <= 0 or self.max_keys < 1:
            raise ValueError("burst >= 1, per_second > 0 and max_keys >= 1 are required")

    def take(self, key: str | None, now: float) -> float:
        """Take one token of `key`'s bucket at time `now`; return 0.0, else seconds to wait."""
        tokens, then = self._tokens.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - then) * self.per_second)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0.0
        else:
            wait = (1.0 - tokens) / self.per_second
        if len(self._tokens) >= self.max_keys:
            self._forget(now)
        self._tokens[key] = (tokens, now)
        return wait

    def __len__(self) -> int:
        return len(self._tokens)

    def _forget(self, now: float) -> None:
        rate, burst = self.per_second, self.burst
        idle = [k for k, (t, then) in self._tokens.items() if t + (now - then) * rate >= burst]
        for key in idle:
            del self._tokens[key]
        while len(self._tokens) >= self.max_keys:
            del self._tokens[next(iter(self._tokens))]
