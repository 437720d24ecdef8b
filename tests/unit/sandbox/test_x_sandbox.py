"""Tests for the local X Conversion API emulator (gateway.sandbox.x).

Requests are signed here with oauthlib's own `Client`, independently of the gateway's signer.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from oauthlib.oauth1 import Client

from gateway.sandbox.x import X_SANDBOX, XSandbox, create_app

NOW = 1_750_000_000
PIXEL = "o8z6j"
EVENT = "o87ne"
KEYS = {
    "consumer_key": "ck-1",
    "consumer_secret": "cs-1",
    "access_token": "at-1",
    "access_token_secret": "ats-1",
}
PATH = f"/12/measurement/conversions/{PIXEL}"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def conversion(**overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "conversion_time": "2025-06-15T15:06:40.000Z",
        "event_id": EVENT,
        "identifiers": [
            {"twclid": "26l5rhrj8xrsbz9kgv4cxy2dhs"},
            {"hashed_email": sha("customer@example.com")},
            {"hashed_phone_number": sha("+16505551212")},
            {"ip_address": "2001:db8::1"},
            {"user_agent": "Mozilla/5.0"},
        ],
        "conversion_id": "order-1001",
        "value": 42.5,
        "price_currency": "USD",
        "number_items": 2,
        "contents": [{"content_id": "SKU-1", "content_price": 21.25, "num_items": 2}],
    }
    item.update(overrides)
    return item


@pytest.fixture
def sandbox() -> XSandbox:
    return XSandbox(
        **KEYS, event_ids={EVENT}, pixel_ids={PIXEL}, clock=lambda: float(NOW), max_batch=5
    )


@pytest.fixture
async def client(sandbox: XSandbox) -> Any:
    c = TestClient(TestServer(sandbox.app(), host="127.0.0.1"))
    await c.start_server()
    yield c
    await c.close()


class Signer:
    def __init__(self, client: Any, **keys: str) -> None:
        self.client = client
        self.keys = KEYS | keys
        self.count = 0

    def header(self, path: str, *, stamp: int = NOW, nonce: str | None = None) -> str:
        self.count += 1
        oauth = Client(
            self.keys["consumer_key"],
            client_secret=self.keys["consumer_secret"],
            resource_owner_key=self.keys["access_token"],
            resource_owner_secret=self.keys["access_token_secret"],
            nonce=nonce or f"nonce{self.count}",
            timestamp=str(stamp),
        )
        _, headers, _ = oauth.sign(str(self.client.make_url(path)), "POST")
        value: str = headers["Authorization"]
        return value

    async def post(
        self, doc: Any, path: str = PATH, headers: dict[str, str] | None = None, **kw: Any
    ) -> tuple[int, Any, Any]:
        sent = {"Authorization": self.header(path, **kw)} if headers is None else headers
        sent["Content-Type"] = "application/json"
        resp = await self.client.post(path, data=json.dumps(doc), headers=sent)
        return resp.status, await resp.json(), resp.headers


def body(*items: dict[str, Any]) -> dict[str, Any]:
    return {"conversions": list(items)}


async def test_accepts_a_signed_batch_and_records_it(client: Any, sandbox: XSandbox) -> None:
    status, answer, _ = await Signer(client).post(body(conversion(), conversion(conversion_id="b")))
    assert status == 200
    assert answer["data"]["conversions_processed"] == 2
    assert answer["request"]["params"]["pixel_id"] == PIXEL
    first, second = sandbox.recorder.accepted
    assert first["conversion_id"] == "order-1001"
    assert first["_pixel_id"] == PIXEL
    assert second["conversion_id"] == "b"


@pytest.mark.parametrize(
    ("keys", "stamp", "why"),
    [
        ({"consumer_secret": "wrong"}, NOW, "signature"),
        ({"access_token_secret": "wrong"}, NOW, "signature"),
        ({"access_token": "other"}, NOW, "access token"),
        ({"consumer_key": "other"}, NOW, "consumer key"),
        ({}, NOW - 600, "timestamp"),
        ({}, NOW + 600, "timestamp"),
    ],
)
async def test_bad_oauth_is_401_unauthorized_access(
    client: Any, sandbox: XSandbox, keys: dict[str, str], stamp: int, why: str
) -> None:
    status, answer, _ = await Signer(client, **keys).post(body(conversion()), stamp=stamp)
    assert status == 401
    [error] = answer["errors"]
    assert error["code"] == "UNAUTHORIZED_ACCESS"
    assert why in error["message"]
    assert sandbox.recorder.accepted == []


async def test_missing_or_bearer_auth_is_401(client: Any) -> None:
    for headers in ({}, {"Authorization": "Bearer abc"}):
        status, answer, _ = await Signer(client).post(body(conversion()), headers=headers)
        assert status == 401
        assert answer["errors"][0]["code"] == "UNAUTHORIZED_ACCESS"


async def test_a_signature_for_another_url_is_refused(client: Any) -> None:
    signer = Signer(client)
    header = signer.header("/12/measurement/conversions/other")
    status, _, _ = await signer.post(body(conversion()), headers={"Authorization": header})
    assert status == 401


async def test_a_replayed_nonce_is_refused(client: Any, sandbox: XSandbox) -> None:
    signer = Signer(client)
    assert (await signer.post(body(conversion()), nonce="same"))[0] == 200
    status, answer, _ = await signer.post(body(conversion()), nonce="same")
    assert status == 401
    assert "already used" in answer["errors"][0]["message"]
    assert len(sandbox.recorder.accepted) == 1


async def test_unknown_pixel_is_404(client: Any) -> None:
    status, _, _ = await Signer(client).post(body(conversion()), "/12/measurement/conversions/zz")
    assert status == 404


def broken(path: str, value: Any) -> dict[str, Any]:
    item = copy.deepcopy(conversion())
    if value is KeyError:
        del item[path]
    else:
        item[path] = value
    return item


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("identifiers", [], "At least one user identifier must be provided"),
        ("identifiers", [{"ip_address": "1.2.3.4"}, {"user_agent": "UA"}], "At least one user"),
        ("identifiers", [{"hashed_email": "Jane@Example.com"}], "Hashed_email is not a valid"),
        ("identifiers", [{"hashed_email": sha("x").upper()}], "Hashed_email is not a valid"),
        ("identifiers", [{"hashed_phone_number": "+16505551212"}], "Hashed_phone_number"),
        ("identifiers", [{"fbclid": "x"}], "unknown identifier"),
        ("event_id", "o99zz", "Event_id (o99zz) is not a single event tag (SET)"),
        ("event_id", KeyError, "Missing event_id"),
        ("conversion_time", 1750000000, "conversion_time"),
        ("conversion_time", "yesterday", "conversion_time"),
        ("value", "42.5", "value"),
        ("price_currency", "usd", "price_currency"),
        ("number_items", 0, "number_items"),
        ("contents", [{"id": "SKU-1"}], "contents[0]"),
        ("event_name", "Purchase", "unknown parameter event_name"),
    ],
)
async def test_one_bad_conversion_fails_the_whole_request_with_400(
    client: Any, sandbox: XSandbox, key: str, value: Any, message: str
) -> None:
    doc = body(conversion(conversion_id="ok-1"), broken(key, value))
    status, answer, _ = await Signer(client).post(doc)
    assert status == 400
    [error] = answer["errors"]
    assert error["code"] == "INVALID_PARAMETER"
    assert message in error["message"]
    assert sandbox.recorder.accepted == []
    assert sandbox.recorder.rejected[-1]["event_ids"] == ["ok-1", "order-1001"]


async def test_batch_limit(client: Any) -> None:
    doc = body(*[conversion(conversion_id=f"c{i}") for i in range(6)])
    status, answer, _ = await Signer(client).post(doc)
    assert status == 400
    assert answer["errors"][0]["message"] == "Conversion count limit is 5"


async def test_fault_knobs(client: Any, sandbox: XSandbox) -> None:
    signer = Signer(client)
    sandbox.faults.burst_429 = 1
    sandbox.faults.retry_after = 2.5
    status, answer, headers = await signer.post(body(conversion()))
    assert status == 429
    assert answer["errors"][0]["code"] == "TOO_MANY_REQUESTS"
    assert headers["Retry-After"] == "2.5"
    assert headers["x-rate-limit-reset"] == str(NOW + 3)

    sandbox.faults.error_rate = 1.0
    sandbox.faults.error_status = 502
    status, answer, _ = await signer.post(body(conversion()))
    assert status == 502
    assert answer["errors"][0]["code"] == "SERVICE_UNAVAILABLE"
    sandbox.faults.error_rate = 0.0

    sandbox.faults.token_expired = True
    status, answer, _ = await signer.post(body(conversion()))
    assert (status, answer["errors"][0]["code"]) == (401, "UNAUTHORIZED_ACCESS")
    sandbox.faults.token_expired = False

    sandbox.faults.reject_event_ids = {"order-1001"}
    status, answer, _ = await signer.post(body(conversion()))
    assert status == 400
    assert "reject list" in answer["errors"][0]["message"]
    assert sandbox.recorder.accepted == []
    assert sandbox.recorder.requests == 4


async def test_control_routes_and_reset_forget_nonces(client: Any, sandbox: XSandbox) -> None:
    signer = Signer(client)
    await signer.post(body(conversion()), nonce="n1")
    page = await client.get("/")
    assert "X Conversion API sandbox" in await page.text()
    recorded = await (await client.get("/_sandbox/events")).json()
    assert recorded["requests"] == 1
    await client.post("/_sandbox/reset")
    assert sandbox.recorder.requests == 0
    assert (await signer.post(body(conversion()), nonce="n1"))[0] == 200


def test_create_app_exposes_the_sandbox() -> None:
    app = create_app(**KEYS, event_ids={EVENT})
    assert isinstance(app[X_SANDBOX], XSandbox)
