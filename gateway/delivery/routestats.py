"""The in-memory counters of one route since start (the store holds the durable totals)."""

from __future__ import annotations

from dataclasses import dataclass, field


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
