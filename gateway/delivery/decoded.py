"""Decoded outbox records, shared by the route workers of one process.

An event sent to ten destinations is stored once and leased once per route, so each of the
ten workers used to decode the same record bytes into the same `Event` (~15-20 us each). The
`Event` is immutable (frozen dataclasses; nothing in the delivery path changes its dicts), so
the first decode serves the other routes: `DecodeCache` maps the record bytes to the event,
bounded by `size` entries, oldest dropped first. Routes move through the outbox together, so
a few thousand entries cover the rows they have in hand; a miss only costs the decode.
"""

from __future__ import annotations

from typing import Final

from gateway.core.event import Event
from gateway.core.record import decode

DEFAULT_SIZE: Final = 4096


class DecodeCache:
    """Stored record bytes → decoded Event, at most `size` entries (first in, first out)."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = max(1, size)
        self._events: dict[bytes, Event] = {}

    def event(self, record: bytes) -> Event:
        """Return the event a record holds; raise what `decode` raises for a bad record."""
        found = self._events.get(record)
        if found is not None:
            return found
        event = decode(record)
        events = self._events
        if len(events) >= self.size:
            del events[next(iter(events))]
        events[record] = event
        return event

    def __len__(self) -> int:
        return len(self._events)


SHARED: Final = DecodeCache()
"""The cache of the process's workers (`Worker` uses it unless given another)."""
