"""POST /v1/events on the fast lane: the same answers as aiohttp's, committed before the 202."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from typing import Any

import pytest
from conftest import API_KEY, runtime_of
from rawhttp import Answer, Conn

from gateway.store.base import DeliveryState
from gateway.web.fastlane import LANE, Lane

NOW = int(time.time())


def post(body: bytes, key: str | None = API_KEY, **headers: str) -> bytes:
    lines = ["POST /v1/events HTTP/1.1", "Host: gw.test", f"Content-Length: {len(body)}"]
    if key is not None:
        lines.append(f"Authorization: Bearer {key}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def events(*items: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(items)}).encode()


def purchase(order: str, **user: Any) -> dict[str, Any]:
    return {
        "event": "Purchase",
        "time": NOW,
        "url": "https://shop.example/thanks",
        "user": {"email": "Jane@Example.com", "phone": "+1 650 555 1212", **user},
        "data": {"value": 10.5, "currency": "EUR", "order_id": order},
    }


# (id, body with {n} where a per-connection unique id goes, key, extra headers)
CASES: list[tuple[str, str, str | None, dict[str, str]]] = [
    ("one", events(purchase("o-{n}-1")).decode(), API_KEY, {}),
    ("batch", events(*(purchase(f"o-{{n}}-b{i}") for i in range(20))).decode(), API_KEY, {}),
    ("repeat-is-deduplicated", events(purchase("o-{n}-1")).decode(), API_KEY, {}),
    ("warning", events(purchase("o-{n}-w", phone="12")).decode(), API_KEY, {}),
    ("mixed", events(purchase("o-{n}-m"), {"event": ""}).decode(), API_KEY, {}),
    ("all-rejected", events({"event": "Purchase", "url": "nope"}).decode(), API_KEY, {}),
    ("not-json", "not json", API_KEY, {}),
    ("empty", "", API_KEY, {}),
    ("not-events", '{"evnts": []}', API_KEY, {}),
    ("no-key", events(purchase("o-{n}-k")).decode(), None, {}),
    ("wrong-key", events(purchase("o-{n}-k")).decode(), "wrong-key-0123456789", {}),
    ("request-id", events(purchase("o-{n}-r")).decode(), API_KEY, {"X_Request_Id": "abc-123"}),
]


@pytest.fixture
async def client(make_config: Any, gateway: Any) -> Any:
    return await gateway(make_config(), run_workers=False)


@pytest.fixture
async def connect(client: Any) -> Any:
    opened: list[Conn] = []

    async def open_one() -> Conn:
        reader, writer = await asyncio.open_connection(client.host, client.port)
        opened.append(Conn(reader, writer))
        return opened[-1]

    yield open_one
    for conn in opened:
        conn.close()
        await conn.writer.wait_closed()


def comparable(answer: Answer) -> tuple[int, dict[str, str], Any]:
    headers = {k: v for k, v in answer.headers.items() if k not in ("date", "content-length")}
    try:
        body: Any = json.loads(answer.body)
    except ValueError:
        body = answer.body
    return answer.status, headers, body


async def test_lane_answers_every_case_as_aiohttp_does(client: Any, connect: Any) -> None:
    lane: Lane = client.app[LANE]
    slow = await connect()
    assert (await slow.ask(b"GET /nope HTTP/1.1\r\nHost: gw.test\r\n\r\n")).status == 404
    assert lane.handed_over == 1  # this connection is aiohttp's from now on
    fast = await connect()
    before = lane.fast
    statuses = []
    for name, template, key, headers in CASES:
        expected = await slow.ask(post(template.replace("{n}", "slow").encode(), key, **headers))
        got = await fast.ask(post(template.replace("{n}", "fast").encode(), key, **headers))
        assert comparable(got) == comparable(expected), name
        statuses.append(got.status)
    assert lane.fast - before == len(CASES)  # every one of them answered by the lane
    assert lane.handed_over == 1
    assert set(statuses) == {202, 422, 400, 401}


async def test_oversized_and_compressed_bodies_go_to_aiohttp(client: Any, connect: Any) -> None:
    lane: Lane = client.app[LANE]
    conn = await connect()
    limit = runtime_of(client).config.server.max_body_bytes
    answer = await conn.ask(post(b"x" * (limit + 1)))
    assert answer.status == 413
    assert lane.handed_over == 1
    zipped = await connect()
    answer = await zipped.ask(post(gzip.compress(events(purchase("gz"))), Content_Encoding="gzip"))
    assert answer.status == 202
    assert json.loads(answer.body)["accepted"] == 1
    assert lane.handed_over == 2


async def test_a_lane_202_means_the_events_are_committed(client: Any, connect: Any) -> None:
    conn = await connect()
    store = runtime_of(client).store
    for i in range(30):
        answer = await conn.ask(post(events(purchase(f"durable-{i}"))))
        assert answer.status == 202, answer.body
        counts = await store.counts()
        assert sum(n for (_, state), n in counts.items() if state is DeliveryState.PENDING) == (
            i + 1
        )
