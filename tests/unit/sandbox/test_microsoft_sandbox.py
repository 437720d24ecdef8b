"""Tests for the local Microsoft UET Conversions API emulator (gateway.sandbox.microsoft)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.sandbox.microsoft import MICROSOFT_SANDBOX, MicrosoftSandbox, create_app

NOW = 1_790_000_000
TAG = "343012345"
TOKEN = "uet-token"
URL = f"/v1/{TAG}/events"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DAY = 86_400
MSCLKID = "e85de3e3b8a2139d6e1b858362f6c13a"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def purchase(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "eventType": "custom",
        "eventName": "purchase",
        "eventTime": NOW - 60,
        "eventId": "order-1",
        "eventSourceUrl": "https://shop.example/thanks",
        "adStorageConsent": "G",
        "userData": {
            "em": sha("person@example.com"),
            "ph": sha("448444124653"),
            "clientIpAddress": "203.0.113.7",
            "clientUserAgent": "Mozilla/5.0",
            "msclkid": MSCLKID,
        },
        "customData": {
            "value": 49.9,
            "currency": "EUR",
            "transactionId": "order-1",
            "pageType": "purchase",
            "itemIds": ["sku-1"],
            "items": [{"id": "sku-1", "price": 49.9, "quantity": 1}],
        },
    }
    event.update(overrides)
    return event


def user(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = dict(purchase()["userData"])
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


@pytest.fixture
def sandbox() -> MicrosoftSandbox:
    return MicrosoftSandbox(access_tokens={TOKEN}, clock=lambda: float(NOW), max_batch=5)


@pytest.fixture
async def client(aiohttp_client: Any, sandbox: MicrosoftSandbox) -> TestClient[Any, Any]:
    test_client: TestClient[Any, Any] = await aiohttp_client(sandbox.app())
    return test_client


async def post(
    client: TestClient[Any, Any],
    *events: dict[str, Any],
    keep_going: bool | None = True,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    doc: dict[str, Any] = {"data": list(events)}
    if keep_going is not None:
        doc["continueOnValidationError"] = keep_going
    resp = await client.post(URL, json=doc, headers=AUTH if headers is None else headers)
    return resp.status, await resp.json()


async def test_valid_events_are_accepted_and_recorded(
    client: TestClient[Any, Any], sandbox: MicrosoftSandbox
) -> None:
    page = {
        "eventType": "pageLoad",
        "eventTime": NOW,
        "eventSourceUrl": "https://shop.example/",
        "userData": {"clientIpAddress": "2001:db8::1", "clientUserAgent": "UA"},
    }
    status, answer = await post(client, purchase(), page)
    assert status == 200
    assert answer["eventsReceived"] == 2
    assert "error" not in answer
    assert len(answer["traceId"]) == 32
    assert [e.get("eventId") for e in sandbox.recorder.accepted] == ["order-1", None]
    assert sandbox.recorder.accepted[0]["_tag_id"] == TAG


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}]
)
async def test_token_is_checked(
    client: TestClient[Any, Any], sandbox: MicrosoftSandbox, headers: dict[str, str]
) -> None:
    status, answer = await post(client, purchase(), headers=headers)
    assert status == 401
    assert answer["error"]["code"] == "Unauthorized"
    assert answer["eventsReceived"] == 0
    assert sandbox.recorder.accepted == []


@pytest.mark.parametrize(
    ("change", "property_name", "code"),
    [
        ({"eventType": "purchase"}, "eventType", "Required"),
        ({"eventName": None}, "eventName", "Required"),
        ({"eventTime": (NOW - 60) * 1000}, "eventTime", "InvalidValue"),
        ({"eventTime": NOW - 8 * DAY}, "eventTime", "EventTooOld"),
        ({"eventTime": NOW + 3600}, "eventTime", "InvalidValue"),
        ({"eventTime": "1790000000"}, "eventTime", "Required"),
        ({"adStorageConsent": "granted"}, "adStorageConsent", "InvalidValue"),
        ({"eventSourceUrl": "shop.example/x"}, "eventSourceUrl", "InvalidValue"),
        ({"action_source": "web"}, "action_source", "UnknownProperty"),
        ({"userData": None}, "userData", "Required"),
        ({"userData": user(em="person@example.com")}, "userData.em", "NotHashed"),
        ({"userData": user(ph="448444124653")}, "userData.ph", "NotHashed"),
        ({"userData": user(em=sha("x").upper())}, "userData.em", "NotHashed"),
        ({"userData": user(msclkid=sha(MSCLKID))}, "userData.msclkid", "InvalidValue"),
        ({"userData": user(msclkid="_uet" + MSCLKID)}, "userData.msclkid", "InvalidValue"),
        ({"userData": user(clientIpAddress="999.1.1.1")}, "userData.clientIpAddress",
         "InvalidValue"),
        ({"userData": user(fbp="fb.1.2.3")}, "userData.fbp", "UnknownProperty"),
        ({"userData": {"clientUserAgent": "UA"}}, "userData", "MissingIdentifier"),
        ({"customData": {"value": "49.9"}}, "customData.value", "InvalidValue"),
        ({"customData": {"currency": "eur"}}, "customData.currency", "InvalidValue"),
        ({"customData": {"pageType": "checkout"}}, "customData.pageType", "InvalidValue"),
        ({"customData": {"coupon": "X"}}, "customData.coupon", "UnknownProperty"),
        ({"customData": {"items": [{"id": "a", "quantity": 1.5}]}},
         "customData.items[0].quantity", "InvalidValue"),
    ],
)  # fmt: skip
async def test_each_rule_names_the_property(
    client: TestClient[Any, Any],
    sandbox: MicrosoftSandbox,
    change: dict[str, Any],
    property_name: str,
    code: str,
) -> None:
    bad = purchase(**change)
    for key in [k for k, v in change.items() if v is None]:
        bad.pop(key)
    status, answer = await post(client, bad, keep_going=False)
    assert status == 400
    [detail] = answer["error"]["details"]
    assert (detail["index"], detail["propertyName"], detail["errorCode"]) == (
        0,
        property_name,
        code,
    )
    assert sandbox.recorder.accepted == []


async def test_page_load_needs_a_url(client: TestClient[Any, Any]) -> None:
    page = {"eventType": "pageLoad", "eventTime": NOW, "userData": {"clientIpAddress": "1.2.3.4"}}
    status, answer = await post(client, page, keep_going=False)
    assert status == 400
    assert answer["error"]["details"][0]["propertyName"] == "eventSourceUrl"


async def test_continue_on_validation_error_ingests_the_valid_events(
    client: TestClient[Any, Any], sandbox: MicrosoftSandbox
) -> None:
    events = [purchase(eventId=f"e{i}") for i in range(4)]
    events[2]["userData"] = user(em="plain@example.com")
    status, answer = await post(client, *events)
    assert status == 200
    assert answer["eventsReceived"] == 3
    assert [d["index"] for d in answer["error"]["details"]] == [2]
    assert [e["eventId"] for e in sandbox.recorder.accepted] == ["e0", "e1", "e3"]
    assert sandbox.recorder.rejected[-1]["event_ids"] == ["e2"]


async def test_without_continue_one_bad_event_refuses_all(
    client: TestClient[Any, Any], sandbox: MicrosoftSandbox
) -> None:
    events = [purchase(eventId=f"e{i}") for i in range(3)]
    events[1]["eventTime"] = NOW - 30 * DAY
    status, answer = await post(client, *events, keep_going=None)
    assert status == 400
    assert answer["eventsReceived"] == 0
    assert sandbox.recorder.accepted == []


async def test_partial_status_is_configurable(aiohttp_client: Any) -> None:
    sandbox = MicrosoftSandbox(clock=lambda: float(NOW), partial_status=400)
    client: TestClient[Any, Any] = await aiohttp_client(sandbox.app())
    status, answer = await post(client, purchase(), purchase(eventId="x", eventType="bad"))
    assert status == 400
    assert answer["eventsReceived"] == 1
    assert len(sandbox.recorder.accepted) == 1


@pytest.mark.parametrize(
    ("doc", "code"),
    [
        ({"data": []}, "InvalidRequest"),
        ({"data": "x"}, "InvalidRequest"),
        ({"data": [purchase()], "continueOnValidationError": "yes"}, "InvalidRequest"),
        ({"data": [purchase()], "test": True}, "InvalidRequest"),
        ({"data": [purchase(eventId=f"e{i}") for i in range(6)]}, "TooManyEvents"),
    ],
)
async def test_envelope_is_checked(
    client: TestClient[Any, Any], doc: dict[str, Any], code: str
) -> None:
    resp = await client.post(URL, json=doc, headers=AUTH)
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == code


async def test_unknown_tag_is_404(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/v1/not-a-tag/events", json={"data": [purchase()]}, headers=AUTH)
    assert resp.status == 404


async def test_fault_knobs(client: TestClient[Any, Any], sandbox: MicrosoftSandbox) -> None:
    sandbox.faults.burst_429 = 1
    sandbox.faults.retry_after = 3
    resp = await client.post(URL, json={"data": [purchase()]}, headers=AUTH)
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "3"
    sandbox.faults.error_rate = 1.0
    sandbox.faults.error_status = 502
    assert (await post(client, purchase()))[0] == 502
    sandbox.faults.error_rate = 0.0
    sandbox.faults.token_expired = True
    assert (await post(client, purchase()))[0] == 401
    sandbox.faults.token_expired = False
    sandbox.faults.reject_event_ids = {"order-1"}
    status, answer = await post(client, purchase(), purchase(eventId="order-2"))
    assert status == 200
    assert answer["error"]["details"][0]["errorCode"] == "Rejected"
    assert [e["eventId"] for e in sandbox.recorder.accepted] == ["order-2"]
    assert sandbox.recorder.requests == 4


async def test_control_routes(client: TestClient[Any, Any], sandbox: MicrosoftSandbox) -> None:
    resp = await client.post("/_sandbox/faults", json={"burst_429": 2})
    assert (await resp.json())["burst_429"] == 2
    assert (await client.post("/_sandbox/faults", json={"nope": 1})).status == 400
    await post(client, purchase())
    assert (await (await client.get("/_sandbox/events")).json())["requests"] == 1
    assert "Microsoft UET CAPI sandbox" in await (await client.get("/")).text()
    await client.post("/_sandbox/reset")
    assert sandbox.faults.burst_429 == 0
    assert sandbox.recorder.requests == 0


def test_create_app_exposes_the_sandbox() -> None:
    app = create_app(max_batch=7)
    assert app[MICROSOFT_SANDBOX].max_batch == 7


async def test_the_sandbox_accepts_what_the_destination_builds(
    client: TestClient[Any, Any], sandbox: MicrosoftSandbox
) -> None:
    """Mapper and emulator were written apart from the same reference: they must agree."""
    from gateway.core.event import Consent, Content, Data, Event, Source, User
    from gateway.core.identity import hash_pii
    from gateway.core.secret import Secret
    from gateway.destinations.microsoft.destination import Microsoft, MicrosoftSettings

    dest = Microsoft(
        MicrosoftSettings(tag_id=TAG, access_token=Secret(TOKEN), api_base="http://sandbox")
    )
    digests, _ = hash_pii({"em": ("A@B.example",), "ph": ("+1 650 555 1212",)}, ["meta"])
    rich = User(hashed=digests, ip="203.0.113.7", user_agent="UA", click_ids={"msclkid": MSCLKID})
    events = [
        Event("PageView", "p1", NOW, Source.WEBSITE, url="https://s.example/", user=rich),
        Event(
            "Purchase",
            "o1",
            NOW - 3 * DAY,
            Source.WEBSITE,
            url="https://s.example/thanks",
            referrer="https://www.bing.com/",
            user=rich,
            data=Data(
                value=9.5,
                currency="usd",
                order_id="o1",
                contents=(Content("a", 2, 1.5), Content("b")),
            ),
            consent=Consent(ad_storage=False),
        ),
        Event(
            "Search",
            "s1",
            NOW,
            Source.WEBSITE,
            user=User(ip="2001:db8::7"),
            data=Data(
                search_string="shoes",
                content_category="footwear",
                custom={"eventLabel": "top", "eventValue": 2.0, "junk": True},
            ),
        ),
        Event(
            "quiz_done",
            "q1",
            NOW,
            Source.PHYSICAL_STORE,
            user=User(click_ids={"msclkid": "_uet" + MSCLKID}),
        ),
    ]
    for e in events:
        assert dest.validate(e) is None
    request = dest.build_request(events)
    resp = await client.post(URL, data=request.content, headers=dict(request.headers))
    answer = await resp.json()
    assert resp.status == 200, answer
    assert answer["eventsReceived"] == len(events)
    assert "error" not in answer
    assert [e.get("eventId") for e in sandbox.recorder.accepted] == ["p1", "o1", "s1", "q1"]
