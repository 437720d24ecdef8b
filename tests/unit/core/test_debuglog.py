"""core.debuglog: a route's sent log keeps exactly its last N events, newest first."""

from __future__ import annotations

import pytest

from gateway.core.debuglog import SentLog, SentRequest
from gateway.core.event import Event, Source


def event(i: int) -> Event:
    return Event("Purchase", f"e-{i}", 1_790_000_000, Source.WEBSITE)


def test_keeps_exactly_the_last_n_newest_first() -> None:
    log = SentLog(3)
    first = SentRequest(1.0, "https://graph.example/v1/1/events", 200, 4)
    log.add(first, [event(i) for i in range(4)], [("delivered", None)] * 4)
    second = SentRequest(2.0, "https://graph.example/v1/1/events", 400, 1)
    log.add(second, [event(4)], [("dead", "platform_rejected: HTTP 400")])
    kept = log.newest()
    assert [e.event.event_id for e in kept] == ["e-4", "e-3", "e-2"]
    assert len(log) == 3
    assert log.capacity == 3
    assert kept[0].request is second
    assert kept[0].outcome == "dead"
    assert kept[1].request is first
    assert kept[1].reason is None


def test_events_and_fates_must_pair_up() -> None:
    log = SentLog(5)
    with pytest.raises(ValueError, match="shorter"):
        log.add(SentRequest(1.0, "https://x.example/", 200, 2), [event(1), event(2)], [])


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least one"):
        SentLog(0)
