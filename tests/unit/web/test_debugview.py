"""web.debugview: the received ring keeps exactly a site's last N events, by reference."""

from __future__ import annotations

from gateway.store.base import AppendResult, NewEvent
from gateway.web.debugview import ReceivedLog


def new(i: int, site: str = "shop") -> NewEvent:
    return NewEvent(site, "Purchase", f"e-{i}", 1.79e9, b'{"e":"Purchase"}', (f"{site}:meta",))


def test_keeps_the_last_n_of_single_and_batched_appends() -> None:
    ticks = iter([10.0, 11.0, 12.0])
    log = ReceivedLog({"shop": 4, "quiet": 0}, lambda: next(ticks))
    assert set(log.rings) == {"shop"}  # a site with 0 keeps no ring at all
    first = [new(0)]
    log.received(first, [AppendResult(1, 0)])
    log.received([new(i) for i in range(1, 4)], [AppendResult(1, 0)] * 3)
    log.received([new(4), new(5)], [AppendResult(0, 1), AppendResult(1, 0)])
    kept = log.newest("shop")
    assert [n.event_id for n, _, _ in kept] == ["e-5", "e-4", "e-3", "e-2"]
    assert [at for _, _, at in kept] == [12.0, 12.0, 11.0, 11.0]
    assert kept[1][1] == AppendResult(0, 1)
    log.received([new(9, "quiet")], [AppendResult(1, 0)])  # no ring: nothing, no clock read
    log.received([], [])
    assert log.newest("quiet") == []
    assert log.newest("elsewhere") == []


def test_keeps_references_not_copies() -> None:
    log = ReceivedLog({"shop": 2}, lambda: 1.0)
    event = new(1)
    log.received([event], [AppendResult(1, 0)])
    assert log.newest("shop")[0][0] is event
