"""Tests for the local LinkedIn Conversions API emulator (gateway.sandbox.linkedin)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.sandbox.linkedin import LINKEDIN_SANDBOX, LinkedInSandbox, create_app

NOW = 1_705_508_777
TOKEN = "li-token"
URL = "/rest/conversionEvents"
DAY_MS = 86_400_000
HEADERS = {
    "Authorization": f"Bearer {TOKEN}",
    "LinkedIn-Version": "202607",
    "X-Restli-Protocol-Version": "2.0.0",
    "X-RestLi-Method": "BATCH_CREATE",
}


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def purchase(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "conversion": "urn:lla:llaPartnerConversion:104012",
        "conversionHappenedAt": (NOW - 60) * 1000,
        "conversionValue": {"currencyCode": "USD", "amount": "99.50"},
        "eventId": "order-1",
        "user": {
            "userIds": [
                {"idType": "SHA256_EMAIL", "idValue": sha("person@example.com")},
                {"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": "fat-1"},
            ]
        },
    }
    event.update(overrides)
    return event


@pytest.fixture
def sandbox() -> LinkedInSandbox:
    return LinkedInSandbox(
        access_tokens={TOKEN},
        rules={"104012", "555"},
        sunset_versions={"202401"},
        clock=lambda: float(NOW),
        max_batch=5,
    )


@pytest.fixture
async def client(aiohttp_client: Any, sandbox: LinkedInSandbox) -> TestClient[Any, Any]:
    test_client: TestClient[Any, Any] = await aiohttp_client(sandbox.app())
    return test_client


async def post(
    client: TestClient[Any, Any], *events: dict[str, Any], **headers: str
) -> tuple[int, Any]:
    merged = {**HEADERS, **headers}
    resp = await client.post(URL, json={"elements": list(events)}, headers=merged)
    return resp.status, await resp.json()


async def test_a_valid_batch_is_created_element_by_element(
    client: TestClient[Any, Any], sandbox: LinkedInSandbox
) -> None:
    status, answer = await post(client, purchase(), purchase(eventId="order-2"))
    assert status == 200
    assert answer == {"elements": [{"status": 201}, {"status": 201}]}
    assert [e["eventId"] for e in sandbox.recorder.accepted] == ["order-1", "order-2"]
    assert sandbox.recorder.accepted[0]["_version"] == "202607"


async def test_a_single_event_without_batch_header_answers_201(
    client: TestClient[Any, Any], sandbox: LinkedInSandbox
) -> None:
    headers = {k: v for k, v in HEADERS.items() if k != "X-RestLi-Method"}
    resp = await client.post(URL, json=purchase(), headers=headers)
    assert resp.status == 201
    assert len(sandbox.recorder.accepted) == 1


@pytest.mark.parametrize(
    ("headers", "status", "text"),
    [
        ({"Authorization": ""}, 401, "Empty oauth2"),
        ({"Authorization": "Bearer wrong"}, 401, "Invalid access token"),
        ({"LinkedIn-Version": "2026-07"}, 400, "LinkedIn-Version"),
        ({"LinkedIn-Version": "202401"}, 426, "not active"),
        ({"X-Restli-Protocol-Version": "1.0.0"}, 400, "X-Restli-Protocol-Version"),
    ],
)
async def test_auth_and_headers_are_checked(
    client: TestClient[Any, Any],
    sandbox: LinkedInSandbox,
    headers: dict[str, str],
    status: int,
    text: str,
) -> None:
    got, answer = await post(client, purchase(), **headers)
    assert got == status
    assert answer["status"] == status
    assert text in answer["message"]
    assert sandbox.recorder.accepted == []


@pytest.mark.parametrize(
    ("change", "where", "status"),
    [
        ({"conversion": "104012"}, "elements[1].conversion", 422),
        ({"conversionHappenedAt": NOW - 60}, "looks like seconds", 422),
        ({"conversionHappenedAt": (NOW + 3600) * 1000}, "in the future", 422),
        ({"conversionValue": {"currencyCode": "USD", "amount": 99.5}}, "amount", 422),
        ({"user": {"userInfo": {"firstName": "Ann", "lastName": "Lee"}}}, "userIds", 422),
        ({"user": {"userIds": []}}, "needs a userIds entry", 422),
        ({"user": {"userIds": [{"idType": "SHA256_EMAIL", "idValue": "a@b.c"}]}}, "SHA-256", 422),
        (
            {
                "user": {
                    "userIds": [
                        {
                            "idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID",
                            "idValue": sha("fat-1"),
                        }
                    ]
                }
            },
            "never hashed",
            422,
        ),
        ({"user": {"userIds": [{"idType": "PHONE", "idValue": "x"}]}}, "unknown idType", 422),
        ({"event_name": "PURCHASE"}, "unknown field", 400),
    ],
)
async def test_a_malformed_element_refuses_the_whole_request(
    client: TestClient[Any, Any],
    sandbox: LinkedInSandbox,
    change: dict[str, Any],
    where: str,
    status: int,
) -> None:
    got, answer = await post(client, purchase(), purchase(eventId="order-2", **change))
    assert got == status
    assert where in answer["message"]
    assert sandbox.recorder.accepted == []
    assert sandbox.recorder.rejected[0]["event_ids"] == ["order-1", "order-2"]


async def test_user_info_alone_matches_with_an_empty_user_ids(
    client: TestClient[Any, Any], sandbox: LinkedInSandbox
) -> None:
    named = purchase(user={"userIds": [], "userInfo": {"firstName": "Ann", "lastName": "Lee"}})
    status, _ = await post(client, named)
    assert status == 200
    assert len(sandbox.recorder.accepted) == 1


async def test_unusable_elements_fail_alone(
    client: TestClient[Any, Any], sandbox: LinkedInSandbox
) -> None:
    sandbox.faults.reject_event_ids = {"bad"}
    old = purchase(eventId="old", conversionHappenedAt=(NOW * 1000) - 91 * DAY_MS)
    foreign = purchase(eventId="foreign", conversion="urn:lla:llaPartnerConversion:999")
    status, answer = await post(client, purchase(), old, foreign, purchase(eventId="bad"))
    assert status == 200
    assert [e["status"] for e in answer["elements"]] == [201, 400, 403, 400]
    assert "90 days" in answer["elements"][1]["error"]["message"]
    assert [e["eventId"] for e in sandbox.recorder.accepted] == ["order-1"]


async def test_batch_limit(client: TestClient[Any, Any], sandbox: LinkedInSandbox) -> None:
    status, answer = await post(client, *[purchase(eventId=f"e{i}") for i in range(6)])
    assert status == 400
    assert "at most 5" in answer["message"]


async def test_faults(client: TestClient[Any, Any], sandbox: LinkedInSandbox) -> None:
    sandbox.faults.burst_429 = 1
    sandbox.faults.retry_after = 3
    resp = await client.post(URL, json={"elements": [purchase()]}, headers=HEADERS)
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "3"
    sandbox.faults.down = True
    status, _ = await post(client, purchase())
    assert status == 503
    sandbox.faults.down = False
    sandbox.faults.token_expired = True
    status, answer = await post(client, purchase())
    assert status == 401
    assert answer["serviceErrorCode"] == 65601
    sandbox.faults.token_expired = False
    status, _ = await post(client, purchase())
    assert status == 200
    assert sandbox.recorder.requests == 4
    assert len(sandbox.recorder.accepted) == 1


async def test_control_routes(client: TestClient[Any, Any], sandbox: LinkedInSandbox) -> None:
    resp = await client.post("/_sandbox/faults", json={"error_rate": 1.0})
    assert resp.status == 200
    status, _ = await post(client, purchase())
    assert status == 503
    await client.post("/_sandbox/reset")
    status, _ = await post(client, purchase())
    assert status == 200
    recorded = await (await client.get("/_sandbox/events")).json()
    assert [e["eventId"] for e in recorded["accepted"]] == ["order-1"]
    page = await (await client.get("/")).text()
    assert "LinkedIn" in page


def test_create_app_exposes_the_sandbox() -> None:
    app = create_app(access_tokens={TOKEN})
    assert isinstance(app[LINKEDIN_SANDBOX], LinkedInSandbox)
