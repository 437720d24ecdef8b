"""What the debug view remembers of deliveries: the last events sent to one route (no I/O).

One `SentLog` per route (site and destination), bounded by the site's `debug_events`: each entry
is an event as the worker decoded it for the platform (hashed identifiers only), the request it
travelled in (when, which endpoint without its query, the platform's HTTP status, how many
events it carried) and what the answer meant for that event. Only references are kept: the
events already exist in the worker, so recording a request costs one small tuple per event.
Nothing survives a restart, nothing is written anywhere.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import NamedTuple

from gateway.core.event import Event


class SentRequest(NamedTuple):
    """One request a route sent and the platform answered, or (endpoint and status None) the
    gateway's own refusal to send."""

    at: float
    """When the answer (or the refusal) came (the worker's clock)."""
    endpoint: str | None
    """Scheme, host and path: never the query string, where some platforms put secrets."""
    status: int | None
    """The platform's HTTP status."""
    events: int
    """How many events the request carried (0: refused unsent)."""


class SentEvent(NamedTuple):
    """One event of a sent request and its fate."""

    request: SentRequest
    event: Event
    outcome: str
    """delivered, retry, dead, paused, split (rejected as a batch: resent in halves) or refused
    (given up unsent: too old, invalid, or a test event for a platform without test mode)."""
    reason: str | None
    """The platform's reason, bounded and free of PII (as dead letters keep it)."""


class SentLog:
    """The last `capacity` events one route sent, oldest dropped first."""

    __slots__ = ("_ring",)

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a sent log holds at least one event")
        self._ring: deque[SentEvent] = deque(maxlen=capacity)

    @property
    def capacity(self) -> int:
        """How many events it keeps."""
        return self._ring.maxlen or 0

    def add(
        self,
        request: SentRequest,
        events: Sequence[Event],
        fates: Sequence[tuple[str, str | None]],
    ) -> None:
        """Remember the events of one answered request with their (outcome, reason)."""
        self._ring.extend(
            SentEvent(request, event, outcome, reason)
            for event, (outcome, reason) in zip(events, fates, strict=True)
        )

    def forget(self, drop: Callable[[Event], bool]) -> int:
        """Drop the events `drop` picks (an erasure request); return how many."""
        kept = [e for e in self._ring if not drop(e.event)]
        dropped = len(self._ring) - len(kept)
        if dropped:
            self._ring.clear()
            self._ring.extend(kept)
        return dropped

    def newest(self) -> list[SentEvent]:
        """Every event kept, newest first."""
        return list(reversed(self._ring))

    def __len__(self) -> int:
        return len(self._ring)


def event_carries(event: Event, visitor_id: str | None, keys: Collection[str]) -> bool:
    """Whether `event` belongs to the visitor or carries one of the "<key>:<digest>" keys."""
    user = event.user
    if visitor_id is not None and user.visitor_id == visitor_id:
        return True
    return bool(keys) and any(
        f"{key}:{digest}" in keys
        for ids in user.hashed.values()
        for key, digests in ids.items()
        for digest in digests
    )
