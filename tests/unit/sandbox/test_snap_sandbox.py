"""Tests for the local Snap Conversions API v3 emulator (gateway.sandbox.snap)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.sandbox.snap import SNAP_SANDBOX, SnapSandbox, create_app

NOW = 1_705_508_777
PIXEL = "5bf81ee1-15b1-4dc1-b636-d7dae49b950e"
TOKEN = "snap-token"
URL = f"/v3/{PIXEL}/events?access_token={TOKEN}"
DAY = 86_400


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def purchase(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_name": "PURCHASE",
        "event_time": NOW - 60,
        "event_id": "order-1",
        "action_source": "WEB",
        "event_source_url": "https://shop.example/thanks",
        "user_data": {
            "em": [sha("person@example.com")],
            "ph": [sha("448444124653")],
            "client_ip_address": "203.0.113.7",
            "client_user_agent": "Mozilla/5.0",
            "sc_click_id": "click-1",
            "sc_cookie1": "8c2e5a0b-3d4f-4a6b-9c8d-1e2f3a4b5c6d",
        },
        "custom_data": {"value": 49.9, "currency": "EUR", "order_id": "order-1"},
    }
    event.update(overrides)
    return event


def user(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = dict(purchase()["user_data"])
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


@pytest.fixture
def sandbox() -> SnapSandbox:
    return SnapSandbox(access_tokens={TOKEN}, clock=lambda: float(NOW), max_batch=5)


@pytest.fixture
async def client(aiohttp_client: Any, sandbox: SnapSandbox) -> TestClient[Any, Any]:
    test_client: TestClient[Any, Any] = await aiohttp_client(sandbox.app())
    return test_client


async def post(
    client: TestClient[Any, Any], *events: dict[str, Any], url: str = URL
) -> tuple[int, Any]:
    resp = await client.post(url, json={"data": list(events)})
    return resp.status, await resp.json()


async def test_valid_purchase_is_accepted_and_recorded(
    client: TestClient[Any, Any], sandbox: SnapSandbox
) -> None:
    status, answer = await post(client, purchase())
    assert (status, answer["status"]) == (200, "VALID")
    [recorded] = sandbox.recorder.accepted
    assert recorded["event_id"] == "order-1"
    assert recorded["_pixel_id"] == PIXEL
    assert recorded["_test"] is False


async def test_validate_endpoint_records_test_events(
    client: TestClient[Any, Any], sandbox: SnapSandbox
) -> None:
    url = f"/v3/{PIXEL}/events/validate?access_token={TOKEN}"
    status, _ = await post(client, purchase(), url=url)
    assert status == 200
    assert sandbox.recorder.accepted[0]["_test"] is True


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        (f"/v3/{PIXEL}/events", {}),
        (f"/v3/{PIXEL}/events?access_token=wrong", {}),
        (f"/v3/{PIXEL}/events", {"Authorization": "Bearer wrong"}),
    ],
)
async def test_missing_or_wrong_token_is_401(
    client: TestClient[Any, Any], sandbox: SnapSandbox, url: str, headers: dict[str, str]
) -> None:
    resp = await client.post(url, json={"data": [purchase()]}, headers=headers)
    assert resp.status == 401
    assert (await resp.json())["status"] == "INVALID"
    assert sandbox.recorder.accepted == []


async def test_bearer_token_is_accepted(client: TestClient[Any, Any]) -> None:
    resp = await client.post(
        f"/v3/{PIXEL}/events",
        json={"data": [purchase()]},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert resp.status == 200


@pytest.mark.parametrize(
    ("event", "path", "code"),
    [
        (purchase(event_name="Purchase"), "event_name", "INVALID_FIELD"),
        (purchase(action_source="website"), "action_source", "INVALID_FIELD"),
        (purchase(event_time=(NOW - 60) * 1000), "event_time", "INVALID_FIELD"),
        (purchase(event_time=NOW + 3600), "event_time", "INVALID_FIELD"),
        (purchase(event_time=NOW - 38 * DAY), "event_time", "EVENT_TOO_OLD"),
        (purchase(event_source_url=None), "event_source_url", "INVALID_FIELD"),
        (purchase(user_data=user(em=["Person@Example.com"])), "user_data.em", "NOT_HASHED"),
        (purchase(user_data=user(ph="448444124653")), "user_data.ph", "NOT_HASHED"),
        (purchase(user_data=user(sc_cookie1=sha("x"))), "user_data.sc_cookie1", "HASHED_ID"),
        (purchase(user_data=user(client_ip_address="999.1.1.1")), "user_data.client_ip_address",
         "INVALID_FIELD"),
        (purchase(user_data=user(fbp="fb.1.1.1")), "user_data.fbp", "INVALID_FIELD"),
        (purchase(user_data={"client_ip_address": "203.0.113.7"}), "user_data",
         "MISSING_IDENTIFIER"),
        (purchase(custom_data={"value": 1}), "custom_data", "INVALID_FIELD"),
        (purchase(custom_data={"value": 1, "currency": "eur"}), "custom_data.currency",
         "INVALID_FIELD"),
    ],
)  # fmt: skip
async def test_one_bad_event_rejects_the_request_naming_it(
    client: TestClient[Any, Any], sandbox: SnapSandbox, event: dict[str, Any], path: str, code: str
) -> None:
    status, answer = await post(client, purchase(event_id="good"), event)
    assert status == 400
    assert answer["status"] == "INVALID"
    assert answer["event"] == 1
    assert answer["errors"]["codes"] == [code]
    assert answer["errors"]["error_msgs"][0].startswith(f"data[1].{path}:")
    assert sandbox.recorder.accepted == [], "nothing of a rejected request is recorded"
    assert sandbox.recorder.rejected[0]["event_ids"] == ["good", "order-1"]


async def test_ip_and_user_agent_alone_are_enough(client: TestClient[Any, Any]) -> None:
    page_view = purchase(
        event_name="PAGE_VIEW",
        user_data={"client_ip_address": "2001:db8::1", "client_user_agent": "UA"},
        custom_data=None,
    )
    status, _ = await post(client, page_view)
    assert status == 200


async def test_batch_limit_and_bad_bodies(client: TestClient[Any, Any]) -> None:
    status, answer = await post(client, *[purchase(event_id=str(i)) for i in range(6)])
    assert status == 400
    assert "at most 5" in answer["reason"]
    assert "event" not in answer
    resp = await client.post(URL, data=b"{nope", headers={"Content-Type": "application/json"})
    assert resp.status == 400
    status, _ = await post(client)
    assert status == 400


async def test_faults(client: TestClient[Any, Any], sandbox: SnapSandbox) -> None:
    sandbox.faults.burst_429 = 1
    resp = await client.post(URL, json={"data": [purchase()]})
    assert resp.status == 429
    assert "Retry-After" not in resp.headers, "Snap sends no Retry-After"
    sandbox.faults.error_rate = 1.0
    sandbox.faults.error_status = 502
    assert (await post(client, purchase()))[0] == 502
    sandbox.faults.error_rate = 0.0
    sandbox.faults.token_expired = True
    assert (await post(client, purchase()))[0] == 401
    sandbox.faults.token_expired = False
    sandbox.faults.reject_event_ids = {"order-1"}
    status, answer = await post(client, purchase(event_id="a"), purchase())
    assert (status, answer["event"]) == (400, 1)
    assert sandbox.recorder.accepted == []
    sandbox.faults.reject_event_ids = set()
    assert (await post(client, purchase()))[0] == 200
    assert len(sandbox.recorder.accepted) == 1


async def test_control_routes(client: TestClient[Any, Any], sandbox: SnapSandbox) -> None:
    resp = await client.post("/_sandbox/faults", json={"burst_429": 2})
    assert (await resp.json())["burst_429"] == 2
    assert (await client.post("/_sandbox/faults", json={"nope": 1})).status == 400
    await post(client, purchase())
    assert (await (await client.get("/_sandbox/events")).json())["requests"] == 1
    assert "Snap CAPI sandbox" in await (await client.get("/")).text()
    await client.post("/_sandbox/reset")
    assert sandbox.faults.burst_429 == 0
    assert sandbox.recorder.requests == 0


def test_create_app_exposes_the_sandbox() -> None:
    app = create_app(access_tokens={TOKEN})
    assert isinstance(app[SNAP_SANDBOX], SnapSandbox)
