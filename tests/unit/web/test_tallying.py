"""web.tallying: what `append` returned becomes queued / deduplicated counts per route."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

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


_RESULTS = (
    AppendResult(2, 0),
    AppendResult(0, 2),
    AppendResult(1, 1, ("shop:meta",)),
    AppendResult(1, 1, ("shop:tiktok",)),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Purchase", "Lead", "Odd", "PageView"]),
            st.sampled_from(_RESULTS) | st.just(_RESULTS[0]),
        ),
        min_size=1,
        max_size=8,
    ),
    st.booleans(),
)
def test_count_appends_counts_what_count_appended_counts_event_by_event(
    rows: list[tuple[str, AppendResult]], counted_before: bool
) -> None:
    """A batch with one routes tuple may be counted whole (`Pipeline._routed` does): the same
    counts, in the same key order (/metrics lists them in it)."""
    batch = [new(name) for name, _ in rows]
    results = [result for _, result in rows]
    whole, single = IngestTally(), IngestTally()
    if counted_before:  # counters that already hold keys keep their order
        for tally in (whole, single):
            count_appended(tally, "Lead", BOTH, AppendResult(1, 1, ("shop:tiktok",)))
    count_appends(whole, BOTH, batch, results)
    for event, result in zip(batch, results, strict=True):
        count_appended(single, event.event_name, BOTH, result)
    assert list(whole.queued.items()) == list(single.queued.items())
    assert list(whole.deduplicated.items()) == list(single.deduplicated.items())
