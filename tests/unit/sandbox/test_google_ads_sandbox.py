"""Tests for the local Google Ads API emulator (gateway.sandbox.google_ads)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.sandbox.google_ads import GOOGLE_ADS_SANDBOX, GoogleAdsSandbox, create_app

NOW = 1_750_000_000.0
CID = "1234567890"
URL = f"/v26/customers/{CID}:uploadClickConversions"
ACTION = f"customers/{CID}/conversionActions/987654321"
FORM = {
    "grant_type": "refresh_token",
    "client_id": "sandbox-client",
    "client_secret": "sandbox-secret",
    "refresh_token": "sandbox-refresh",
}


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def conversion(order: str = "order-1", **overrides: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "gclid": f"Cj0KCQiA-{order}_wcB",
        "conversionAction": ACTION,
        "conversionDateTime": "2019-01-01 12:32:45-08:00",
        "conversionValue": 12.5,
        "currencyCode": "USD",
        "orderId": order,
        "userIdentifiers": [
            {"hashedEmail": sha("johndoe@gmail.com"), "userIdentifierSource": "FIRST_PARTY"}
        ],
        "consent": {"adUserData": "GRANTED", "adPersonalization": "DENIED"},
        "conversionEnvironment": "WEB",
    }
    c.update(overrides)
    return {k: v for k, v in c.items() if v is not None}


def upload(*conversions: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"conversions": list(conversions), "partialFailure": True, **extra}


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sandbox(clock: Clock) -> GoogleAdsSandbox:
    return GoogleAdsSandbox(clock=clock, max_batch=5, token_lifetime=3600)


@pytest.fixture
async def client(sandbox: GoogleAdsSandbox) -> Any:
    c = TestClient(TestServer(sandbox.app(), host="127.0.0.1"))
    await c.start_server()
    yield c
    await c.close()


async def token(client: Any, **form: str) -> tuple[int, Any]:
    resp = await client.post("/token", data={**FORM, **form})
    return resp.status, await resp.json()


async def headers(client: Any, **extra: str) -> dict[str, str]:
    status, answer = await token(client)
    assert status == 200
    return {
        "Authorization": f"Bearer {answer['access_token']}",
        "developer-token": "sandbox-developer-token",
        **extra,
    }


async def post(client: Any, doc: Any, hdrs: dict[str, str]) -> tuple[int, Any]:
    resp = await client.post(URL, json=doc, headers=hdrs)
    return resp.status, await resp.json()


def errors_of(answer: dict[str, Any]) -> list[tuple[int, str]]:
    out = []
    for detail in answer["partialFailureError"]["details"]:
        for e in detail["errors"]:
            index = next(
                el["index"]
                for el in e["location"]["fieldPathElements"]
                if el["fieldName"] == "conversions"
            )
            out.append((index, next(iter(e["errorCode"].values()))))
    return out


# --- token endpoint -----------------------------------------------------------------------------


async def test_refresh_grant_issues_an_expiring_bearer_token(client: Any) -> None:
    status, answer = await token(client)
    assert status == 200
    assert answer["token_type"] == "Bearer"
    assert answer["expires_in"] == 3600
    assert answer["scope"] == "https://www.googleapis.com/auth/adwords"
    assert answer["access_token"].startswith("ya29.")


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"refresh_token": "other"}, 400, "invalid_grant"),
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
    ],
)
async def test_token_endpoint_refusals(
    client: Any, form: dict[str, str], status: int, error: str
) -> None:
    got, answer = await token(client, **form)
    assert (got, answer["error"]) == (status, error)


async def test_refuse_refresh_knob_and_token_errors(client: Any, sandbox: GoogleAdsSandbox) -> None:
    sandbox.oauth.refuse_refresh = True
    assert (await token(client))[0] == 400
    sandbox.oauth.refuse_refresh = False
    sandbox.oauth.errors = 1
    assert (await token(client))[0] == 503
    assert (await token(client))[0] == 200
    assert sandbox.oauth.requests == 3


# --- upload: whole-request checks ---------------------------------------------------------------


async def test_accepts_and_records_a_valid_upload(client: Any, sandbox: GoogleAdsSandbox) -> None:
    status, answer = await post(client, upload(conversion()), await headers(client))
    assert status == 200
    assert "partialFailureError" not in answer
    assert answer["results"] == [
        {
            "gclid": "Cj0KCQiA-order-1_wcB",
            "conversionAction": ACTION,
            "conversionDateTime": "2019-01-01 12:32:45-08:00",
            "orderId": "order-1",
        }
    ]
    [record] = sandbox.recorder.accepted
    assert record["orderId"] == "order-1"
    assert record["_customer_id"] == CID
    assert client.app[GOOGLE_ADS_SANDBOX] is sandbox


async def test_expired_and_unknown_tokens_are_unauthenticated(
    client: Any, sandbox: GoogleAdsSandbox, clock: Clock
) -> None:
    hdrs = await headers(client)
    clock.now += 3600
    status, answer = await post(client, upload(conversion()), hdrs)
    assert status == 401
    assert answer["error"]["status"] == "UNAUTHENTICATED"
    codes = answer["error"]["details"][0]["errors"][0]["errorCode"]
    assert codes == {"authenticationError": "OAUTH_TOKEN_EXPIRED"}
    hdrs["Authorization"] = "Bearer made-up"
    status, answer = await post(client, upload(conversion()), hdrs)
    assert status == 401
    assert "OAUTH_TOKEN_INVALID" in str(answer)


async def test_token_expired_knob_expires_issued_tokens_once(
    client: Any, sandbox: GoogleAdsSandbox
) -> None:
    hdrs = await headers(client)
    sandbox.faults.token_expired = True
    assert (await post(client, upload(conversion()), hdrs))[0] == 401
    assert (await post(client, upload(conversion()), await headers(client)))[0] == 200


async def test_developer_token_and_manager_checks(client: Any, sandbox: GoogleAdsSandbox) -> None:
    hdrs = await headers(client)
    status, answer = await post(client, upload(conversion()), {**hdrs, "developer-token": "x"})
    assert status == 401
    assert "DEVELOPER_TOKEN_INVALID" in str(answer)
    sandbox.login_customer_id = "1112223333"
    status, answer = await post(client, upload(conversion()), hdrs)
    assert status == 403
    assert "USER_PERMISSION_DENIED" in str(answer)
    ok = {**hdrs, "login-customer-id": "1112223333"}
    assert (await post(client, upload(conversion()), ok))[0] == 200
    resp = await client.post(
        "/v26/customers/9999999999:uploadClickConversions", json=upload(conversion()), headers=ok
    )
    assert resp.status == 403


@pytest.mark.parametrize(
    ("doc", "name"),
    [
        ({"conversions": [conversion()]}, "PARTIAL_FAILURE_MODE_REQUIRED"),
        (upload(conversion(), partialFailure=False), "PARTIAL_FAILURE_MODE_REQUIRED"),
        (upload(*[conversion(f"o{i}") for i in range(6)]), "TOO_MANY_CONVERSIONS_IN_REQUEST"),
        (upload(), "REQUIRED_FIELD_MISSING"),
        (upload(conversion(), surprise=1), "INVALID_INPUT"),
        (upload(conversion(gclid_typo="x")), "INVALID_INPUT"),
    ],
)
async def test_whole_request_refusals(client: Any, doc: dict[str, Any], name: str) -> None:
    status, answer = await post(client, doc, await headers(client))
    assert status == 400
    assert answer["error"]["status"] == "INVALID_ARGUMENT"
    assert name in str(answer["error"]["details"])


# --- upload: per-row partial failures -----------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "name"),
    [
        (conversion("b", gbraid="GB1"), "VALUE_MUST_BE_UNSET"),
        (conversion("b", gclid=None, gbraid="GB", wbraid="WB"), "GBRAID_WBRAID_BOTH_SET"),
        (conversion("b", gclid="has space"), "UNPARSEABLE_GCLID"),
        (conversion("b", gclid=None, userIdentifiers=None), "REQUIRED"),
        (conversion("b", conversionDateTime="2019-01-01 12:32:45"), "WITH_OFFSET"),
        (conversion("b", conversionDateTime="2019-01-01T12:32:45Z"), "WITH_OFFSET"),
        (conversion("b", conversionAction="customers/1/conversionActions/1"), "NO_CONVERSION"),
        (conversion("b", currencyCode="usd"), "UNSUPPORTED"),
        (conversion("b", consent={"adUserData": "YES"}), "INVALID_VALUE"),
        (
            conversion("b", userIdentifiers=[{"hashedEmail": "plain@example.com"}]),
            "INVALID_USER_IDENTIFIER",
        ),
        (
            conversion(
                "b",
                userIdentifiers=[{"hashedEmail": sha("a"), "hashedPhoneNumber": sha("+1")}],
            ),
            "INVALID_USER_IDENTIFIER",
        ),
        (
            conversion("b", userIdentifiers=[{"hashedEmail": sha(str(i))} for i in range(6)]),
            "INVALID_USER_IDENTIFIER",
        ),
        (
            conversion("b", userIdentifiers=[{"addressInfo": {"city": "x"}}]),
            "UNSUPPORTED_USER_IDENTIFIER",
        ),
    ],
)
async def test_a_bad_row_fails_alone(
    client: Any, sandbox: GoogleAdsSandbox, bad: dict[str, Any], name: str
) -> None:
    status, answer = await post(
        client, upload(conversion("a"), bad, conversion("c")), await headers(client)
    )
    assert status == 200
    [(index, code)] = errors_of(answer)
    assert index == 1
    assert name in code
    assert answer["results"][1] == {}
    assert [r["orderId"] for r in sandbox.recorder.accepted] == ["a", "c"]


async def test_duplicates_are_refused_and_not_recorded_twice(
    client: Any, sandbox: GoogleAdsSandbox
) -> None:
    hdrs = await headers(client)
    await post(client, upload(conversion("a")), hdrs)
    _, answer = await post(client, upload(conversion("a"), conversion("b", gclid="other")), hdrs)
    assert errors_of(answer) == [(0, "CLICK_CONVERSION_ALREADY_EXISTS")]
    _, answer = await post(client, upload(conversion("b", gclid="third")), hdrs)
    assert errors_of(answer) == [(0, "ORDER_ID_ALREADY_IN_USE")]
    assert [r["orderId"] for r in sandbox.recorder.accepted] == ["a", "b"]
    assert len(sandbox.duplicates) == 2


async def test_two_copies_in_one_request_both_fail(client: Any, sandbox: GoogleAdsSandbox) -> None:
    hdrs = await headers(client)
    doc = upload(conversion("a"), conversion("a", gclid="other"), conversion("b"))
    _, answer = await post(client, doc, hdrs)
    assert errors_of(answer) == [(0, "DUPLICATE_ORDER_ID"), (1, "DUPLICATE_ORDER_ID")]
    doc = upload(conversion("c"), conversion("d", gclid="Cj0KCQiA-c_wcB"))
    _, answer = await post(client, doc, hdrs)
    assert errors_of(answer) == [
        (0, "DUPLICATE_CLICK_CONVERSION_IN_REQUEST"),
        (1, "DUPLICATE_CLICK_CONVERSION_IN_REQUEST"),
    ]
    assert [r["orderId"] for r in sandbox.recorder.accepted] == ["b"]


async def test_row_error_knobs(client: Any, sandbox: GoogleAdsSandbox) -> None:
    hdrs = await headers(client)
    sandbox.row_errors = {"a": "CLICK_NOT_FOUND"}
    sandbox.row_errors_once = {"b": "TOO_RECENT_EVENT"}
    sandbox.faults.reject_event_ids = {"c"}
    doc = upload(conversion("a"), conversion("b"), conversion("c"))
    _, answer = await post(client, doc, hdrs)
    assert errors_of(answer) == [
        (0, "CLICK_NOT_FOUND"),
        (1, "TOO_RECENT_EVENT"),
        (2, "UNPARSEABLE_GCLID"),
    ]
    _, answer = await post(client, upload(conversion("b")), hdrs)
    assert "partialFailureError" not in answer
    details = answer["results"]
    assert details[0]["orderId"] == "b"


async def test_validate_only_checks_and_records_nothing(
    client: Any, sandbox: GoogleAdsSandbox
) -> None:
    doc = upload(conversion("a"), conversion("b", gclid="bad gclid"), validateOnly=True)
    status, answer = await post(client, doc, await headers(client))
    assert status == 200
    assert "results" not in answer
    assert errors_of(answer) == [(1, "UNPARSEABLE_GCLID")]
    assert sandbox.recorder.accepted == []
    assert sandbox.validated == 1


async def test_fault_knobs_throttle_and_fail(client: Any, sandbox: GoogleAdsSandbox) -> None:
    hdrs = await headers(client)
    sandbox.faults.burst_429 = 1
    sandbox.faults.retry_after = 7
    resp = await client.post(URL, json=upload(conversion()), headers=hdrs)
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "7"
    assert (await resp.json())["error"]["status"] == "RESOURCE_EXHAUSTED"
    sandbox.faults.down = True
    resp = await client.post(URL, json=upload(conversion()), headers=hdrs)
    assert resp.status == 503
    assert (await resp.json())["error"]["status"] == "INTERNAL"
    assert [r["status"] for r in sandbox.recorder.rejected] == [429, 503]
    assert sandbox.recorder.rejected[0]["order_ids"] == ["order-1"]


async def test_reset_clears_tokens_knobs_and_records(
    client: Any, sandbox: GoogleAdsSandbox
) -> None:
    hdrs = await headers(client)
    await post(client, upload(conversion()), hdrs)
    sandbox.oauth.refuse_refresh = True
    resp = await client.post("/_sandbox/reset")
    assert resp.status == 200
    assert sandbox.recorder.accepted == []
    assert sandbox.oauth.tokens == {}
    assert not sandbox.oauth.refuse_refresh
    assert (await post(client, upload(conversion()), hdrs))[0] == 401


def test_create_app_builds_a_sandbox() -> None:
    app = create_app(seed=3)
    assert isinstance(app[GOOGLE_ADS_SANDBOX], GoogleAdsSandbox)
