"""web.tallying: what `append` returned becomes queued / deduplicated counts per route."""

from __future__ import annotations

from gateway.core.event import Event, Source
from gateway.core.tally import CUSTOM, IngestTally
from gateway.store.base import AppendResult, NewEvent
from gateway.web.tallying import count_appended, count_appends, count_offered, hit_source

BOTH = ("shop:meta", "shop:tiktok")


def new(name: str, routes: tuple[str, ...] = BOTH) -> NewEvent:
    return NewEvent("shop", name, "id", 0.0, b"{}", routes)


def test_count_appends_whole_partial_and_duplicate_results() -> None:
    tally = IngestTally()
    batch = [new("Purchase"), new("Purchase"), new("Lead"), new("Odd")]
    results = [
        AppendResult(2, 0),
        AppendResult(0, 2),
        AppendResult(1, 1, ("shop:meta",)),
        AppendResult(2, 0),
    ]
    count_appends(tally, BOTH, batch, results)
    assert tally.queued == {
        ("shop:meta", "Purchase"): 1,
        ("shop:tiktok", "Purchase"): 1,
        ("shop:tiktok", "Lead"): 1,
        ("shop:meta", CUSTOM): 1,
        ("shop:tiktok", CUSTOM): 1,
    }
    assert tally.deduplicated == {
        ("shop:meta", "Purchase"): 1,
        ("shop:tiktok", "Purchase"): 1,
        ("shop:meta", "Lead"): 1,
    }


def test_count_appends_of_a_plain_batch_small_and_large() -> None:
    for size in (1, 3, 9, 100):
        tally = IngestTally()
        batch = [new("Purchase" if i % 3 else "Unusual") for i in range(size)]
        count_appends(tally, BOTH, batch, [AppendResult(2, 0)] * size)
        customs = sum(1 for i in range(size) if i % 3 == 0)
        expected = {("shop:meta", CUSTOM): customs, ("shop:tiktok", CUSTOM): customs}
        if size - customs:
            expected |= {(r, "Purchase"): size - customs for r in BOTH}
        assert tally.queued == expected
        assert tally.deduplicated == {}
    count_appends(tally, BOTH, [], [])
    assert sum(tally.queued.values()) == 2 * 100


def test_count_appended_one_event() -> None:
    tally = IngestTally()
    count_appended(tally, "PageView", BOTH, AppendResult(2, 0))
    count_appended(tally, "PageView", BOTH, AppendResult(0, 2))
    count_appended(tally, "PageView", BOTH, AppendResult(1, 1, ("shop:tiktok",)))
    assert tally.queued == {("shop:meta", "PageView"): 2, ("shop:tiktok", "PageView"): 1}
    assert tally.deduplicated == {("shop:meta", "PageView"): 1, ("shop:tiktok", "PageView"): 2}


def test_count_offered_and_hit_sources() -> None:
    tally = IngestTally()
    count_offered(tally, "shop", hit_source("meta"), Event("Lead", "e", 0, Source.WEBSITE))
    count_offered(tally, "shop", hit_source("meta"), None)
    assert hit_source("meta") is hit_source("meta")
    assert tally.offered == {("shop", "hit:meta", "Lead"): 1}
    assert tally.rejected == {("shop", "hit:meta", "invalid"): 1}
