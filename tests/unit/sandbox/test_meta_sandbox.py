"""Tests for the local Meta Conversions API emulator (gateway.sandbox.meta)."""

from __future__ import annotations

import copy
import hashlib
import json
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.sandbox import META_SANDBOX, MetaSandbox, create_app

NOW = 1_750_000_000
PIXEL = "1234567890"
TOKEN = "test-token"
URL = f"/v25.0/{PIXEL}/events"
DAY = 86_400
FBC = "fb.1.1554763741205.IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def purchase(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_name": "Purchase",
        "event_time": NOW - 60,
        "event_id": "order-1001",
        "action_source": "website",
        "event_source_url": "https://shop.example/checkout/done",
        "user_data": {
            "em": [sha("john_smith@gmail.com")],
            "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
            "client_ip_address": "2001:db8::1",
            "fbc": FBC,
            "fbp": "fb.1.1596403881668.1116446470.AQEAAQMB",
        },
        "custom_data": {
            "value": 42.5,
            "currency": "USD",
            "contents": [{"id": "SKU-1", "quantity": 2, "item_price": 21.25}],
        },
    }
    event.update(overrides)
    return event


def body(*events: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"data": list(events), "access_token": TOKEN, **extra}


@pytest.fixture
def sandbox() -> MetaSandbox:
    return MetaSandbox(access_tokens={TOKEN}, clock=lambda: float(NOW), max_batch=5)


@pytest.fixture
async def client(aiohttp_client: Any, sandbox: MetaSandbox) -> TestClient[Any, Any]:
    test_client: TestClient[Any, Any] = await aiohttp_client(sandbox.app())
    return test_client


async def post_events(client: TestClient[Any, Any], payload: dict[str, Any]) -> tuple[int, Any]:
    resp = await client.post(URL, json=payload)
    return resp.status, await resp.json()


async def expect_error(
    client: TestClient[Any, Any], payload: dict[str, Any], *, code: int = 100
) -> dict[str, Any]:
    status, answer = await post_events(client, payload)
    assert status == 400, answer
    error: dict[str, Any] = answer["error"]
    assert error["code"] == code
    assert error["type"] == "OAuthException"
    assert error["is_transient"] is False
    assert error["fbtrace_id"]
    return error


async def test_valid_website_purchase_is_accepted_and_recorded(
    client: TestClient[Any, Any], sandbox: MetaSandbox
) -> None:
    status, answer = await post_events(
        client, body(purchase(), test_event_code="TEST123", partner_agent="signalgate")
    )
    assert status == 200
    assert answer["events_received"] == 1
    assert answer["messages"] == []
    assert isinstance(answer["fbtrace_id"], str)
    assert answer["fbtrace_id"]

    [recorded] = sandbox.recorder.accepted
    assert recorded["event_id"] == "order-1001"
    assert recorded["user_data"]["em"] == [sha("john_smith@gmail.com")]
    assert recorded["_pixel_id"] == PIXEL
    assert recorded["_test_event_code"] == "TEST123"
    assert recorded["_received_at"] == NOW
    assert sandbox.recorder.rejected == []
    assert sandbox.recorder.requests == 1

    resp = await client.get("/_sandbox/events")
    snapshot = await resp.json()
    assert snapshot["requests"] == 1
    assert [e["event_id"] for e in snapshot["accepted"]] == ["order-1001"]
    assert snapshot["rejected"] == []


async def test_token_in_bearer_header_and_non_website_event(
    client: TestClient[Any, Any], sandbox: MetaSandbox
) -> None:
    crm_lead = {
        "event_name": "Lead",
        "event_time": NOW - 3600,
        "action_source": "system_generated",
        "user_data": {"lead_id": "525645896321548", "external_id": "crm-77"},
    }
    resp = await client.post(
        URL, json={"data": [crm_lead]}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert resp.status == 200, await resp.text()
    assert len(sandbox.recorder.accepted) == 1


async def test_raw_email_is_rejected_and_nothing_recorded(
    client: TestClient[Any, Any], sandbox: MetaSandbox
) -> None:
    good = purchase(event_id="ok-1")
    bad = purchase(event_id="bad-1")
    bad["user_data"] = {**bad["user_data"], "em": "a@b.com"}
    error = await expect_error(client, body(good, bad))
    assert "data[1]" in error["error_user_msg"]
    assert "user_data.em" in error["error_user_msg"]
    assert "not hashed" in error["error_user_msg"]
    assert "a@b.com" not in json.dumps(error)  # the raw value is not echoed back
    assert str(error["error_subcode"]).startswith("2804")
    assert sandbox.recorder.accepted == []
    [rejected] = sandbox.recorder.rejected
    assert rejected["status"] == 400
    assert rejected["error"]["code"] == 100
    assert rejected["event_ids"] == ["ok-1", "bad-1"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ph", "16505551212"),
        ("em", sha("x@y.z").upper()),
        ("fn", []),
        ("country", ["us"]),
    ],
)
async def test_other_unhashed_or_malformed_hashed_keys_are_rejected(
    client: TestClient[Any, Any], key: str, value: object
) -> None:
    event = purchase()
    event["user_data"][key] = value
    error = await expect_error(client, body(event))
    assert f"user_data.{key}" in error["error_user_msg"]


async def test_event_eight_days_old_is_too_old(
    client: TestClient[Any, Any], sandbox: MetaSandbox
) -> None:
    error = await expect_error(client, body(purchase(event_time=NOW - 8 * DAY)))
    assert error["error_subcode"] == 2804003
    assert "event_time" in error["error_user_msg"]
    assert sandbox.recorder.accepted == []


async def test_time_window_edges(client: TestClient[Any, Any]) -> None:
    status, _ = await post_events(client, body(purchase(event_time=NOW - 7 * DAY)))
    assert status == 200
    status, _ = await post_events(client, body(purchase(event_time=NOW + 60)))
    assert status == 200
    error = await expect_error(client, body(purchase(event_time=NOW + 3600)))
    assert "future" in error["error_user_msg"]
    store = purchase(action_source="physical_store", event_time=NOW - 30 * DAY)
    status, _ = await post_events(client, body(store))
    assert status == 200


async def test_clock_is_read_per_request(aiohttp_client: Any) -> None:
    now = [float(NOW)]
    sandbox = MetaSandbox(clock=lambda: now[0])
    client = await aiohttp_client(sandbox.app())
    status, _ = await post_events(client, body(purchase()))
    assert status == 200
    now[0] += 8 * DAY
    status, answer = await post_events(client, body(purchase()))
    assert status == 400
    assert answer["error"]["error_subcode"] == 2804003


@pytest.mark.parametrize("event_time", [NOW * 1000, float(NOW), str(NOW), True])
async def test_event_time_must_be_int_seconds(
    client: TestClient[Any, Any], event_time: object
) -> None:
    error = await expect_error(client, body(purchase(event_time=event_time)))
    assert "event_time" in error["error_user_msg"]


async def test_millisecond_timestamp_message(client: TestClient[Any, Any]) -> None:
    error = await expect_error(client, body(purchase(event_time=NOW * 1000)))
    assert "milliseconds" in error["error_user_msg"]


async def test_website_event_without_user_agent_is_rejected(
    client: TestClient[Any, Any], sandbox: MetaSandbox
) -> None:
    event = purchase()
    del event["user_data"]["client_user_agent"]
    error = await expect_error(client, body(event))
    assert "data[0]" in error["error_user_msg"]
    assert "client_user_agent" in error["error_user_msg"]
    assert sandbox.recorder.accepted == []


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e.pop("event_source_url"), "event_source_url"),
        (lambda e: e.update(event_source_url="/checkout"), "event_source_url"),
        (lambda e: e.update(event_source_url="ftp://shop.example/"), "event_source_url"),
        (lambda e: e.pop("action_source"), "action_source"),
        (lambda e: e.update(action_source="web"), "action_source"),
        (lambda e: e.update(event_name=""), "event_name"),
        (lambda e: e.pop("user_data"), "user_data"),
        (lambda e: e.update(event_id=1001), "event_id"),
        (lambda e: e["user_data"].update(fbc="fb.1.155476374.abc"), "user_data.fbc"),
        (lambda e: e["user_data"].update(fbc="fb.1.1554763741205.a.b.c"), "user_data.fbc"),
        (lambda e: e["user_data"].update(fbp="1596403881668.1116446470"), "user_data.fbp"),
        (lambda e: e["user_data"].update(client_ip_address="1.2.3"), "client_ip_address"),
        (lambda e: e.pop("custom_data"), "custom_data"),
        (lambda e: e["custom_data"].update(value="42.50"), "custom_data.value"),
        (lambda e: e["custom_data"].pop("currency"), "custom_data.currency"),
        (lambda e: e["custom_data"].update(currency="US$"), "custom_data.currency"),
        (lambda e: e["custom_data"].update(contents=[{"quantity": 1}]), "contents[0].id"),
    ],
)
async def test_field_rules(client: TestClient[Any, Any], mutate: Any, field: str) -> None:
    event = copy.deepcopy(purchase())
    mutate(event)
    error = await expect_error(client, body(event))
    assert field in error["error_user_msg"]


async def test_five_segment_fbc_and_lowercase_currency_are_fine(
    client: TestClient[Any, Any],
) -> None:
    event = purchase()
    event["user_data"]["fbc"] = "fb.2.1657051589577.IwAR_x-Y.AQEAAQMB"
    event["custom_data"]["currency"] = "usd"
    status, answer = await post_events(client, body(event))
    assert status == 200, answer


@pytest.mark.parametrize(
    "user_data",
    [
        {"client_user_agent": "UA"},
        {"db": sha("19970216"), "client_user_agent": "UA"},
        {"ct": sha("newyork"), "zp": sha("10001"), "country": sha("us"), "client_user_agent": "UA"},
        {"fn": sha("mary"), "ge": sha("f")},
        {"ln": sha("smith")},
        {},
    ],
)
async def test_matching_baseline(client: TestClient[Any, Any], user_data: dict[str, Any]) -> None:
    event = purchase(action_source="physical_store")
    del event["event_source_url"]
    event["user_data"] = user_data
    error = await expect_error(client, body(event))
    assert "user_data" in error["error_user_msg"]


async def test_matching_baseline_passes_with_a_stronger_identifier(
    client: TestClient[Any, Any],
) -> None:
    event = purchase(action_source="physical_store")
    event["user_data"] = {"fn": sha("mary"), "ln": sha("smith"), "ge": sha("f")}
    status, answer = await post_events(client, body(event))
    assert status == 200, answer


async def test_batch_over_max_batch_is_rejected(
    client: TestClient[Any, Any], sandbox: MetaSandbox
) -> None:
    events = [purchase(event_id=f"o-{i}") for i in range(6)]
    error = await expect_error(client, body(*events))
    assert "at most 5" in error["error_user_msg"]
    status, _ = await post_events(client, body(*events[:5]))
    assert status == 200
    assert len(sandbox.recorder.accepted) == 5


async def test_empty_or_missing_data_is_rejected(client: TestClient[Any, Any]) -> None:
    await expect_error(client, {"data": [], "access_token": TOKEN})
    await expect_error(client, {"access_token": TOKEN})


async def test_missing_and_wrong_token_give_code_190(
    client: TestClient[Any, Any], sandbox: MetaSandbox
) -> None:
    await expect_error(client, {"data": [purchase()]}, code=190)
    error = await expect_error(client, body(purchase(), access_token="nope"), code=190)
    assert "access token" in error["message"].lower()
    assert sandbox.recorder.accepted == []
    assert len(sandbox.recorder.rejected) == 2


async def test_token_expired_fault_gives_code_190(
    client: TestClient[Any, Any], sandbox: MetaSandbox
) -> None:
    sandbox.faults.token_expired = True
    error = await expect_error(client, body(purchase()), code=190)
    assert error["error_subcode"] == 463
    assert sandbox.recorder.accepted == []
    [rejected] = sandbox.recorder.rejected
    assert rejected["event_ids"] == ["order-1001"]


async def test_burst_429_then_success(client: TestClient[Any, Any], sandbox: MetaSandbox) -> None:
    sandbox.faults.burst_429 = 2
    sandbox.faults.retry_after = 2.0
    for _ in range(2):
        resp = await client.post(URL, json=body(purchase()))
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "2"
        error = (await resp.json())["error"]
        assert error["code"] == 4
        assert error["is_transient"] is True
    assert sandbox.recorder.accepted == []
    status, _ = await post_events(client, body(purchase()))
    assert status == 200
    assert len(sandbox.recorder.accepted) == 1
    assert sandbox.recorder.requests == 3
    assert sandbox.faults.burst_429 == 0


async def test_fractional_retry_after(client: TestClient[Any, Any], sandbox: MetaSandbox) -> None:
    sandbox.faults.burst_429 = 1
    sandbox.faults.retry_after = 0.5
    resp = await client.post(URL, json=body(purchase()))
    assert resp.status == 429
    assert float(resp.headers["Retry-After"]) == 0.5


async def test_error_rate_one_gives_5xx_and_records_nothing(
    client: TestClient[Any, Any], sandbox: MetaSandbox
) -> None:
    sandbox.faults.error_rate = 1.0
    sandbox.faults.error_status = 502
    for _ in range(3):
        resp = await client.post(URL, json=body(purchase()))
        assert resp.status == 502
        error = (await resp.json())["error"]
        assert error["code"] == 2
        assert error["message"] == "Service temporarily unavailable"
        assert error["is_transient"] is True
    assert sandbox.recorder.accepted == []
    assert [r["status"] for r in sandbox.recorder.rejected] == [502, 502, 502]


async def test_error_rate_is_seeded(aiohttp_client: Any) -> None:
    async def statuses(seed: int) -> list[int]:
        sandbox = MetaSandbox(clock=lambda: float(NOW), seed=seed)
        sandbox.faults.error_rate = 0.5
        client = await aiohttp_client(sandbox.app())
        out = []
        for _ in range(12):
            resp = await client.post(URL, json=body(purchase()))
            out.append(resp.status)
        return out

    first = await statuses(7)
    assert first == await statuses(7)
    assert set(first) == {200, 503}


async def test_latency_knob(client: TestClient[Any, Any], sandbox: MetaSandbox) -> None:
    sandbox.faults.latency = 0.15
    started = time.perf_counter()
    status, _ = await post_events(client, body(purchase()))
    assert status == 200
    assert time.perf_counter() - started >= 0.14


async def test_reject_event_ids_rejects_the_whole_batch(
    client: TestClient[Any, Any], sandbox: MetaSandbox
) -> None:
    sandbox.faults.reject_event_ids = {"poison"}
    events = [purchase(event_id="a"), purchase(event_id="poison"), purchase(event_id="b")]
    error = await expect_error(client, body(*events))
    assert "data[1]" in error["error_user_msg"]
    assert str(error["error_subcode"]).startswith("2804")
    assert sandbox.recorder.accepted == []
    assert sandbox.recorder.rejected[0]["event_ids"] == ["a", "poison", "b"]
    status, _ = await post_events(client, body(events[0], events[2]))
    assert status == 200
    assert [e["event_id"] for e in sandbox.recorder.accepted] == ["a", "b"]


async def test_form_encoded_body(client: TestClient[Any, Any], sandbox: MetaSandbox) -> None:
    form = {
        "data": json.dumps([purchase()]),
        "access_token": TOKEN,
        "test_event_code": "TEST42",
    }
    resp = await client.post(URL, data=form)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["events_received"] == 1
    assert sandbox.recorder.accepted[0]["_test_event_code"] == "TEST42"


async def test_form_encoded_sdk_style_and_query_token(
    client: TestClient[Any, Any], sandbox: MetaSandbox
) -> None:
    # The python SDK sends `data` as a JSON array of per-event JSON strings.
    form = {"data": json.dumps([json.dumps(purchase(event_id="sdk"))])}
    resp = await client.post(URL, data=form, params={"access_token": TOKEN})
    assert resp.status == 200, await resp.text()
    assert sandbox.recorder.accepted[0]["event_id"] == "sdk"


async def test_routes_require_version_and_numeric_pixel(client: TestClient[Any, Any]) -> None:
    resp = await client.post(f"/25.0/{PIXEL}/events", json=body(purchase()))
    assert resp.status == 404
    resp = await client.post("/v25.0/not-a-pixel/events", json=body(purchase()))
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == 100


async def test_faults_endpoint_updates_knobs(
    client: TestClient[Any, Any], sandbox: MetaSandbox
) -> None:
    resp = await client.post(
        "/_sandbox/faults",
        json={"burst_429": 1, "retry_after": 3, "reject_event_ids": ["x", "y"], "latency": 0},
    )
    assert resp.status == 200
    current = await resp.json()
    assert current["burst_429"] == 1
    assert current["retry_after"] == 3
    assert current["reject_event_ids"] == ["x", "y"]
    assert sandbox.faults.reject_event_ids == {"x", "y"}

    resp = await client.post(URL, json=body(purchase()))
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "3"

    resp = await client.post("/_sandbox/faults", json={"error_rate": 2})
    assert resp.status == 400
    resp = await client.post("/_sandbox/faults", json={"bogus": 1})
    assert resp.status == 400
    assert sandbox.faults.error_rate == 0.0

    resp = await client.post("/_sandbox/reset")
    assert resp.status == 200
    assert sandbox.faults.reject_event_ids == set()
    assert sandbox.recorder.requests == 0
    assert sandbox.recorder.rejected == []


async def test_html_page_renders_and_escapes(
    client: TestClient[Any, Any], sandbox: MetaSandbox
) -> None:
    event = purchase(event_id="<script>alert(1)</script>")
    event["custom_data"]["content_name"] = "Fish & <Chips>"
    status, answer = await post_events(client, body(event))
    assert status == 200, answer
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Fish &amp; &lt;Chips&gt;" in page
    assert "<script" not in page.lower()


async def test_create_app_exposes_the_sandbox(aiohttp_client: Any) -> None:
    app = create_app(clock=lambda: float(NOW))
    sandbox = app[META_SANDBOX]
    client = await aiohttp_client(app)
    status, _ = await post_events(client, body(purchase(), access_token="anything"))
    assert status == 200
    assert len(sandbox.recorder.accepted) == 1
