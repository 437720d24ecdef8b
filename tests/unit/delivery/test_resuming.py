"""The shared-resume check of a route's worker (gateway/delivery/resuming.py) on a fake clock
and a fake store: only while paused, at most once per `resume_check`, and a resume recorded by
another process lifts the pause as a local one does."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from conftest import FakeClock

from gateway.delivery.judging import Sent
from gateway.delivery.settings import WorkerSettings
from gateway.delivery.worker import Worker
from gateway.destinations.base import Paused

ROUTE = "shop:meta"
SETTINGS = WorkerSettings(pause_seconds=600.0, poll_interval=0.2, resume_check=2.0)


class FakeStore:
    """The store calls a worker makes while idle or paused, counted; `resumes` is what other
    processes recorded (`lift_pause`)."""

    def __init__(self) -> None:
        self.resumes: dict[str, float] = {}
        self.calls: list[str] = []

    async def resumed_since(self, routes: Sequence[str], since: float) -> Mapping[str, float]:
        self.calls.append("resumed_since")
        return {r: at for r, at in self.resumes.items() if r in routes and at > since}

    async def release_waiting(self, route: str, now: float) -> int:
        self.calls.append("release_waiting")
        return 0

    async def lease(self, route: str, limit: int, now: float, lease_seconds: float) -> list[Any]:
        self.calls.append("lease")
        return []

    async def mark_retry(self, ids: Sequence[int], *args: Any, **kwargs: Any) -> None:
        self.calls.append("mark_retry")


def worker_on(store: FakeStore, clock: FakeClock) -> Worker:
    destination: Any = SimpleNamespace(hash_rules="meta", max_batch=100)
    store_: Any = store
    return Worker(
        ROUTE,
        destination,
        store_,
        httpx.AsyncClient(),
        clock=clock,
        rng=random.Random(1),
        settings=SETTINGS,
    )


async def pause(worker: Worker) -> None:
    """The platform refused the credentials (the worker's own path for that answer)."""
    await worker._record(Paused("token expired"), [], Sent(401, 0, 0))
    assert worker.paused


async def test_a_worker_that_is_not_paused_reads_no_resumes() -> None:
    store, clock = FakeStore(), FakeClock()
    worker = worker_on(store, clock)
    for _ in range(20):
        assert await worker.run_once() == 0
        clock.advance(1.0)
    assert store.calls == ["lease"] * 20
    assert worker._pause_sleep(clock(), 5.0) == 5.0  # the idle sleep is not cut


async def test_a_resume_recorded_elsewhere_lifts_the_pause_within_one_check(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, clock = FakeStore(), FakeClock()
    worker = worker_on(store, clock)
    await pause(worker)
    store.calls.clear()
    began = clock()
    assert await worker.run_once() == 0  # the first check, right after the pause
    assert store.calls == ["resumed_since"]
    for _ in range(3):  # within the check interval: no read, no lease
        clock.advance(0.5)
        assert await worker.run_once() == 0
    assert store.calls == ["resumed_since"]
    # the paused sleep ends by the next check, not after the 600 s pause
    assert worker._pause_sleep(clock(), 600.0) == pytest.approx(began + 2.0 - clock())

    store.resumes[ROUTE] = began - 1.0  # a resume from before the pause: stale
    clock.advance(0.6)
    assert await worker.run_once() == 0
    assert worker.paused
    assert store.calls == ["resumed_since"] * 2

    caplog.set_level(logging.INFO, logger="signalgate.delivery")
    caplog.clear()
    store.resumes[ROUTE] = clock()  # another process resumed the route
    clock.advance(2.0)
    assert await worker.run_once() == 0  # lifted, then leased (nothing left in the fake)
    assert store.calls == ["resumed_since"] * 3 + ["release_waiting", "lease"]
    assert not worker.paused
    assert worker.pauses == 1
    assert worker.health()["paused"] is False
    assert [r.getMessage() for r in caplog.records] == ["Route resumed by the operator."]

    store.calls.clear()
    clock.advance(5.0)
    assert await worker.run_once() == 0
    assert store.calls == ["lease"]  # not paused any more: no read


async def test_a_retry_after_wait_is_no_pause_and_reads_nothing() -> None:
    store, clock = FakeStore(), FakeClock()
    worker = worker_on(store, clock)
    worker.resume_at = clock() + 60.0  # a 429's Retry-After, no refused credentials
    for _ in range(5):
        assert await worker.run_once() == 0
        clock.advance(3.0)
    assert store.calls == []
