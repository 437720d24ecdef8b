"""A paused worker lifts its pause when another process recorded a resume in the shared store
(gateway/delivery/resuming.py): within `WorkerSettings.resume_check`, logged and released as a
local resume; a resume recorded before the pause began lifts nothing; a worker that is not
paused never reads the record; a check the store fails keeps the pause, is logged once and
tried again; a store that cannot record a resume makes it a 503."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import pytest
from conftest import runtime_of
from test_dead_letters import ADMIN, ROUTE, post, purchase, until

from gateway.delivery.settings import WorkerSettings

CHECK = WorkerSettings().resume_check
"""Seconds between a paused worker's reads of the shared resumes (2 s)."""
LONG_PAUSE = {"pause_seconds": 600.0, "poll_interval": 0.01}
"""Only a resume can end this pause within a test."""


def count_checks(store: Any, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Spy on the store's `resumed_since`: the list of times it was called."""
    calls: list[float] = []
    read = store.resumed_since

    async def spy(routes: Sequence[str], since: float) -> Mapping[str, float]:
        calls.append(time.monotonic())
        return await read(routes, since)

    monkeypatch.setattr(store, "resumed_since", spy)
    return calls


@dataclass
class Refused:
    """A gateway whose platform refuses the token (`refused`)."""

    sandbox: Any
    client: Any
    worker: Any
    store: Any


@pytest.fixture
async def refused(gateway: Any, make_config: Any, meta_sandbox: Any) -> Refused:
    sandbox, base = meta_sandbox
    sandbox.faults.token_expired = True
    client = await gateway(make_config(base, delivery=LONG_PAUSE))
    runtime = runtime_of(client)
    return Refused(sandbox, client, runtime.workers[ROUTE], runtime.store)


async def pause_with(refused: Refused, events: int) -> None:
    """Post `events` purchases and wait for the refusal to pause the route."""
    await post(refused.client, [purchase(i) for i in range(events)])

    async def paused() -> bool:
        return bool(refused.worker.paused)

    await until(paused, 20.0, "the route to pause")


async def test_a_resume_recorded_by_another_process_lifts_the_pause(
    refused: Refused, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox, client, worker, store = refused.sandbox, refused.client, refused.worker, refused.store
    checks = count_checks(store, monkeypatch)
    await pause_with(refused, 5)
    sandbox.faults.token_expired = False

    # A resume recorded before this pause began (an older one) lifts nothing.
    await store.lift_pause(ROUTE, worker.paused_at - 1.0)
    seen = len(checks)

    async def checked_again() -> bool:
        return len(checks) >= seen + 2

    await until(checked_again, 3 * CHECK + 5.0, "two more checks of the store")
    assert worker.paused
    assert sandbox.recorder.accepted == []
    gaps = [b - a for a, b in pairwise(checks)]
    assert min(gaps) > CHECK * 0.9, gaps  # at most one read per check interval

    # Another process (another worker, a replica) records a resume: straight into the store.
    caplog.set_level(logging.INFO, logger="signalgate.delivery")
    began = time.monotonic()
    await store.lift_pause(ROUTE, time.time())

    async def delivered() -> bool:
        return len(sandbox.recorder.accepted) == 5

    await until(delivered, CHECK + 10.0, "the held rows to be delivered after the resume")
    assert time.monotonic() - began < CHECK + 5.0
    assert not worker.paused
    assert worker.pauses == 1
    assert worker.health()["paused"] is False
    lifted = [r for r in caplog.records if r.getMessage() == "Route resumed by the operator."]
    assert len(lifted) == 1
    assert getattr(lifted[0], "route", None) == ROUTE
    assert (await client.get("/readyz")).status == 200


async def test_a_worker_that_is_not_paused_reads_no_resumes(
    make_config: Any, gateway: Any, meta_sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox, base = meta_sandbox
    client = await gateway(make_config(base, delivery=LONG_PAUSE))
    runtime = runtime_of(client)
    checks = count_checks(runtime.store, monkeypatch)
    await post(client, [purchase(i) for i in range(5)])

    async def delivered() -> bool:
        return len(sandbox.recorder.accepted) == 5

    await until(delivered, 20.0, "delivery")
    await asyncio.sleep(0.5)  # dozens of idle rounds (poll_interval 0.01)
    assert checks == []


async def test_a_resume_the_store_cannot_record_is_a_503_and_resumes_nothing(
    refused: Refused, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, worker = refused.client, refused.worker
    await pause_with(refused, 1)

    async def broken(route: str, now: float) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(refused.store, "lift_pause", broken)
    resp = await client.post("/v1/admin/resume", json={"route": ROUTE}, headers=ADMIN)
    assert resp.status == 503
    assert resp.headers["Retry-After"]
    body = await resp.json()
    assert body["error"] == "store_unavailable"
    assert "nothing was resumed" in body["message"]
    assert worker.paused


async def test_a_failed_check_keeps_the_pause_logs_once_and_is_tried_again(
    refused: Refused, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox, store = refused.sandbox, refused.store
    read = store.resumed_since
    failures: list[float] = []

    async def flaky(routes: Sequence[str], since: float) -> Mapping[str, float]:
        if len(failures) < 2:
            failures.append(since)
            raise sqlite3.OperationalError("disk I/O error")
        return await read(routes, since)

    monkeypatch.setattr(store, "resumed_since", flaky)
    caplog.set_level(logging.INFO, logger="signalgate.delivery")
    await pause_with(refused, 1)
    sandbox.faults.token_expired = False
    await store.lift_pause(ROUTE, time.time())

    async def delivered() -> bool:
        return len(sandbox.recorder.accepted) == 1

    await until(delivered, 3 * CHECK + 10.0, "delivery once a check succeeds")
    assert len(failures) == 2
    warned = [r for r in caplog.records if r.getMessage().startswith("Could not read resumes")]
    assert len(warned) == 1
    assert not [r for r in caplog.records if r.exc_info]  # no "Delivery round failed."
