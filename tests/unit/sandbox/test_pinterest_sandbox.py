"""Tests for the local Pinterest API for Conversions emulator (gateway.sandbox.pinterest)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.sandbox.pinterest import PINTEREST_SANDBOX, PinterestSandbox, create_app

NOW = 1_705_508_777
ACCOUNT = "549755885175"
TOKEN = "pin-token"
URL = f"/v5/ad_accounts/{ACCOUNT}/events"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DAY = 86_400


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def checkout(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": NOW - 60,
        "event_id": "order-1",
        "event_source_url": "https://shop.example/thanks",
        "user_data": {
            "em": [sha("person@example.com")],
            "ph": [sha("16505551212")],
            "client_ip_address": "203.0.113.7",
            "client_user_agent": "Mozilla/5.0",
            "click_id": "dj0yJnU9b2JDcFFH",
        },
        "custom_data": {"value": "72.39", "currency": "USD", "order_id": "order-1"},
    }
    event.update(overrides)
    return event


def user(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = dict(checkout()["user_data"])
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


@pytest.fixture
def sandbox() -> PinterestSandbox:
    return PinterestSandbox(
        access_tokens={TOKEN}, ad_accounts={ACCOUNT}, clock=lambda: float(NOW), max_batch=5
    )


@pytest.fixture
async def client(aiohttp_client: Any, sandbox: PinterestSandbox) -> TestClient[Any, Any]:
    test_client: TestClient[Any, Any] = await aiohttp_client(sandbox.app())
    return test_client


async def post(
    client: TestClient[Any, Any],
    *events: dict[str, Any],
    url: str = URL,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    resp = await client.post(url, json={"data": list(events)}, headers=headers or AUTH)
    return resp.status, await resp.json()


async def test_valid_checkout_is_processed_and_recorded(
    client: TestClient[Any, Any], sandbox: PinterestSandbox
) -> None:
    status, answer = await post(client, checkout())
    assert status == 200
    assert answer["num_events_received"] == answer["num_events_processed"] == 1
    assert answer["events"][0]["status"] == "processed"
    [recorded] = sandbox.recorder.accepted
    assert recorded["event_id"] == "order-1"
    assert recorded["_ad_account_id"] == ACCOUNT
    assert recorded["_test"] is False


async def test_test_mode_is_validated_and_flagged(
    client: TestClient[Any, Any], sandbox: PinterestSandbox
) -> None:
    status, _ = await post(client, checkout(), url=URL + "?test=true")
    assert status == 200
    assert sandbox.recorder.accepted[0]["_test"] is True


@pytest.mark.parametrize(
    ("headers", "code"),
    [({}, 2), ({"Authorization": "Bearer wrong"}, 2), ({"Authorization": TOKEN}, 2)],
)
async def test_token_is_required(
    client: TestClient[Any, Any], headers: dict[str, str], code: int
) -> None:
    resp = await client.post(URL, json={"data": [checkout()]}, headers=headers)
    assert resp.status == 401
    assert (await resp.json())["code"] == code


async def test_unknown_ad_account_is_forbidden_and_malformed_one_invalid(
    client: TestClient[Any, Any],
) -> None:
    status, body = await post(client, checkout(), url="/v5/ad_accounts/123/events")
    assert (status, body["code"]) == (403, 29)
    status, body = await post(client, checkout(), url="/v5/ad_accounts/act_1/events")
    assert (status, body["code"]) == (400, 4196)


async def test_one_failed_event_gets_422_and_the_others_are_processed(
    client: TestClient[Any, Any], sandbox: PinterestSandbox
) -> None:
    bad = checkout(event_id="order-2", user_data=user(em=["Person@Example.com"]))
    status, body = await post(client, checkout(), bad, checkout(event_id="order-3"))
    assert status == 422
    details = body["details"]
    assert details["num_events_received"] == 3
    assert details["num_events_processed"] == 2
    assert [e["status"] for e in details["events"]] == ["processed", "failed", "processed"]
    assert "data[1].user_data.em" in details["events"][1]["error_message"]
    assert [e["event_id"] for e in sandbox.recorder.accepted] == ["order-1", "order-3"]
    assert sandbox.recorder.rejected[-1]["event_ids"] == ["order-2"]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"event_name": "purchase"}, "event_name"),
        ({"action_source": "website"}, "action_source"),
        ({"event_time": (NOW - 60) * 1000}, "milliseconds"),
        ({"event_time": NOW + 3600}, "future"),
        ({"event_time": NOW - 8 * DAY}, "7 days"),
        ({"event_id": ""}, "event_id"),
        ({"event_source_url": None}, "event_source_url"),
        ({"opt_out": "yes"}, "opt_out"),
        ({"user_data": user(em=sha("a@b.example"))}, "array of strings"),
        ({"user_data": user(ph=["16505551212"])}, "SHA-256"),
        ({"user_data": user(click_id=sha("epik"))}, "never hashed"),
        ({"user_data": user(client_ip_address="not-an-ip")}, "IPv4 or IPv6"),
        ({"user_data": user(fbp="fb.1.2.3")}, "unknown field"),
        ({"user_data": user(em=None, client_user_agent=None)}, "needs em"),
        ({"custom_data": {"value": 72.39, "currency": "USD"}}, "string"),
        ({"custom_data": {"value": "1e5"}}, "decimal"),
        ({"custom_data": {"currency": "usd"}}, "ISO 4217"),
        ({"custom_data": {"coupon": "X"}}, "unknown field"),
        ({"custom_data": {"contents": [{"id": "a", "item_price": 3.5}]}}, "item_price"),
        ({"custom_data": {"contents": [{"id": "a", "price": "3.5"}]}}, "documented fields"),
        ({"custom_data": {"num_items": "2"}}, "num_items"),
    ],
)
async def test_event_rules(
    client: TestClient[Any, Any],
    sandbox: PinterestSandbox,
    change: dict[str, Any],
    fragment: str,
) -> None:
    event = checkout()
    for key, value in change.items():
        if value is None:
            event.pop(key)
        else:
            event[key] = value
    status, body = await post(client, event)
    assert status == 422, body
    [answer] = body["details"]["events"]
    assert answer["status"] == "failed"
    assert fragment in answer["error_message"]
    assert sandbox.recorder.accepted == []


async def test_ip_and_user_agent_suffice_and_offline_needs_no_url(
    client: TestClient[Any, Any],
) -> None:
    event = checkout(
        action_source="offline", user_data=user(em=None, ph=None, click_id=None), custom_data=None
    )
    del event["event_source_url"]
    del event["custom_data"]
    status, body = await post(client, event)
    assert status == 200, body


@pytest.mark.parametrize(
    "body",
    [
        {"data": []},
        {"data": [checkout()] * 6},
        {"data": [checkout(referrer_url="https://x.example/")]},
        {"data": [checkout()], "test_event_code": "T"},
        {"data": ["not an object"]},
        {},
    ],
)
async def test_request_level_errors_are_400(
    client: TestClient[Any, Any], sandbox: PinterestSandbox, body: dict[str, Any]
) -> None:
    resp = await client.post(URL, json=body, headers=AUTH)
    assert resp.status == 400
    assert (await resp.json())["code"] == 4196
    assert sandbox.recorder.accepted == []


async def test_not_json_is_400(client: TestClient[Any, Any]) -> None:
    resp = await client.post(URL, data=b"{nope", headers=AUTH)
    assert resp.status == 400


async def test_faults(client: TestClient[Any, Any], sandbox: PinterestSandbox) -> None:
    sandbox.faults.burst_429 = 1
    sandbox.faults.retry_after = 2.0
    resp = await client.post(URL, json={"data": [checkout()]}, headers=AUTH)
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "2"
    assert (await resp.json())["code"] == 8
    sandbox.faults.error_rate = 1.0
    status, body = await post(client, checkout())
    assert (status, body["code"]) == (503, 4197)
    sandbox.faults.error_rate = 0.0
    sandbox.faults.token_expired = True
    status, _ = await post(client, checkout())
    assert status == 401
    sandbox.faults.token_expired = False
    sandbox.faults.reject_event_ids = {"order-1"}
    status, body = await post(client, checkout())
    assert status == 422
    assert "reject_event_ids" in body["details"]["events"][0]["error_message"]
    assert sandbox.recorder.accepted == []
    assert sandbox.recorder.requests == 4


async def test_control_routes(client: TestClient[Any, Any], sandbox: PinterestSandbox) -> None:
    resp = await client.post("/_sandbox/faults", json={"burst_429": 3})
    assert resp.status == 200
    assert sandbox.faults.burst_429 == 3
    assert (await client.post("/_sandbox/faults", json={"nope": 1})).status == 400
    await post(client, checkout())
    page = await client.get("/")
    assert "Pinterest" in await page.text()
    recorded = await (await client.get("/_sandbox/events")).json()
    assert recorded["requests"] == 1
    await client.post("/_sandbox/reset")
    assert sandbox.faults.burst_429 == 0
    assert sandbox.recorder.requests == 0


def test_create_app_exposes_the_sandbox() -> None:
    app = create_app(access_tokens={TOKEN})
    assert isinstance(app[PINTEREST_SANDBOX], PinterestSandbox)
