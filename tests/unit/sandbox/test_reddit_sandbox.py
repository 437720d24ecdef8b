"""Tests for the local Reddit Conversions API v3 emulator (gateway.sandbox.reddit)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.sandbox.reddit import REDDIT_SANDBOX, RedditSandbox, create_app

NOW = 1_735_707_600
PIXEL = "a2_abcdef123456"
TOKEN = "reddit-token"
URL = f"/api/v3/pixels/{PIXEL}/conversion_events"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "User-Agent": "signalgate-test/1"}
DAY_MS = 86_400_000


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def purchase(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_at": NOW * 1000 - 60_000,
        "action_source": "WEBSITE",
        "type": {"tracking_type": "PURCHASE"},
        "event_source_url": "https://www.example.com/checkout",
        "click_id": "3184742045291813272",
        "metadata": {
            "conversion_id": "order-1",
            "value": 100.0,
            "currency": "USD",
            "item_count": 2,
            "products": [{"id": "SKU", "name": "Title", "quantity": 1, "item_price": 50.0}],
        },
        "user": {
            "email": sha("alice@example.com"),
            "phone_number": sha("+15554441234"),
            "external_id": sha("customer12345"),
            "ip_address": sha("192.168.0.1"),
            "user_agent": "Chrome/98.0.4758.102",
            "uuid": "1677712978045.b8f7eb7d-b357-437b-8bd3-e1c8166c7132",
        },
    }
    event.update(overrides)
    return event


def user(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = dict(purchase()["user"])
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def metadata(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = dict(purchase()["metadata"])
    data.update(changes)
    return data


@pytest.fixture
def sandbox() -> RedditSandbox:
    return RedditSandbox(
        access_tokens={TOKEN}, pixel_ids={PIXEL}, clock=lambda: float(NOW), max_batch=5
    )


@pytest.fixture
async def client(aiohttp_client: Any, sandbox: RedditSandbox) -> TestClient[Any, Any]:
    test_client: TestClient[Any, Any] = await aiohttp_client(sandbox.app())
    return test_client


async def post(
    client: TestClient[Any, Any],
    *events: dict[str, Any],
    headers: dict[str, str] | None = None,
    **data: Any,
) -> tuple[int, Any]:
    body = {"data": {"events": list(events), **data}}
    resp = await client.post(URL, json=body, headers=HEADERS if headers is None else headers)
    return resp.status, await resp.json()


async def test_valid_purchase_is_accepted_and_recorded(
    client: TestClient[Any, Any], sandbox: RedditSandbox
) -> None:
    status, answer = await post(client, purchase(), purchase(metadata=metadata(conversion_id="2")))
    assert status == 200
    assert answer == {"data": {"message": "Successfully processed 2 conversion events."}}
    first = sandbox.recorder.accepted[0]
    assert first["metadata"]["conversion_id"] == "order-1"
    assert first["_pixel_id"] == PIXEL
    assert first["_test_id"] is None


async def test_test_id_is_recorded(client: TestClient[Any, Any], sandbox: RedditSandbox) -> None:
    status, _ = await post(client, purchase(), test_id="t2_abc")
    assert status == 200
    assert sandbox.recorder.accepted[0]["_test_id"] == "t2_abc"


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({"User-Agent": "x/1"}, 401, "No bearer token provided"),
        ({"Authorization": "Bearer wrong", "User-Agent": "x/1"}, 401, "UNAUTHORIZED"),
        ({"Authorization": f"Token {TOKEN}", "User-Agent": "x/1"}, 401, "No bearer token provided"),
        ({"Authorization": f"Bearer {TOKEN}", "User-Agent": "python-requests/2.31"}, 429,
         "Your user agent was automatically ratelimited."),
    ],
)  # fmt: skip
async def test_auth_and_user_agent(
    client: TestClient[Any, Any],
    sandbox: RedditSandbox,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    got, answer = await post(client, purchase(), headers=headers)
    assert (got, answer) == (status, {"error": {"code": status, "message": message}})
    assert sandbox.recorder.accepted == []


async def test_a_pixel_the_token_may_not_post_to_is_403(client: TestClient[Any, Any]) -> None:
    resp = await client.post(
        "/api/v3/pixels/a2_other/conversion_events",
        json={"data": {"events": [purchase()]}},
        headers=HEADERS,
    )
    assert resp.status == 403
    assert "not authorized to post conversions to Pixel ID a2_other" in (await resp.text())


@pytest.mark.parametrize(
    ("event", "path"),
    [
        (purchase(event_at=NOW - 60), "event_at: looks like seconds"),
        (purchase(event_at=str(NOW * 1000)), "event_at: required"),
        (purchase(event_at=NOW * 1000 + 3_600_000), "event_at: is more than 5 minutes"),
        (purchase(event_at=NOW * 1000 - 8 * DAY_MS), "event_at: is more than 7 days old"),
        (purchase(action_source="website"), "action_source"),
        (purchase(action_source=None), "action_source"),
        (purchase(type={"tracking_type": "Purchase"}), "type.tracking_type"),
        (purchase(type={"tracking_type": "CUSTOM"}), "type.custom_event_name"),
        (purchase(type={"tracking_type": "CUSTOM", "custom_event_name": "x" * 65}),
         "type.custom_event_name"),
        (purchase(type={"tracking_type": "LEAD", "custom_event_name": "x"}),
         "type.custom_event_name: only allowed with CUSTOM"),
        (purchase(user=user(email="alice@example.com")), "user.email: must be SHA-256"),
        (purchase(user=user(phone_number="+15554441234")), "user.phone_number: must be SHA-256"),
        (purchase(user=user(ip_address="192.168.0.1")), "user.ip_address: must be SHA-256"),
        (purchase(user=user(uuid=sha("x"))), "user.uuid: must be sent as received"),
        (purchase(click_id=sha("x")), "click_id: must be sent as received"),
        (purchase(user=user(fbp="fb.1.1.1")), "user.fbp: unknown field"),
        (purchase(user=user(data_processing_options={"modes": ["X"]})),
         "user.data_processing_options.modes"),
        (purchase(metadata=metadata(currency="usd")), "metadata.currency"),
        (purchase(metadata=metadata(value="100")), "metadata.value"),
        (purchase(metadata=metadata(products=[{"name": "no id"}])), "metadata.products[0].id"),
        (purchase(type={"tracking_type": "PAGE_VISIT"}), "metadata.value: not supported"),
        (purchase(event_id="x"), "event_id: unknown field"),
    ],
)  # fmt: skip
async def test_one_bad_event_refuses_the_whole_request(
    client: TestClient[Any, Any], sandbox: RedditSandbox, event: dict[str, Any], path: str
) -> None:
    good = purchase(metadata=metadata(conversion_id="good"))
    status, answer = await post(client, good, event)
    assert status == 400
    assert answer == {
        "error": {
            "code": 400,
            "message": "There were 1 invalid conversion events. None were processed.",
        }
    }
    assert sandbox.recorder.accepted == [], "nothing of a refused request is recorded"
    [rejected] = sandbox.recorder.rejected
    assert any(p.startswith(f"events[1].{path}") for p in rejected["problems"]), rejected
    assert rejected["conversion_ids"][0] == "good"


async def test_minimal_events_and_ldu_are_accepted(client: TestClient[Any, Any]) -> None:
    minimal = {
        "event_at": NOW * 1000,
        "action_source": "OTHER",
        "type": {"tracking_type": "CUSTOM", "custom_event_name": "Quiz done"},
    }
    ldu = purchase(user=user(data_processing_options={"modes": ["LDU"], "country": "US"}))
    assert (await post(client, minimal, ldu))[0] == 200


async def test_batch_limit_and_bad_bodies(client: TestClient[Any, Any]) -> None:
    status, answer = await post(client, *[purchase() for _ in range(6)])
    assert (status, answer["error"]["message"]) == (400, "Bad Request")
    resp = await client.post(URL, data=b"{nope", headers=HEADERS)
    assert resp.status == 400
    resp = await client.post(URL, json={"events": [purchase()]}, headers=HEADERS)
    assert resp.status == 400
    assert "unknown field" in (await resp.json())["error"]["message"]
    status, answer = await post(client, purchase(), test_mode=True)
    assert status == 400
    assert answer["error"]["message"] == 'JSON error "unknown field" on field "test_mode"'
    assert (await post(client))[0] == 400


async def test_faults(client: TestClient[Any, Any], sandbox: RedditSandbox) -> None:
    sandbox.faults.burst_429 = 1
    sandbox.faults.retry_after = 3
    resp = await client.post(URL, json={"data": {"events": [purchase()]}}, headers=HEADERS)
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "3"
    sandbox.faults.error_rate = 1.0
    sandbox.faults.error_status = 502
    status, answer = await post(client, purchase())
    assert status == 502
    assert "No conversion events were processed" in answer["error"]["message"]
    sandbox.faults.error_rate = 0.0
    sandbox.faults.token_expired = True
    assert (await post(client, purchase()))[0] == 401
    sandbox.faults.token_expired = False
    sandbox.faults.reject_event_ids = {"order-1"}
    other = purchase(metadata=metadata(conversion_id="a"))
    status, _ = await post(client, other, purchase())
    assert status == 400
    assert sandbox.recorder.accepted == []
    assert sandbox.recorder.rejected[-1]["problems"] == [
        "events[1].metadata.conversion_id: rejected by the sandbox"
    ]
    sandbox.faults.reject_event_ids = set()
    assert (await post(client, purchase()))[0] == 200
    assert len(sandbox.recorder.accepted) == 1


async def test_control_routes(client: TestClient[Any, Any], sandbox: RedditSandbox) -> None:
    resp = await client.post("/_sandbox/faults", json={"burst_429": 2})
    assert (await resp.json())["burst_429"] == 2
    assert (await client.post("/_sandbox/faults", json={"nope": 1})).status == 400
    await client.post("/_sandbox/faults", json={"burst_429": 0})
    await post(client, purchase())
    assert (await (await client.get("/_sandbox/events")).json())["requests"] == 1
    assert "Reddit CAPI sandbox" in await (await client.get("/")).text()
    await client.post("/_sandbox/reset")
    assert sandbox.recorder.requests == 0


def test_create_app_exposes_the_sandbox() -> None:
    app = create_app(access_tokens={TOKEN})
    assert isinstance(app[REDDIT_SANDBOX], RedditSandbox)
