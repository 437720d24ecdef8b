"""Set-up and scenarios shared by the platform delivery tests (tests/integration/test_delivery_*).

Each platform's test file keeps its test names and its own assertions; what they all repeated
lives here: a sandbox served on 127.0.0.1 as a fixture, a config with one platform's destination,
the test purchase, chunked posts, bounded waits for arrivals and outbox counts, dead letters, and
the shared fault scenarios: the 5xx + 429 + one-bad-event round trip, a bad event isolated in a
big batch, an expired token pausing the route, Retry-After, and the visitor-profile round trip
through `/e`. Every helper asserts what it claims, so a test still fails when the code is wrong.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import FakeClock, auth, base_doc, runtime_of

from gateway.config import PROXY_VENDORS, Config, parse
from gateway.store.base import DeliveryState

HEX64 = re.compile(r"^[0-9a-f]{64}$")
ORIGIN = "https://www.shop.test"
TRACK_HOST = "track.shop.test"
PROFILE_SITE: dict[str, Any] = {"hosts": [TRACK_HOST], "allowed_origins": [ORIGIN]}
"""Site settings under which the browser endpoint `/e` answers for ORIGIN."""

Client = TestClient[web.Request, web.Application]


class Served(Protocol):
    def app(self) -> web.Application: ...


S = TypeVar("S", bound=Served)


class Recorder(Protocol):
    requests: int
    accepted: list[dict[str, Any]]
    rejected: list[dict[str, Any]]


class Faults(Protocol):
    token_expired: bool
    burst_429: int
    retry_after: float


class Sandbox(Protocol):
    """What the shared scenarios need of a platform sandbox."""

    @property
    def recorder(self) -> Recorder: ...

    @property
    def faults(self) -> Faults: ...


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serve a sandbox's app on 127.0.0.1:<ephemeral>; yield its base URL (no trailing '/')."""
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def sandbox_fixture(name: str, make: Callable[[], S]) -> Any:
    """A pytest fixture `name` that serves `make()`'s app and yields (sandbox, base URL)."""

    @pytest.fixture(name=name)
    async def fixture() -> AsyncIterator[tuple[S, str]]:
        sandbox = make()
        async with serve(sandbox.app()) as base:
            yield sandbox, base

    return fixture


def platform_config(
    tmp_path: Path,
    platform: str,
    settings: dict[str, Any],
    *,
    meta_base: str | None = None,
    site: dict[str, Any] | None = None,
    **sections: dict[str, Any],
) -> Config:
    """A config whose site sends to `platform` with `settings` (and to Meta when `meta_base`).

    A keyword named like the platform (`snap={"max_batch": 50}`) overrides its settings; other
    keywords (`delivery=`, `server=`) update those top-level sections.
    """
    doc = copy.deepcopy(base_doc(tmp_path, meta_base or "http://127.0.0.1:9"))
    destinations = doc["sites"][0]["destinations"]
    if meta_base is None:
        destinations.clear()
    destinations[platform] = settings | sections.pop(platform, {})
    doc["sites"][0].update(site or {})
    for name, values in sections.items():
        doc.setdefault(name, {}).update(values)
    return parse(doc, {}, tmp_path)


def purchase(
    i: int,
    *,
    email: str | None = None,
    user_agent: str = "Mozilla/5.0 (test)",
    click_ids: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Purchase number `i`: order id `order-<i>`, value 10+i EUR, e-mail, phone, IP and UA."""
    user: dict[str, Any] = {
        "email": email if email is not None else f"Customer.{i}@Example.com",
        "phone": f"+1 650 555 {i % 10000:04d}",
        "ip": "203.0.113.7",
        "user_agent": user_agent,
    }
    if click_ids is not None:
        user["click_ids"] = click_ids
    return {
        "event": "Purchase",
        "url": f"https://shop.example/thanks/{i}",
        "user": user,
        "data": {"value": 10 + i, "currency": "EUR", "order_id": f"order-{i}"},
        **extra,
    }


async def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll `predicate` every 50 ms; fail once `timeout` seconds have passed without it."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def post_accepted(client: Client, events: list[dict[str, Any]], chunk: int = 100) -> None:
    """POST `events` to /v1/events in chunks; each answer must be 202 with nothing rejected."""
    for start in range(0, len(events), chunk):
        resp = await client.post(
            "/v1/events", json={"events": events[start : start + chunk]}, headers=auth()
        )
        body = await resp.json()
        assert resp.status == 202, body
        assert body["rejected"] == []


async def post_and_drain(client: Client, route: str, events: list[dict[str, Any]]) -> None:
    """POST `events` in one request (202 expected), then drain `route` once."""
    resp = await client.post("/v1/events", json={"events": events}, headers=auth())
    assert resp.status == 202, await resp.text()
    await runtime_of(client).workers[route].drain()


async def wait_done(
    client: Client, route: str, expected: int
) -> Mapping[tuple[str, DeliveryState], int]:
    """Wait (at most ~10 s) until `route` has `expected` done rows; assert it; return counts.

    A sandbox records a batch before it answers and the worker marks it done after the answer,
    so the outbox lags the recorder a little.
    """
    store = runtime_of(client).store
    counts = await store.counts()
    for _ in range(200):
        if counts.get((route, DeliveryState.DONE), 0) == expected:
            break
        await asyncio.sleep(0.05)
        counts = await store.counts()
    assert counts.get((route, DeliveryState.DONE), 0) == expected, counts
    return counts


async def dead_reasons(client: Client, route: str) -> dict[str, str]:
    """The dead letters of `route` (first ten) as event id -> reason."""
    dead = await runtime_of(client).store.dead_letters(route, 10)
    return {d.event_id: d.reason or "" for d in dead}


async def drain(client: Client, *routes: str) -> None:
    """Drain the workers of `routes` once each, in order."""
    workers = runtime_of(client).workers
    for route in routes:
        await workers[route].drain()


async def assert_expired_token_pauses(
    gateway: Callable[..., Awaitable[Client]], sandbox: Sandbox, config: Config, route: str
) -> None:
    """Expired token: one request, the route pauses (readyz 503), then resumes after the pause.

    `config` must set `delivery.pause_seconds = 60`; the gateway runs without workers on a
    clock the scenario moves past the pause.
    """
    sandbox.faults.token_expired = True
    clock = FakeClock(time.time())
    client = await gateway(config, run_workers=False, clock=clock)
    await client.post("/v1/events", json={"events": [purchase(1), purchase(2)]}, headers=auth())
    worker = runtime_of(client).workers[route]
    await worker.drain()
    await worker.drain()
    assert sandbox.recorder.requests == 1, "a paused route does not retry the dead token"
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert "paused" in (await ready.json())["problems"][0]
    sandbox.faults.token_expired = False
    clock.advance(61)
    await worker.drain()
    assert len(sandbox.recorder.accepted) == 2
    assert (await client.get("/readyz")).status == 200


async def assert_retry_after_honoured(
    gateway: Callable[..., Awaitable[Client]], sandbox: Sandbox, config: Config, route: str
) -> None:
    """One 429 with Retry-After: 30 s: no resend after 29 s, delivered after 31 s."""
    sandbox.faults.burst_429 = 1
    sandbox.faults.retry_after = 30
    clock = FakeClock(time.time())
    client = await gateway(config, run_workers=False, clock=clock)
    await client.post("/v1/events", json={"events": [purchase(1)]}, headers=auth())
    worker = runtime_of(client).workers[route]
    await worker.drain()
    clock.advance(29)
    await worker.drain()
    assert sandbox.recorder.requests == 1, "resent before Retry-After ran out"
    clock.advance(2)
    await worker.drain()
    assert [e["event_id"] for e in sandbox.recorder.accepted] == ["order-1"]


async def round_trip_with_faults(
    client: Client,
    sandbox: Sandbox,
    route: str,
    events: list[dict[str, Any]],
    event_id: Callable[[dict[str, Any]], str],
    bad: str,
) -> list[int]:
    """Post `events` through a faulty sandbox; all but `bad` arrive exactly once and are done.

    The sandbox must answer some requests with 5xx and 429 (both are asserted) and refuse the
    event whose order id is `bad`. `event_id` reads the order id from a delivered event. Returns
    the statuses of the refused requests for the platform's own checks.
    """
    await post_accepted(client, events)
    expected = {e["data"]["order_id"] for e in events} - {bad}

    def all_arrived() -> bool:
        return len({event_id(e) for e in sandbox.recorder.accepted}) >= len(expected)

    await wait_for(all_arrived, timeout=90)
    keys = Counter(event_id(e) for e in sandbox.recorder.accepted)
    assert max(keys.values()) == 1, "an event reached the sandbox twice"
    assert set(keys) == expected
    statuses = [int(r["status"]) for r in sandbox.recorder.rejected]
    assert 429 in statuses
    assert any(s >= 500 for s in statuses)
    await wait_done(client, route, len(expected))
    return statuses


async def assert_bad_event_isolated(
    client: Client,
    sandbox: Sandbox,
    route: str,
    events: list[dict[str, Any]],
    event_id: Callable[[dict[str, Any]], str],
    bad: str,
    *reason_parts: str,
    chunk: int = 500,
) -> Any:
    """One drain of `route` delivers every event but `bad` exactly once; `bad` is dead-lettered.

    `events` are posted `chunk` to a request; the dead letter's reason starts `invalid_field`
    and contains each of `reason_parts`. Returns the worker for the platform's own checks of
    how many requests that took.
    """
    await post_accepted(client, events, chunk)
    worker = runtime_of(client).workers[route]
    await worker.drain()
    delivered = Counter(event_id(e) for e in sandbox.recorder.accepted)
    assert set(delivered) == {e["data"]["order_id"] for e in events} - {bad}
    assert max(delivered.values()) == 1, "an event reached the sandbox twice"
    await assert_only_dead_letter(client, route, bad, "invalid_field", *reason_parts)
    return worker


async def dead_after_ageing(
    client: Client, clock: FakeClock, route: str, event: dict[str, Any], days: int
) -> dict[str, str]:
    """Post `event`, move `clock` on by `days`, drain `route`; return its dead letters."""
    await client.post("/v1/events", json={"events": [event]}, headers=auth())
    clock.advance(days * 86400)
    await runtime_of(client).workers[route].drain()
    return await dead_reasons(client, route)


async def deliver_one(
    client: Client, sandbox: Sandbox, route: str, event: dict[str, Any]
) -> dict[str, Any]:
    """Post `event`, drain `route`; return the one event the sandbox accepted."""
    await client.post("/v1/events", json={"events": [event]}, headers=auth())
    await runtime_of(client).workers[route].drain()
    [accepted] = sandbox.recorder.accepted
    return accepted


def browser_headers(user_agent: str, **extra: str) -> dict[str, str]:
    """Headers of a browser on ORIGIN posting to the tracking host's `/e`."""
    return {
        "Host": TRACK_HOST,
        "Origin": ORIGIN,
        "Content-Type": "text/plain",
        "User-Agent": user_agent,
        **extra,
    }


async def visit(client: Client, url: str, headers: dict[str, str]) -> str:
    """Post a PageView of `url` to `/e`; return the visitor id of the `_sgv` cookie it sets."""
    resp = await client.post(
        "/e", data=json.dumps({"event": "PageView", "url": url}), headers=headers
    )
    assert resp.status == 204
    cookie = next(c for c in resp.headers.getall("Set-Cookie") if c.startswith("_sgv="))
    return cookie.split("=", 1)[1].split(";")[0].rsplit(".", 1)[0]


async def post_backend_for_visitor(client: Client, event: dict[str, Any], vid: str) -> None:
    """Post `event` from the backend with only an e-mail and the visitor id (profile fills in)."""
    event["user"] = {"email": "jane@example.com", "visitor_id": vid}
    resp = await client.post("/v1/events", json={"events": [event]}, headers=auth())
    assert resp.status == 202, await resp.text()


def only_meta_event(accepted: list[dict[str, Any]], event_id: str) -> str:
    """The one Meta event with `event_id`, as JSON text (to check what must not be in it)."""
    events = [e for e in accepted if e["event_id"] == event_id]
    assert len(events) == 1
    return json.dumps(events[0])


async def assert_only_dead_letter(
    client: Client, route: str, event_id: str, reason_prefix: str, *reason_parts: str
) -> None:
    """`event_id` is the one dead letter of `route`; its reason starts and contains as given."""
    dead = await dead_reasons(client, route)
    assert list(dead) == [event_id], dead
    assert dead[event_id].startswith(reason_prefix), dead[event_id]
    for part in reason_parts:
        assert part in dead[event_id], dead[event_id]


def proxy_upstreams(url: str) -> dict[str, str]:
    """Proxy settings sending every vendor's scripts and pixel hits to the fake CDN at `url`."""
    upstreams = {f"{vendor}_upstream": url for vendor in PROXY_VENDORS}
    upstreams |= {f"{v}_hits_upstream": url for v in ("meta", "tiktok", "snap", "google")}
    return upstreams
