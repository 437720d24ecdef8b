"""Dead letters over HTTP: the listing (evidence, filters, pages), replay and resume (Meta sandbox).

The 1,000-row replay runs with the delivery workers live: the sandbox refuses every event by
id (faults.reject_event_ids), each becomes a dead letter, the knob is cleared, the route is
replayed in pages and each event must reach the sandbox exactly once; a second replay sends
nothing.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from conftest import ACCESS_TOKEN, ADMIN_TOKEN, FakeClock, auth, runtime_of

from gateway.store.base import DeliveryState

ROUTE = "shop:meta"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
HEX64 = re.compile(r"[0-9a-f]{64}")


def purchase(i: int, email: str | None = None) -> dict[str, Any]:
    return {
        "event": "Purchase",
        "url": f"https://shop.example/thanks/{i}",
        "user": {
            "email": email or f"buyer.{i}@example.com",
            "ip": "203.0.113.7",
            "user_agent": "UA/1",
        },
        "data": {"value": 1 + i, "currency": "EUR", "order_id": f"order-{i}"},
    }


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.05)


async def post(client: Any, events: list[dict[str, Any]]) -> None:
    resp = await client.post("/v1/events", json={"events": events}, headers=auth())
    assert resp.status == 202, await resp.text()


async def state_counts(client: Any) -> dict[DeliveryState, int]:
    counts = await runtime_of(client).store.counts()
    return {state: n for (route, state), n in counts.items() if route == ROUTE}


async def replay_all(client: Any, page: int = 300) -> tuple[int, int]:
    """Replay every dead letter of the route in pages; return (replayed, calls)."""
    replayed = calls = 0
    after = 0
    while True:
        resp = await client.post(
            "/v1/admin/replay",
            json={"route": ROUTE, "all": True, "after": after, "limit": page},
            headers=ADMIN,
        )
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        calls += 1
        replayed += body["replayed"]
        if body["remaining"] == 0:
            return replayed, calls
        after = body["last_id"]


async def test_replay_of_1000_dead_letters_delivers_each_exactly_once(
    make_config: Any, gateway: Any, meta_sandbox: Any
) -> None:
    sandbox, base = meta_sandbox
    n = 1000
    order_ids = {f"order-{i}" for i in range(n)}
    sandbox.faults.reject_event_ids = set(order_ids)
    client = await gateway(make_config(base, meta={"max_batch": 100}))
    await post(client, [purchase(i) for i in range(n)])

    async def all_dead() -> bool:
        return (await state_counts(client)).get(DeliveryState.DEAD, 0) == n

    await until(all_dead, 90.0, "1,000 dead letters")
    assert not sandbox.recorder.accepted

    sandbox.faults.reject_event_ids = set()
    replayed, calls = await replay_all(client)
    assert (replayed, calls) == (n, 4)  # pages of 300

    async def all_accepted() -> bool:
        return (
            len(sandbox.recorder.accepted) >= n
            and (await state_counts(client)).get(DeliveryState.DONE, 0) == n
        )

    await until(all_accepted, 60.0, "the replayed rows to be delivered")
    seen = Counter(e["event_id"] for e in sandbox.recorder.accepted)
    assert set(seen) == order_ids
    assert set(seen.values()) == {1}, "an event was delivered more than once"
    assert (await state_counts(client)).get(DeliveryState.DEAD, 0) == 0

    requests = sandbox.recorder.requests
    again, _ = await replay_all(client)
    assert again == 0
    resp = await client.post(
        "/v1/admin/replay", json={"route": ROUTE, "ids": [1, 2, 3]}, headers=ADMIN
    )
    assert (await resp.json())["replayed"] == 0
    await asyncio.sleep(0.5)  # workers poll every 10 ms: anything due would have gone out
    assert sandbox.recorder.requests == requests
    assert len(sandbox.recorder.accepted) == n


async def test_listing_shows_the_payload_sent_and_the_answer_with_filters_and_pages(
    make_config: Any, gateway: Any, meta_sandbox: Any
) -> None:
    sandbox, base = meta_sandbox
    clock = FakeClock(time.time())
    client = await gateway(make_config(base), run_workers=False, clock=clock)
    worker = runtime_of(client).workers[ROUTE]
    sandbox.faults.reject_event_ids = {"order-0", "order-1", "order-2"}
    await post(client, [purchase(i, "Jane.Doe@Example.com" if i == 0 else None) for i in range(6)])
    await worker.drain()
    await post(client, [purchase(i) for i in (6, 7)])
    clock.advance(8 * 86400)  # past Meta's 7-day window: refused before sending
    await worker.drain()
    too_old_from = clock.now

    resp = await client.get(f"/v1/admin/dead?route={ROUTE}", headers=ADMIN)
    assert resp.status == 200
    text = await resp.text()
    assert "Jane.Doe@Example.com".lower() not in text.lower()  # hashed identifiers only
    assert ACCESS_TOKEN not in text  # the body only: tokens travel in the query string
    body = await resp.json()
    assert body["next_after"] is None
    dead = body["dead"]
    assert [d["event_id"] for d in dead] == ["order-0", "order-1", "order-2", "order-6", "order-7"]
    first = dead[0]
    assert first["reason"] == "invalid_field"
    assert first["sent"] is True
    assert first["replayable"] is True
    assert first["answer"]["status"] == 400
    assert "rejected by the sandbox" in first["answer"]["error"]
    sent = first["payload"]["data"][0]
    assert sent["event_id"] == "order-0"
    assert sent["custom_data"]["value"] == 1
    email = sent["user_data"]["em"]
    assert HEX64.fullmatch(email if isinstance(email, str) else email[0])
    old = dead[3]
    assert old["reason"] == "too_old"
    assert old["sent"] is False
    assert old["answer"] == {"status": None, "error": "outside the platform's time window"}
    assert old["payload"]["data"][0]["event_id"] == "order-6"

    async def ids(query: str) -> list[str]:
        resp = await client.get(f"/v1/admin/dead?{query}", headers=ADMIN)
        assert resp.status == 200, await resp.text()
        return [d["event_id"] for d in (await resp.json())["dead"]]

    assert await ids(f"route={ROUTE}&reason=too_old") == ["order-6", "order-7"]
    assert await ids("reason=invalid_field") == ["order-0", "order-1", "order-2"]
    assert await ids(f"since={too_old_from - 1}") == ["order-6", "order-7"]
    iso = datetime.fromtimestamp(too_old_from - 1, UTC).isoformat()
    assert await ids(f"since={iso.replace('+', '%2B')}") == ["order-6", "order-7"]
    assert await ids("route=shop:tiktok") == []

    pages: list[list[str]] = []
    after = 0
    while True:
        resp = await client.get(f"/v1/admin/dead?limit=2&after={after}", headers=ADMIN)
        page = await resp.json()
        pages.append([d["event_id"] for d in page["dead"]])
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert pages == [["order-0", "order-1"], ["order-2", "order-6"], ["order-7"]]

    for query, path in [
        ("reason=nope", "reason"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("after=-1", "after"),
        ("since=yesterday", "since"),
    ]:
        resp = await client.get(f"/v1/admin/dead?{query}", headers=ADMIN)
        assert resp.status == 400, query
        assert [e["path"] for e in (await resp.json())["errors"]] == [path]

    # One replayed by id, then delivered by the worker; the listing no longer shows it.
    sandbox.faults.reject_event_ids = set()
    clock.advance(-8 * 86400)  # back inside the window, or the worker gives it up again
    resp = await client.post(
        "/v1/admin/replay", json={"route": ROUTE, "ids": [dead[1]["id"]]}, headers=ADMIN
    )
    assert await resp.json() == {
        "route": ROUTE,
        "replayed": 1,
        "skipped": 0,
        "remaining": 0,
        "last_id": dead[1]["id"],
        "paused": False,
        "paused_reason": None,
    }
    await worker.drain()
    assert [e["event_id"] for e in sandbox.recorder.accepted].count("order-1") == 1
    assert "order-1" not in await ids(f"route={ROUTE}")


async def test_admin_token_is_required(make_config: Any, gateway: Any) -> None:
    client = await gateway(make_config(), run_workers=False)
    calls = [
        ("GET", "/v1/admin/dead", None),
        ("POST", "/v1/admin/replay", {"route": ROUTE, "all": True}),
        ("POST", "/v1/admin/resume", {"route": ROUTE}),
    ]
    for method, path, doc in calls:
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, auth()):
            resp = await client.request(method, path, json=doc, headers=headers)
            assert resp.status == 401, (method, path, headers)
            assert (await resp.json())["error"] == "unauthorized"
    off = await gateway(make_config(server={"admin_token": None}), run_workers=False)
    resp = await off.get("/v1/admin/dead", headers=ADMIN)
    assert resp.status == 403


async def test_replay_requests_are_checked(make_config: Any, gateway: Any) -> None:
    client = await gateway(make_config(), run_workers=False)
    bad: list[tuple[Any, str]] = [
        ({}, "route"),
        ({"route": ROUTE}, ""),
        ({"route": ROUTE, "ids": [1], "all": True}, ""),
        ({"route": ROUTE, "ids": []}, "ids"),
        ({"route": ROUTE, "ids": [1, "2"]}, "ids[1]"),
        ({"route": ROUTE, "ids": [True]}, "ids[0]"),
        ({"route": ROUTE, "all": False}, "all"),
        ({"route": ROUTE, "all": True, "reason": "erased"}, "reason"),
        ({"route": ROUTE, "all": True, "reason": "nope"}, "reason"),
        ({"route": ROUTE, "all": True, "limit": 5000}, "limit"),
        ({"route": ROUTE, "all": True, "colour": "red"}, "colour"),
        ([ROUTE], ""),
    ]
    for doc, path in bad:
        resp = await client.post("/v1/admin/replay", json=doc, headers=ADMIN)
        assert resp.status == 400, doc
        assert path in [e["path"] for e in (await resp.json())["errors"]], doc
    resp = await client.post("/v1/admin/replay", data=b"{not json", headers=ADMIN)
    assert resp.status == 400
    for path in ("/v1/admin/replay", "/v1/admin/resume"):
        resp = await client.post(path, json={"route": "shop:nowhere", "all": True}, headers=ADMIN)
        if path.endswith("resume"):
            resp = await client.post(path, json={"route": "shop:nowhere"}, headers=ADMIN)
        assert resp.status == 404
        assert (await resp.json())["errors"] == [
            {"path": "route", "reason": "not a configured <site>:<destination> route"}
        ]


async def test_resume_lifts_a_credentials_pause_at_once(
    make_config: Any, gateway: Any, meta_sandbox: Any
) -> None:
    """pause_seconds is 300: without the resume nothing would be sent during this test."""
    sandbox, base = meta_sandbox
    sandbox.faults.token_expired = True
    client = await gateway(make_config(base, delivery={"pause_seconds": 300.0}))
    worker = runtime_of(client).workers[ROUTE]
    await post(client, [purchase(i) for i in range(5)])

    async def paused() -> bool:
        return worker.paused

    await until(paused, 20.0, "the route to pause")
    resp = await client.get("/readyz")
    assert resp.status == 503  # a paused destination is not ready

    # Replay says the route is paused and does not resume it.
    resp = await client.post("/v1/admin/replay", json={"route": ROUTE, "all": True}, headers=ADMIN)
    answer = await resp.json()
    assert answer["paused"] is True
    assert answer["paused_reason"]  # the platform's refusal, e.g. an expired token
    assert worker.paused

    sandbox.faults.token_expired = False
    resp = await client.post("/v1/admin/resume", json={"route": ROUTE}, headers=ADMIN)
    assert resp.status == 200
    resumed = await resp.json()
    assert resumed["was_paused"] is True
    assert resumed["paused_reason"]
    assert resumed["released"] == 5
    assert not worker.paused

    async def delivered() -> bool:
        return len(sandbox.recorder.accepted) == 5

    await until(delivered, 20.0, "the held rows to be delivered after the resume")
    assert (await client.get("/readyz")).status == 200
    resp = await client.post("/v1/admin/resume", json={"route": ROUTE}, headers=ADMIN)
    assert await resp.json() == {
        "route": ROUTE,
        "was_paused": False,
        "paused_reason": None,
        "released": 0,
    }


async def test_a_paused_worker_stops_at_once_and_a_resume_wakes_it(
    make_config: Any, gateway: Any, meta_sandbox: Any
) -> None:
    """The pause sleep (pause_seconds 300) ends early for `stop` and for `resume`."""
    sandbox, base = meta_sandbox
    sandbox.faults.token_expired = True
    client = await gateway(
        make_config(base, delivery={"pause_seconds": 300.0, "poll_interval": 0.01}),
        run_workers=False,
    )
    worker = runtime_of(client).workers[ROUTE]
    await post(client, [purchase(0)])

    async def paused() -> bool:
        return worker.paused

    # A stop asked while the request that pauses the route is in flight.
    sandbox.faults.latency = 0.5
    task = asyncio.create_task(worker.run())
    await until(lambda: _true(sandbox.recorder.requests >= 1), 5.0, "the request")
    await asyncio.sleep(0.1)
    worker.stop()
    await asyncio.wait_for(task, 5.0)  # not after the 300 s pause
    assert worker.paused
    sandbox.faults.latency = 0.0
    worker._stop.clear()  # run it again below

    for stop in (True, False):
        task = asyncio.create_task(worker.run())
        await until(paused, 10.0, "the route to pause")
        await asyncio.sleep(0.1)  # the worker is in its pause sleep now
        if stop:
            worker.stop()
            await asyncio.wait_for(task, 5.0)  # not 300 s
            worker._stop.clear()
            continue
        sandbox.faults.token_expired = False
        worker.resume()
        await runtime_of(client).store.release_waiting(ROUTE, time.time())

        async def delivered() -> bool:
            return len(sandbox.recorder.accepted) == 1

        await until(delivered, 5.0, "the resumed worker to deliver")
        worker.stop()
        await asyncio.wait_for(task, 5.0)


async def _true(value: bool) -> bool:
    return value
