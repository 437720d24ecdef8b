"""Issue #12 item 7: the debug view (GET /v1/admin/events) and the X-Signalgate-Debug flag.

The view keeps, in memory, a site's last N events as received (hashed: the planted e-mail and
phone never appear) and, per destination, the last N as sent with the platform's answer; no
secret (Meta's access_token, GA4's api_secret, Google's and X's OAuth values, the API key)
appears in it. A request carrying the debug header (with a valid site key) sends its events to
every platform's test channel, checked on each platform's sandbox; platforms without one
dead-letter the test event instead of counting it.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

from conftest import (
    ADMIN_TOKEN,
    API_KEY,
    PLANTED_EMAIL,
    PLANTED_PHONE,
    ConfigFactory,
    auth,
    base_doc,
    runtime_of,
)
from mixed_stream import backend_event, sandboxes
from platform_harness import (
    PROFILE_SITE,
    Client,
    browser_headers,
    dead_reasons,
    drain,
)
from test_mixed_stream import PLATFORMS

from gateway.config import parse
from gateway.sandbox.meta import MetaSandbox

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DEBUG = "X-Signalgate-Debug"
CODE = "TEST4242"
EMAIL_DIGEST = hashlib.sha256(PLANTED_EMAIL.strip().lower().encode()).hexdigest()
PHONE_DIGITS = "".join(ch for ch in PLANTED_PHONE if ch.isdigit())
TEST_CHANNELS = frozenset({"meta", "tiktok", "snap", "pinterest", "reddit", "ga4", "google_ads"})
"""Platforms with a test channel; LinkedIn, Microsoft and X have none."""
SECRET_KEYS = frozenset(
    {
        "access_token",
        "api_secret",
        "client_secret",
        "refresh_token",
        "developer_token",
        "consumer_key",
        "consumer_secret",
        "access_token_secret",
    }
)


async def view(client: Client, **params: Any) -> dict[str, Any]:
    """GET /v1/admin/events with the admin token; assert 200 and no planted PII."""
    resp = await client.get("/v1/admin/events", params=params, headers=ADMIN)
    text = await resp.text()
    assert resp.status == 200, text
    assert_no_pii(text)
    body: dict[str, Any] = json.loads(text)
    return body


def assert_no_pii(text: str) -> None:
    low = text.lower()
    assert PLANTED_EMAIL.lower() not in low
    assert PHONE_DIGITS not in text
    assert PLANTED_PHONE not in text


def planted_purchase(i: int) -> dict[str, Any]:
    return {
        "event": "Purchase",
        "event_id": f"ev-{i}",
        "url": f"https://shop.example/thanks/{i}",
        "user": {
            "email": PLANTED_EMAIL,
            "phone": PLANTED_PHONE,
            "ip": "203.0.113.7",
            "user_agent": "Mozilla/5.0 (test)",
        },
        "data": {"value": 10 + i, "currency": "EUR", "order_id": f"ev-{i}"},
    }


async def post(client: Client, events: list[dict[str, Any]], **headers: str) -> Any:
    resp = await client.post("/v1/events", json={"events": events}, headers={**auth(), **headers})
    assert resp.status == 202, await resp.text()
    return await resp.json()


async def test_the_ring_holds_exactly_the_last_n_hashed_only(
    make_config: ConfigFactory, gateway: Any, meta_sandbox: tuple[MetaSandbox, str]
) -> None:
    sandbox, base = meta_sandbox
    config = make_config(base, site={"debug_events": 5, **PROFILE_SITE})
    client = await gateway(config, run_workers=False)
    await post(client, [planted_purchase(i) for i in range(3)])
    await post(client, [planted_purchase(i) for i in range(3, 8)])
    shown = await view(client)
    assert shown["site"] == "shop"
    assert shown["capacity"] == 5
    assert [e["event_id"] for e in shown["received"]] == ["ev-7", "ev-6", "ev-5", "ev-4", "ev-3"]
    newest = shown["received"][0]
    assert newest["routes"] == {"meta": "queued"}
    assert newest["answers"] == {}
    record = newest["record"]
    assert record["user"]["hashed"]["meta"]["em"] == [EMAIL_DIGEST]
    assert record["user"]["hashed"]["meta"]["ph"] == [
        hashlib.sha256(PHONE_DIGITS.encode()).hexdigest()
    ]
    assert record["data"]["order_id"] == "ev-7"
    assert record["test_code"] is None
    assert shown["sent"] == []

    await drain(client, "shop:meta")
    assert len(sandbox.recorder.accepted) == 8
    shown = await view(client, limit=3)
    sent = shown["sent"]
    assert [s["event_id"] for s in sent] == ["ev-7", "ev-6", "ev-5"]
    for entry in sent:
        assert entry["destination"] == "meta"
        assert entry["status"] == 200
        assert entry["outcome"] == "delivered"
        assert entry["request_events"] == 8
        assert entry["endpoint"] == f"{base}/v25.0/1234567890/events"
        assert entry["payload"]["data"][0]["user_data"]["em"] == EMAIL_DIGEST
        assert "test_event_code" not in entry["payload"]
    assert [e["event_id"] for e in shown["received"]] == ["ev-7", "ev-6", "ev-5"]
    assert shown["received"][0]["answers"]["meta"]["outcome"] == "delivered"
    assert shown["received"][0]["answers"]["meta"]["status"] == 200
    full = await view(client, limit=1000)
    assert [s["event_id"] for s in full["sent"]] == [f"ev-{i}" for i in range(7, 2, -1)]

    # A duplicate is shown as such; the loader's events are hashed as well.
    await post(client, [planted_purchase(7)])
    resp = await client.post(
        "/e",
        data=json.dumps(
            {
                "event": "Lead",
                "event_id": "loader-1",
                "url": "https://www.shop.test/form",
                "user": {"email": PLANTED_EMAIL, "phone": PLANTED_PHONE},
            }
        ),
        headers=browser_headers("Mozilla/5.0 (test)"),
    )
    assert resp.status == 204, await resp.text()
    shown = await view(client)
    assert [e["event_id"] for e in shown["received"]][:2] == ["loader-1", "ev-7"]
    assert shown["received"][1]["routes"] == {"meta": "duplicate"}
    loader = shown["received"][0]["record"]
    assert loader["channel"] == "loader"
    assert loader["user"]["hashed"]["meta"]["em"] == [EMAIL_DIGEST]
    only = await view(client, event_id="ev-4")
    assert only["received"] == []  # pushed out of the received ring of 5 by the last two
    assert [s["event_id"] for s in only["sent"]] == ["ev-4"]


def all_platforms(tmp_path: Path, boxes: dict[str, Any], **site: Any) -> Any:
    doc = copy.deepcopy(base_doc(tmp_path))
    doc["sites"][0]["destinations"] = {
        row.name: row.destination(boxes[row.name][1]) for row in PLATFORMS
    }
    doc["sites"][0].update(site)
    return parse(doc, {}, tmp_path)


def secrets_of_platforms(boxes: dict[str, Any]) -> set[str]:
    found = {API_KEY, ADMIN_TOKEN}
    for row in PLATFORMS:
        settings = row.destination(boxes[row.name][1])
        found |= {str(v) for k, v in settings.items() if k in SECRET_KEYS}
    return found


async def test_debug_flag_reaches_each_test_channel_and_no_secret_shows(
    tmp_path: Path, gateway: Any
) -> None:
    async with sandboxes(PLATFORMS) as boxes:
        client = await gateway(all_platforms(tmp_path, boxes), run_workers=False)
        flagged, plain = backend_event(1, "Purchase"), backend_event(2, "Purchase")
        await post(client, [flagged], **{DEBUG: CODE})
        await post(client, [plain])
        routes = [f"shop:{row.name}" for row in PLATFORMS]
        await drain(client, *routes)
        await drain(client, *routes)

        def got(name: str) -> dict[str, dict[str, Any]]:
            row = next(r for r in PLATFORMS if r.name == name)
            return {row.received(e)[1]: e for e in boxes[name][0].recorder.accepted}

        # The plain event is real everywhere; the flagged one only reached test channels.
        for name in ("meta", "tiktok"):
            accepted = got(name)
            assert accepted["be-1"]["_test_event_code"] == CODE
            assert accepted["be-2"]["_test_event_code"] is None
        accepted = got("reddit")
        assert accepted["be-1"]["_test_id"] == CODE
        assert accepted["be-2"]["_test_id"] is None
        for name in ("snap", "pinterest"):
            accepted = got(name)
            assert accepted["be-1"]["_test"] is True
            assert accepted["be-2"]["_test"] is False
        assert set(got("ga4")) == {"be-2"}  # /mp/collect got only the real one
        ga4 = boxes["ga4"][0]
        assert len(ga4.validated) == 1
        assert ga4.validated[0]["messages"] == []
        assert set(got("google_ads")) == {"be-2"}
        assert boxes["google_ads"][0].validated == 1
        for name in ("linkedin", "microsoft", "x"):
            assert set(got(name)) == {"be-2"}
            dead = await dead_reasons(client, f"shop:{name}")
            assert list(dead) == ["be-1"]
            assert dead["be-1"].startswith("invalid_field")
            assert "no test mode" in dead["be-1"]

        # The view shows the flagged event with every test channel's answer.
        shown = await view(client, event_id="be-1")
        [received] = shown["received"]
        assert received["record"]["test_code"] == CODE
        assert set(received["routes"]) == {row.name for row in PLATFORMS}
        everyone = {row.name for row in PLATFORMS}
        outcomes = {name: a["outcome"] for name, a in received["answers"].items()}
        assert outcomes == {n: "delivered" if n in TEST_CHANNELS else "refused" for n in everyone}
        sent = {s["destination"]: s for s in shown["sent"]}
        assert set(sent) == everyone
        for name, entry in sent.items():
            assert entry["test_code"] == CODE
            if name in TEST_CHANNELS:
                assert 200 <= entry["status"] < 300
                assert entry["outcome"] == "delivered"
            else:  # never sent: the gateway's own refusal, as the dead letter says
                assert entry["status"] is None
                assert entry["endpoint"] is None
                assert entry["payload"] is None
                assert entry["request_events"] == 0
                assert entry["reason"].startswith("invalid_field: ")
                assert "no test mode" in entry["reason"]
        assert sent["ga4"]["endpoint"].endswith("/debug/mp/collect")
        assert sent["snap"]["endpoint"].endswith("/events/validate")
        assert sent["google_ads"]["payload"]["validateOnly"] is True
        assert sent["meta"]["payload"]["test_event_code"] == CODE
        plain_sent = await view(client, event_id="be-2", destination="ga4")
        assert plain_sent["sent"][0]["endpoint"].endswith("/mp/collect")
        assert not plain_sent["sent"][0]["endpoint"].endswith("/debug/mp/collect")

        # No secret anywhere: not in the whole view, nor in any destination's.
        texts = [json.dumps(await view(client, limit=1000))]
        for row in PLATFORMS:
            texts.append(json.dumps(await view(client, destination=row.name, limit=1000)))
        secrets = secrets_of_platforms(boxes)
        assert len(secrets) >= 12
        for text in texts:
            for secret in secrets:
                assert secret not in text
            assert "api_secret" not in text
            assert "access_token" not in text
            assert "developer" not in text.lower()


async def test_auth_and_bad_queries(
    make_config: ConfigFactory, gateway: Any, tmp_path: Path
) -> None:
    client = await gateway(make_config(), run_workers=False)
    assert (await client.get("/v1/admin/events")).status == 401
    wrong = await client.get("/v1/admin/events", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    as_site = await client.get("/v1/admin/events", headers=auth())  # an API key is not admin
    assert as_site.status == 401
    for params, status, path in (
        ({"limit": "0"}, 400, "limit"),
        ({"limit": "1001"}, 400, "limit"),
        ({"limit": "x"}, 400, "limit"),
        ({"event_id": "e" * 257}, 400, "event_id"),
        ({"site": "elsewhere"}, 404, "site"),
        ({"destination": "tiktok"}, 404, "destination"),
    ):
        resp = await client.get("/v1/admin/events", params=params, headers=ADMIN)
        body = await resp.json()
        assert resp.status == status, (params, body)
        assert body["errors"][0]["path"] == path

    doc = base_doc(tmp_path / "off")
    del doc["server"]["admin_token"]
    off = await gateway(parse(doc, {}, tmp_path), run_workers=False)
    assert (await off.get("/v1/admin/events", headers=ADMIN)).status == 403


async def test_the_debug_header_needs_a_key_and_a_good_value(
    make_config: ConfigFactory, gateway: Any
) -> None:
    client = await gateway(make_config(), run_workers=False)
    body = {"events": [planted_purchase(1)]}
    no_key = await client.post("/v1/events", json=body, headers={DEBUG: CODE})
    assert no_key.status == 401
    bad_key = await client.post(
        "/v1/events", json=body, headers={DEBUG: CODE, "Authorization": "Bearer nope"}
    )
    assert bad_key.status == 401
    bad = await client.post("/v1/events", json=body, headers={**auth(), DEBUG: "x" * 101})
    answer = await bad.json()
    assert bad.status == 400
    assert answer["errors"] == [
        {
            "path": "headers.X-Signalgate-Debug",
            "reason": "expected a test code: 1 to 100 printable ASCII characters (or 1)",
        }
    ]
    assert (await view(client))["received"] == []  # none of those stored anything

    # The aiohttp path (a gzip body leaves the fast lane) marks events the same way; an
    # event's own code wins; "0" is no flag.
    own = {**planted_purchase(2), "test_code": "OWN7"}
    zipped = await client.post(
        "/v1/events",
        data=gzip.compress(json.dumps({"events": [planted_purchase(1), own]}).encode()),
        headers={
            **auth(),
            DEBUG: "1",
            "Content-Encoding": "gzip",
            "Content-Type": "application/json",
        },
    )
    assert zipped.status == 202, await zipped.text()
    await post(client, [planted_purchase(3)], **{DEBUG: "0"})
    codes = {e["event_id"]: e["record"]["test_code"] for e in (await view(client))["received"]}
    assert codes == {"ev-1": "1", "ev-2": "OWN7", "ev-3": None}


async def test_debug_events_zero_keeps_nothing(
    make_config: ConfigFactory, gateway: Any, meta_sandbox: tuple[MetaSandbox, str]
) -> None:
    _, base = meta_sandbox
    client = await gateway(make_config(base, site={"debug_events": 0}), run_workers=False)
    runtime = runtime_of(client)
    assert runtime.pipeline.debug is None
    assert runtime.workers["shop:meta"].sent is None
    await post(client, [planted_purchase(1)])
    await drain(client, "shop:meta")
    shown = await view(client)
    assert shown == {"site": "shop", "capacity": 0, "received": [], "sent": []}


async def test_an_erasure_also_empties_the_rings(
    make_config: ConfigFactory, gateway: Any, meta_sandbox: tuple[MetaSandbox, str]
) -> None:
    _, base = meta_sandbox
    client = await gateway(make_config(base), run_workers=False)
    other = {**planted_purchase(9), "user": {**planted_purchase(9)["user"]}}
    other["user"]["email"] = "someone.else@example.com"
    other["user"]["phone"] = "+1 415 555 0000"
    await post(client, [planted_purchase(1), other, planted_purchase(2)])
    await drain(client, "shop:meta")
    shown = await view(client)
    assert len(shown["received"]) == 3
    assert len(shown["sent"]) == 3
    resp = await client.post("/v1/erase", json={"email": PLANTED_EMAIL}, headers=auth())
    assert resp.status == 200, await resp.text()
    shown = await view(client)
    assert [e["event_id"] for e in shown["received"]] == ["ev-9"]
    assert [s["event_id"] for s in shown["sent"]] == ["ev-9"]
    assert EMAIL_DIGEST not in json.dumps(shown)
