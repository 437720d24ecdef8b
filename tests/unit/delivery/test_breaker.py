"""The circuit breaker's state machine (pure: time is an argument)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.delivery.breaker import Action, Breaker, BreakerPolicy, BreakerState

T0 = 1_000.0


def test_closed_sends_full_batches() -> None:
    breaker = Breaker()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.decide(T0) is Action.SEND
    assert breaker.wait_seconds(T0) == 0.0
    assert breaker.succeeded(T0) is False  # success while closed closes nothing


def test_failure_opens_and_probe_waits_for_its_time() -> None:
    breaker = Breaker(BreakerPolicy(probe_min=5.0, probe_max=30.0))
    breaker.failed(T0, "HTTP 503")
    assert breaker.state is BreakerState.OPEN
    assert breaker.reason == "HTTP 503"
    assert breaker.decide(T0 + 4.9) is Action.WAIT
    assert breaker.wait_seconds(T0 + 1.0) == pytest.approx(4.0)
    assert breaker.decide(T0 + 5.0) is Action.PROBE


def test_probe_interval_doubles_to_the_cap() -> None:
    breaker = Breaker(BreakerPolicy(probe_min=5.0, probe_max=30.0))
    now = T0
    waits = []
    for _ in range(6):
        breaker.failed(now, "timeout")
        waits.append(breaker.next_probe_at - now)
        now = breaker.next_probe_at
    assert waits == [5.0, 10.0, 20.0, 30.0, 30.0, 30.0]
    assert breaker.opens == 1  # it opened once and stayed open


def test_retry_after_delays_the_probe_but_never_hastens_it() -> None:
    breaker = Breaker(BreakerPolicy(probe_min=5.0, probe_max=30.0))
    breaker.failed(T0, "HTTP 429", retry_after=120.0)
    assert breaker.next_probe_at == T0 + 120.0  # beyond the cap: the platform asked
    breaker.failed(T0 + 120.0, "HTTP 429", retry_after=0.5)
    assert breaker.next_probe_at == T0 + 130.0  # the grown interval (10 s) wins over 0.5 s


def test_one_probe_at_a_time() -> None:
    breaker = Breaker(BreakerPolicy(probe_min=1.0, probe_max=1.0))
    breaker.failed(T0, "timeout")
    assert breaker.decide(T0 + 1.0) is Action.PROBE
    breaker.probe_started()
    assert breaker.decide(T0 + 50.0) is Action.WAIT  # in flight, however long it takes
    breaker.probe_abandoned()
    assert breaker.decide(T0 + 50.0) is Action.PROBE


def test_probe_started_while_closed_changes_nothing() -> None:
    breaker = Breaker()
    breaker.probe_started()
    assert breaker.decide(T0) is Action.SEND


def test_successful_probe_closes_and_resets_the_interval() -> None:
    breaker = Breaker(BreakerPolicy(probe_min=5.0, probe_max=30.0))
    for i in range(4):
        breaker.failed(T0 + i, "HTTP 502")
    breaker.probe_started()
    assert breaker.succeeded(T0 + 100.0) is True
    assert breaker.state is BreakerState.CLOSED
    assert breaker.decide(T0 + 100.0) is Action.SEND
    assert breaker.reason is None
    breaker.failed(T0 + 200.0, "HTTP 502")
    assert breaker.next_probe_at == T0 + 205.0  # back to the first interval
    assert breaker.opens == 2


def test_snapshot_has_state_and_times_only() -> None:
    breaker = Breaker(BreakerPolicy(probe_min=5.0, probe_max=30.0))
    assert breaker.snapshot(T0)["breaker"] == "closed"
    breaker.failed(T0, "HTTP 503")
    snap = breaker.snapshot(T0 + 2.0)
    assert snap == {
        "breaker": "open",
        "breaker_reason": "HTTP 503",
        "breaker_failures": 1,
        "breaker_open_seconds": 2.0,
        "next_probe_seconds": 3.0,
    }


@pytest.mark.parametrize(("lo", "hi", "batch"), [(-1.0, 5.0, 1), (10.0, 5.0, 1), (1.0, 5.0, 0)])
def test_policy_rejects_nonsense(lo: float, hi: float, batch: int) -> None:
    with pytest.raises(ValueError, match="probe"):
        BreakerPolicy(probe_min=lo, probe_max=hi, probe_batch=batch)


OUTCOMES = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=100.0),  # seconds until the worker looks again
        st.sampled_from(["ok", "fail", "fail_after", "abandon"]),
        st.floats(min_value=0.0, max_value=200.0),  # the Retry-After of "fail_after"
    ),
    max_size=60,
)


@given(
    steps=OUTCOMES,
    probe_min=st.floats(min_value=0.0, max_value=20.0),
    extra=st.floats(min_value=0.0, max_value=100.0),
)
@settings(max_examples=300, deadline=None)
def test_any_sequence_keeps_the_invariants(
    steps: list[tuple[float, str, float]], probe_min: float, extra: float
) -> None:
    policy = BreakerPolicy(probe_min=probe_min, probe_max=probe_min + extra)
    breaker = Breaker(policy)
    now = T0
    last: str | None = None
    for dt, outcome, after in steps:
        now += dt
        action = breaker.decide(now)
        if action is Action.WAIT:
            assert breaker.state is BreakerState.OPEN
            continue
        if action is Action.PROBE:
            assert breaker.state is BreakerState.OPEN
            assert now >= breaker.next_probe_at
        breaker.probe_started()
        if breaker.state is BreakerState.OPEN:
            assert breaker.decide(now + 1e6) is Action.WAIT  # never two probes in flight
        if outcome == "ok":
            was_open = breaker.state is BreakerState.OPEN
            assert breaker.succeeded(now) is was_open
            last = outcome
        elif outcome == "abandon":
            breaker.probe_abandoned()
            continue
        else:
            retry_after = after if outcome == "fail_after" else None
            breaker.failed(now, "HTTP 503", retry_after)
            wait = breaker.next_probe_at - now
            assert wait >= policy.probe_min - 1e-6  # `now + wait - now` rounds
            assert wait <= max(policy.probe_max, retry_after or 0.0) + 1e-6
            if retry_after is not None:
                assert wait >= retry_after - 1e-6
            last = outcome
        assert breaker.probing is False
        assert (breaker.state is BreakerState.CLOSED) == (last in (None, "ok"))
        assert breaker.decide(now) in (Action.SEND, Action.WAIT, Action.PROBE)


@given(
    down_for=st.floats(min_value=1.0, max_value=600.0),
    probe_min=st.floats(min_value=0.5, max_value=10.0),
    probe_max=st.floats(min_value=10.0, max_value=30.0),
)
@settings(max_examples=200, deadline=None)
def test_a_worker_driven_by_it_is_gentle_while_down_and_quick_after(
    down_for: float, probe_min: float, probe_max: float
) -> None:
    """Simulate a worker polling every 0.1 s against a platform down for `down_for` seconds."""
    breaker = Breaker(BreakerPolicy(probe_min=probe_min, probe_max=probe_max))
    sent: list[float] = []
    delivered_at: float | None = None
    now = 0.0
    while delivered_at is None and now < down_for + 10 * probe_max:
        if breaker.decide(now) is not Action.WAIT:
            breaker.probe_started()
            sent.append(now)
            if now < down_for:
                breaker.failed(now, "HTTP 503")
            else:
                breaker.succeeded(now)
                delivered_at = now
        now = round(now + 0.1, 6)
    assert delivered_at is not None
    assert delivered_at - down_for <= probe_max + 0.2  # back within one capped interval
    failures = [t for t in sent if t < down_for]
    for start in failures:  # no minute holds more than 1 + 60 / probe_min requests
        in_minute = [t for t in failures if start <= t < start + 60.0]
        assert len(in_minute) <= 1 + math.ceil(60.0 / probe_min)
    assert all(b - a >= probe_min - 0.2 for a, b in itertools.pairwise(sent))
