"""Token buckets of the self-check's rate limit (gateway/core/buckets.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.buckets import Buckets


def test_burst_then_refill() -> None:
    b = Buckets(burst=3, per_second=0.5)
    assert [b.take("a", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take("a", 100.0) == pytest.approx(2.0)
    assert b.take("b", 100.0) == 0.0  # another key has its own bucket
    assert b.take("a", 102.0) == 0.0  # one token back after 2 s
    assert b.take("a", 102.0) > 0


def test_refused_requests_do_not_consume() -> None:
    b = Buckets(burst=1, per_second=1.0)
    assert b.take(None, 0.0) == 0.0
    for _ in range(5):
        assert b.take(None, 0.5) == pytest.approx(0.5)
    assert b.take(None, 1.0) == 0.0


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=300))
def test_table_stays_bounded(keys: list[int]) -> None:
    b = Buckets(burst=2, per_second=1.0, max_keys=16)
    for i, key in enumerate(keys):
        b.take(str(key), i * 0.01)
        assert len(b) <= 16


@given(st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=60))
def test_never_more_than_burst_plus_refill(gaps: list[float]) -> None:
    b = Buckets(burst=5, per_second=2.0)
    now, allowed = 0.0, 0
    for gap in gaps:
        now += gap
        allowed += b.take("k", now) == 0.0
    assert allowed <= 5 + now * 2.0 + 1e-9


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="burst"):
        Buckets(burst=0, per_second=1)
