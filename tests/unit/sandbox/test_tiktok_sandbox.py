"""Tests for the local TikTok Events API 2.0 emulator (gateway.sandbox.tiktok)."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.sandbox.tiktok import TIKTOK_SANDBOX, TikTokSandbox, create_app

NOW = 1_750_000_000
TOKEN = "test-token"
URL = "/open_api/v1.3/event/track/"
DAY = 86_400


def sha(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def purchase(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event": "Purchase",
        "event_time": NOW - 60,
        "event_id": "order-1001",
        "user": {
            "email": sha("john_smith@gmail.com"),
            "phone": [sha("+16505551212")],
            "ttclid": "E.C.P.abc",
            "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH",
            "ip": "2001:db8::1",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        },
        "page": {"url": "https://shop.example/done", "referrer": "https://shop.example/cart"},
        "properties": {
            "value": 42.5,
            "currency": "USD",
            "content_type": "product",
            "contents": [{"content_id": "SKU-1", "quantity": 2, "price": 21.25}],
        },
    }
    event.update(overrides)
    return event


def body(*events: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"event_source": "web", "event_source_id": "CPIXEL123", "data": list(events), **extra}


HEADERS = {"Access-Token": TOKEN}


@pytest.fixture
def sandbox() -> TikTokSandbox:
    return TikTokSandbox(access_tokens={TOKEN}, clock=lambda: float(NOW), max_batch=5)


@pytest.fixture
async def client(sandbox: TikTokSandbox) -> Any:
    c = TestClient(TestServer(sandbox.app(), host="127.0.0.1"))
    await c.start_server()
    yield c
    await c.close()


async def post(client: Any, doc: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    resp = await client.post(URL, json=doc, headers=HEADERS if headers is None else headers)
    return resp.status, await resp.json()


async def test_accepts_a_valid_batch_and_records_it(client: Any, sandbox: TikTokSandbox) -> None:
    status, answer = await post(client, body(purchase(), test_event_code="TEST1"))
    assert status == 200
    assert answer["code"] == 0
    assert answer["message"] == "OK"
    assert len(answer["request_id"]) == 32
    [record] = sandbox.recorder.accepted
    assert record["event_id"] == "order-1001"
    assert record["_event_source_id"] == "CPIXEL123"
    assert record["_test_event_code"] == "TEST1"


@pytest.mark.parametrize(
    ("headers", "message"),
    [({}, "missing"), ({"Access-Token": "wrong"}, "invalid")],
)
async def test_auth_problems_are_40001_under_http_200(
    client: Any, sandbox: TikTokSandbox, headers: dict[str, str], message: str
) -> None:
    status, answer = await post(client, body(purchase()), headers)
    assert (status, answer["code"]) == (200, 40001)
    assert message in answer["message"]
    assert sandbox.recorder.accepted == []


def broken(path: str, value: Any) -> dict[str, Any]:
    event = copy.deepcopy(purchase())
    node = event
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return event


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        ("event", "", "event"),
        ("event", "Add To Cart!", "event"),
        ("event_time", (NOW - 60) * 1000, "milliseconds"),
        ("event_time", NOW - 8 * DAY, "too old"),
        ("event_time", NOW + 3600, "future"),
        ("event_time", str(NOW), "event_time"),
        ("user.email", "john@example.com", "user.email"),
        ("user.phone", ["+16505551212"], "user.phone"),
        ("user.email", sha("x").upper(), "user.email"),
        ("user.ip", "not-an-ip", "user.ip"),
        ("user.fbp", "fb.1.2.3", "unknown user field"),
        ("page.url", KeyError, "page.url"),
        ("properties.value", "42.5", "properties.value"),
        ("properties.currency", "usd", "currency"),
        ("properties.contents", [{"id": "SKU-1"}], "content_id"),
        ("limited_data_use", "yes", "limited_data_use"),
    ],
)
async def test_one_bad_event_fails_the_whole_request_with_40002(
    client: Any, sandbox: TikTokSandbox, path: str, value: Any, where: str
) -> None:
    status, answer = await post(client, body(purchase(event_id="ok-1"), broken(path, value)))
    assert (status, answer["code"]) == (200, 40002)
    assert "data[1]" in answer["message"]
    assert where in answer["message"]
    assert sandbox.recorder.accepted == []
    assert sandbox.recorder.rejected[-1]["event_ids"] == ["ok-1", "order-1001"]


async def test_offline_events_have_a_28_day_window_and_no_page(
    client: Any, sandbox: TikTokSandbox
) -> None:
    old = purchase(event_time=NOW - 20 * DAY)
    del old["page"]
    status, answer = await post(client, {**body(old), "event_source": "offline"})
    assert (status, answer["code"]) == (200, 0)
    status, answer = await post(client, body(old))
    assert answer["code"] == 40002


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"event_source": "web", "data": [purchase()]},
        {**body(purchase()), "event_source": "website"},
        body(),
        body(*[purchase(event_id=f"e{i}") for i in range(6)]),
    ],
)
async def test_envelope_problems(client: Any, doc: Any) -> None:
    status, answer = await post(client, doc)
    assert (status, answer["code"]) == (200, 40002)


async def test_fault_knobs(client: Any, sandbox: TikTokSandbox) -> None:
    sandbox.faults.burst_429 = 1
    sandbox.faults.retry_after = 2.5
    resp = await client.post(URL, json=body(purchase()), headers=HEADERS)
    assert resp.status == 200
    assert resp.headers["Retry-After"] == "2.5"
    assert (await resp.json())["code"] == 40100

    sandbox.faults.error_rate = 1.0
    sandbox.faults.error_status = 502
    resp = await client.post(URL, json=body(purchase()), headers=HEADERS)
    assert resp.status == 502
    assert (await resp.json())["code"] == 50000
    sandbox.faults.error_rate = 0.0

    sandbox.faults.token_expired = True
    status, answer = await post(client, body(purchase()))
    assert (status, answer["code"]) == (200, 40001)
    sandbox.faults.token_expired = False

    sandbox.faults.reject_event_ids = {"order-1001"}
    status, answer = await post(client, body(purchase()))
    assert answer["code"] == 40002
    assert "reject_event_ids" in answer["message"]
    assert sandbox.recorder.accepted == []
    assert sandbox.recorder.requests == 4


async def test_control_routes(client: Any, sandbox: TikTokSandbox) -> None:
    resp = await client.post("/_sandbox/faults", json={"burst_429": 2})
    assert (await resp.json())["burst_429"] == 2
    bad = await client.post("/_sandbox/faults", json={"nope": 1})
    assert bad.status == 400
    await post(client, body(purchase()))
    page = await client.get("/")
    assert "TikTok Events API sandbox" in await page.text()
    recorded = await (await client.get("/_sandbox/events")).json()
    assert recorded["requests"] == 1
    await client.post("/_sandbox/reset")
    assert sandbox.faults.burst_429 == 0
    assert sandbox.recorder.requests == 0


def test_create_app_exposes_the_sandbox() -> None:
    app = create_app(access_tokens={TOKEN})
    assert isinstance(app[TIKTOK_SANDBOX], TikTokSandbox)
