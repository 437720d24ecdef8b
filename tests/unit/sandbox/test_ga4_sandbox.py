"""Tests for the local GA4 Measurement Protocol emulator (gateway.sandbox.ga4)."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.sandbox.ga4 import GA4_SANDBOX, GA4Sandbox, create_app

NOW = 1_750_000_000
MICROS = NOW * 1_000_000
SECRET = "mp-secret"
MID = "G-ABC123XYZ9"
QUERY = f"?measurement_id={MID}&api_secret={SECRET}"
HOUR = 3600 * 1_000_000


def sha(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def purchase(**overrides: Any) -> dict[str, Any]:
    """Google's documented purchase example (T_12345, SKU_12345 at 10.01 x 3)."""
    event: dict[str, Any] = {
        "name": "purchase",
        "params": {
            "currency": "USD",
            "value": 30.03,
            "transaction_id": "T_12345",
            "items": [{"item_id": "SKU_12345", "price": 10.01, "quantity": 3}],
        },
        "timestamp_micros": MICROS - 60 * 1_000_000,
    }
    event.update(overrides)
    return event


def body(*events: dict[str, Any], **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "client_id": "1234567890.1700000000",
        "user_data": {
            "sha256_email_address": [sha("cloudysanfrancisco@gmail.com")],
            "sha256_phone_number": [sha("+12125650000")],
            "address": [{"sha256_first_name": sha("jane"), "city": "newyork"}],
        },
        "consent": {"ad_user_data": "GRANTED", "ad_personalization": "DENIED"},
        "ip_override": "203.0.113.7",
        "user_agent": "Mozilla/5.0",
        "events": list(events),
    }
    doc.update(extra)
    return doc


@pytest.fixture
def sandbox() -> GA4Sandbox:
    return GA4Sandbox(api_secrets={SECRET}, clock=lambda: float(NOW))


@pytest.fixture
async def client(sandbox: GA4Sandbox) -> AsyncIterator[Any]:
    c = TestClient(TestServer(sandbox.app(), host="127.0.0.1"))
    await c.start_server()
    yield c
    await c.close()


async def collect(client: Any, doc: Any, query: str = QUERY) -> int:
    resp = await client.post(f"/mp/collect{query}", json=doc)
    assert await resp.read() == b"" or resp.status >= 400
    return int(resp.status)


async def validate(client: Any, doc: Any, query: str = QUERY) -> list[dict[str, str]]:
    resp = await client.post(f"/debug/mp/collect{query}", json=doc)
    assert resp.status == 200
    answer = await resp.json()
    messages = answer["validationMessages"]
    assert isinstance(messages, list)
    return messages


async def test_accepts_a_valid_request_with_204_and_records_each_event(
    client: Any, sandbox: GA4Sandbox
) -> None:
    second = purchase(name="add_to_cart", params={"currency": "USD", "value": 1.5})
    assert await collect(client, body(purchase(), second)) == 204
    first, other = sandbox.recorder.accepted
    assert first["name"] == "purchase"
    assert first["params"]["transaction_id"] == "T_12345"
    assert first["_client_id"] == "1234567890.1700000000"
    assert first["_consent"]["ad_personalization"] == "DENIED"
    assert first["_measurement_id"] == MID
    assert other["name"] == "add_to_cart"
    assert sandbox.dropped == []
    assert sandbox.recorder.rejected == []


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda d: d.pop("client_id"), "VALUE_REQUIRED"),
        (lambda d: d.update(client_id="abc"), "VALUE_INVALID"),
        (lambda d: d.update(events=[purchase() for _ in range(26)]), "EXCEEDED_MAX_ENTITIES"),
        (lambda d: d.update(user_data={"sha256_email_address": ["a@b.c"]}), "VALUE_INVALID"),
        (lambda d: d.update(user_data={"address": [{"city": sha("x")}]}), "VALUE_INVALID"),
        (lambda d: d.update(consent={"ad_user_data": "YES"}), "VALUE_INVALID"),
        (lambda d: d.update(ip_override="not-an-ip"), "VALUE_INVALID"),
        (lambda d: d.update(unknown=1), "VALUE_INVALID"),
    ],
)
async def test_request_level_problems_drop_every_event_yet_answer_204(
    client: Any, sandbox: GA4Sandbox, change: Any, code: str
) -> None:
    doc = body(purchase(), purchase(params={"transaction_id": "T_2"}))
    change(doc)
    assert await collect(client, doc) == 204
    assert sandbox.recorder.accepted == []
    assert sandbox.dropped
    assert all(code in [r["validationCode"] for r in d["reasons"]] for d in sandbox.dropped)
    messages = await validate(client, doc)
    assert code in [m["validationCode"] for m in messages]


@pytest.mark.parametrize(
    ("event", "code"),
    [
        (purchase(name="sign up"), "NAME_INVALID"),
        (purchase(name="x" * 41), "NAME_INVALID"),
        (purchase(name="session_start"), "NAME_RESERVED"),
        (purchase(name="firebase_x"), "NAME_RESERVED"),
        (purchase(params={"_p": 1}), "NAME_RESERVED"),
        (purchase(params={"ga_x": "y"}), "NAME_RESERVED"),
        (purchase(params={"note": "y" * 101}), "VALUE_OUT_OF_BOUNDS"),
        (purchase(params={f"p{i}": 1 for i in range(26)}), "EXCEEDED_MAX_ENTITIES"),
        (purchase(params={"items": [{"item_id": "x"}] * 201}), "EXCEEDED_MAX_ENTITIES"),
        (purchase(params={"items": [{"price": 1}]}), "VALUE_REQUIRED"),
        (purchase(params={"value": 1.0}), "VALUE_REQUIRED"),
        (purchase(params={"currency": "usd"}), "VALUE_INVALID"),
        (purchase(params={"transaction_id": ""}), "VALUE_INVALID"),
        (purchase(params={"flag": True}), "VALUE_INVALID"),
        (purchase(timestamp_micros=MICROS - 73 * HOUR), "VALUE_OUT_OF_BOUNDS"),
        (purchase(timestamp_micros=MICROS + HOUR), "VALUE_OUT_OF_BOUNDS"),
        (purchase(timestamp_micros=NOW * 1000), "VALUE_INVALID"),
    ],
)
async def test_event_level_problems_drop_only_that_event(
    client: Any, sandbox: GA4Sandbox, event: dict[str, Any], code: str
) -> None:
    good = purchase(params={"transaction_id": "T_good"})
    assert await collect(client, body(good, event)) == 204
    assert [e["params"]["transaction_id"] for e in sandbox.recorder.accepted] == ["T_good"]
    [dropped] = sandbox.dropped
    assert dropped["index"] == 1
    assert code in [r["validationCode"] for r in dropped["reasons"]]
    assert all(r["fieldPath"].startswith("events[1]") for r in dropped["reasons"])
    messages = await validate(client, body(good, event))
    assert messages
    assert all(m["fieldPath"].startswith("events[1]") for m in messages)


async def test_72_hour_window_edge(client: Any, sandbox: GA4Sandbox) -> None:
    inside = purchase(timestamp_micros=MICROS - 71 * HOUR)
    assert await collect(client, body(inside)) == 204
    assert len(sandbox.recorder.accepted) == 1


async def test_wrong_secret_or_measurement_id_drops_silently(
    client: Any, sandbox: GA4Sandbox
) -> None:
    assert await collect(client, body(purchase()), f"?measurement_id={MID}&api_secret=x") == 204
    assert (
        await collect(client, body(purchase()), f"?measurement_id=UA-1&api_secret={SECRET}") == 204
    )
    assert await collect(client, body(purchase()), "") == 204
    assert sandbox.recorder.accepted == []
    assert len(sandbox.dropped) == 3
    assert [r["status"] for r in sandbox.recorder.rejected] == [204, 204, 204]


async def test_the_validation_server_skips_the_secret_and_records_nothing(
    client: Any, sandbox: GA4Sandbox
) -> None:
    assert await validate(client, body(purchase()), f"?measurement_id={MID}&api_secret=x") == []
    assert sandbox.recorder.accepted == []
    assert len(sandbox.validated) == 1


async def test_body_of_130_kb_is_refused_with_413(client: Any, sandbox: GA4Sandbox) -> None:
    big = purchase(params={f"p{i}": "x" * 100 for i in range(20)})
    doc = body(*[copy.deepcopy(big) for _ in range(25)])
    doc["user_agent"] = "U" * 90_000
    assert await collect(client, doc) == 413
    assert sandbox.recorder.accepted == []
    assert sandbox.recorder.rejected[0]["status"] == 413


async def test_faults_rate_limit_server_error_and_revoked_secret(
    client: Any, sandbox: GA4Sandbox
) -> None:
    sandbox.faults.burst_429 = 1
    sandbox.faults.retry_after = 7
    resp = await client.post(f"/mp/collect{QUERY}", json=body(purchase()))
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "7"
    sandbox.faults.error_rate = 1.0
    sandbox.faults.error_status = 502
    assert await collect(client, body(purchase())) == 502
    sandbox.faults.error_rate = 0.0
    sandbox.faults.token_expired = True
    assert await collect(client, body(purchase())) == 403
    sandbox.faults.token_expired = False
    assert await collect(client, body(purchase())) == 204
    assert [r["status"] for r in sandbox.recorder.rejected] == [429, 502, 403]
    assert [r["dropped"] for r in sandbox.recorder.rejected] == [["T_12345"]] * 3
    assert len(sandbox.recorder.accepted) == 1
    assert sandbox.recorder.requests == 4


async def test_reject_event_ids_drops_those_transactions(client: Any, sandbox: GA4Sandbox) -> None:
    sandbox.faults.reject_event_ids = {"T_bad"}
    bad = purchase(params={"transaction_id": "T_bad", "currency": "EUR", "value": 1})
    assert await collect(client, body(purchase(), bad)) == 204
    assert [e["params"]["transaction_id"] for e in sandbox.recorder.accepted] == ["T_12345"]
    assert sandbox.dropped[0]["transaction_id"] == "T_bad"


async def test_reset_forgets_drops_and_control_routes_work(
    client: Any, sandbox: GA4Sandbox
) -> None:
    await collect(client, body(purchase(name="bad name")))
    resp = await client.get("/_sandbox/events")
    snapshot = await resp.json()
    assert snapshot["requests"] == 1
    assert snapshot["rejected"][0]["dropped"] == ["T_12345"]
    resp = await client.post("/_sandbox/reset")
    assert resp.status == 200
    assert sandbox.dropped == []
    assert sandbox.recorder.requests == 0


def test_create_app_exposes_the_sandbox() -> None:
    app = create_app(api_secrets={SECRET})
    assert isinstance(app[GA4_SANDBOX], GA4Sandbox)
