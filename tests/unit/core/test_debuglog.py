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


def test_forget_drops_one_persons_events() -> None:
    from gateway.core.debuglog import event_carries
    from gateway.core.event import User

    digest = "b" * 64
    mine = Event("Lead", "mine", 1, Source.WEBSITE, user=User(hashed={"meta": {"em": (digest,)}}))
    visitor = Event("Lead", "visit", 1, Source.WEBSITE, user=User(visitor_id="v-1"))
    log = SentLog(5)
    request = SentRequest(1.0, "https://x.example/", 200, 3)
    log.add(request, [mine, event(1), visitor], [("delivered", None)] * 3)
    assert event_carries(mine, None, {f"em:{digest}"})
    assert not event_carries(mine, None, {"em:" + "c" * 64})
    assert not event_carries(event(1), None, ())
    assert log.forget(lambda e: event_carries(e, None, {f"em:{digest}"})) == 1
    assert log.forget(lambda e: event_carries(e, "v-1", ())) == 1
    assert [e.event.event_id for e in log.newest()] == ["e-1"]
    assert log.forget(lambda e: False) == 0
