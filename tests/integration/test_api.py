"""POST /v1/events against bad input: documented status, field-path reason, never a 500,
nothing half-written."""

from __future__ import annotations

import gzip
import json
import time
from typing import Any

import pytest
from conftest import API_KEY, auth, runtime_of

NOW = time.time()
UA = "Mozilla/5.0 (test)"


def ev(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event": "Lead",
        "url": "https://shop.example/form",
        "user": {"email": "jane@example.com", "user_agent": UA, "ip": "203.0.113.9"},
    }
    for key, value in over.items():
        if "__" in key:
            outer, inner = key.split("__")
            base.setdefault(outer, {})[inner] = value
        else:
            base[key] = value
    return base


def doc(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


JSON = {"Content-Type": "application/json"}

# (id, body bytes, extra headers, expected status, expected error path or None)
CASES: list[tuple[str, bytes, dict[str, str], int, str | None]] = [
    ("not-json", b"not json", {}, 400, None),
    ("empty-body", b"", {}, 400, None),
    ("whitespace-body", b"   ", {}, 400, None),
    ("truncated-json", b'{"events": [', {}, 400, None),
    ("invalid-utf8", b'{"events": ["\xff\xfe"]}', {}, 400, None),
    ("json-array", b"[]", {}, 400, ""),
    ("json-string", b'"hello"', {}, 400, ""),
    ("events-not-list", b'{"events": {}}', {}, 400, "events"),
    ("events-empty", b'{"events": []}', {}, 400, "events"),
    ("unknown-top-key", b'{"evnts": []}', {}, 400, "evnts"),
    ("too-many-events", doc(*[ev()] * 1001), {}, 400, "events"),
    ("deep-nesting", b'{"events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", {}, 400, None),
    ("corrupt-gzip", b"\x1f\x8b\x08\x00garbage", {"Content-Encoding": "gzip"}, 400, None),
    ("oversized-body", doc(ev(data={"custom": {"x": "y" * 1000}})) * 300, {}, 413, None),
    ("gzip-bomb", gzip.compress(b'{"events": [' + b" " * 30_000_000 + b"]}"),
     {"Content-Encoding": "gzip"}, 413, None),
    ("missing-key", doc(ev()), {"Authorization": ""}, 401, None),
    ("wrong-key", doc(ev()), {"Authorization": "Bearer wrong-key-0123456789"}, 401, None),
    ("basic-scheme", doc(ev()), {"Authorization": f"Basic {API_KEY}"}, 401, None),
    ("key-with-suffix", doc(ev()), {"Authorization": f"Bearer {API_KEY}x"}, 401, None),
    ("event-not-object", doc("Lead"), {}, 422, "events[0]"),  # type: ignore[arg-type]
    ("missing-event-name", doc({"url": "https://a.example/"}), {}, 422, "events[0].event"),
    ("event-name-number", doc(ev(event=123)), {}, 422, "events[0].event"),
    ("event-name-too-long", doc(ev(event="E" * 200)), {}, 422, "events[0].event"),
    ("event-name-crlf", doc(ev(event="Lead\r\nX-Injected: 1")), {}, 422, "events[0].event"),
    ("unknown-event-field", doc(ev(colour="red")), {}, 422, "events[0].colour"),
    ("time-8-days-old", doc(ev(time=NOW - 8 * 86400)), {}, 422, "events[0].time"),
    ("time-in-future", doc(ev(time=NOW + 3600)), {}, 422, "events[0].time"),
    ("time-milliseconds", doc(ev(time=NOW * 1000)), {}, 422, "events[0].time"),
    ("time-garbage", doc(ev(time="yesterday")), {}, 422, "events[0].time"),
    ("time-iso-no-zone", doc(ev(time="2026-11-27T10:00:00")), {}, 422, "events[0].time"),
    ("time-bool", doc(ev(time=True)), {}, 422, "events[0].time"),
    ("source-invalid", doc(ev(source="fax")), {}, 422, "events[0].source"),
    ("url-not-url", doc(ev(url="javascript:alert(1)")), {}, 422, "events[0].url"),
    ("url-huge", doc(ev(url="https://a.example/" + "x" * 5000)), {}, 422, "events[0].url"),
    ("user-not-object", doc(ev(user="jane")), {}, 422, "events[0].user"),
    ("email-number", doc(ev(user__email=42)), {}, 422, "events[0].user.email"),
    ("email-list-too-long", doc(ev(user__email=["a@b.co"] * 11)), {}, 422, "events[0].user.email"),
    ("email-huge", doc(ev(user__email="a" * 2000 + "@b.co")), {}, 422, "events[0].user.email"),
    ("ip-invalid", doc(ev(user__ip="999.1.1.1")), {}, 422, "events[0].user.ip"),
    ("user-unknown-field", doc(ev(user__password="x")), {}, 422, "events[0].user.password"),
    ("ua-huge", doc(ev(user__user_agent="U" * 5000)), {}, 422, "events[0].user.user_agent"),
    ("fbc-malformed", doc(ev(user__fbc="fb.1.x.y")), {}, 422, "events[0].user.fbc"),
    ("click-id-unknown", doc(ev(user__click_ids={"foo": "1"})), {}, 422,
     "events[0].user.click_ids.foo"),
    ("click-id-crlf", doc(ev(user__click_ids={"gclid": "a\r\nb"})), {}, 422,
     "events[0].user.click_ids.gclid"),
    ("value-string", doc(ev(data={"value": "abc"})), {}, 422, "events[0].data.value"),
    ("value-nan", b'{"events": [{"event": "Lead", "data": {"value": NaN}}]}', {}, 422,
     "events[0].data.value"),
    ("event-id-beyond-64-bits",
     b'{"events": [{"event": "Lead", "event_id": 123456789012345678901234567890}]}', {}, 422,
     "events[0].event_id"),
    # A NaN elsewhere makes orjson refuse the body; the stdlib then keeps a 400-digit integer
    # exact, which must be refused like any other out-of-range number, not crash a float().
    ("time-huge-int-stdlib",
     b'{"events": [{"event": "Lead", "time": 1' + b"0" * 400 + b', "referrer": NaN}]}', {}, 422,
     "events[0].time"),
    ("value-huge-int-stdlib",
     b'{"events": [{"event": "Lead", "data": {"value": 1' + b"0" * 400
     + b', "predicted_ltv": NaN}}]}', {}, 422, "events[0].data.value"),
    ("custom-huge-int-stdlib",
     b'{"events": [{"event": "Lead", "data": {"custom": {"n": 1' + b"0" * 400
     + b', "m": NaN}}}]}', {}, 422, "events[0].data.custom.n"),
    ("currency-bad", doc(ev(data={"currency": "EURO"})), {}, 422, "events[0].data.currency"),
    ("contents-not-list", doc(ev(data={"contents": "sku"})), {}, 422, "events[0].data.contents"),
    ("contents-no-id", doc(ev(data={"contents": [{"quantity": 1}]})), {}, 422,
     "events[0].data.contents[0].id"),
    ("quantity-negative", doc(ev(data={"contents": [{"id": "a", "quantity": -1}]})), {}, 422,
     "events[0].data.contents[0].quantity"),
    ("custom-nested", doc(ev(data={"custom": {"a": {"b": 1}}})), {}, 422,
     "events[0].data.custom.a"),
    ("order-id-crlf", doc(ev(data={"order_id": "1\r\n2"})), {}, 422, "events[0].data.order_id"),
    ("event-id-huge", doc(ev(event_id="e" * 300)), {}, 422, "events[0].event_id"),
    ("consent-invalid", doc(ev(consent={"ad_storage": "maybe"})), {}, 422,
     "events[0].consent.ad_storage"),
    ("test-code-number", doc(ev(test_code=5)), {}, 422, "events[0].test_code"),
    ("purchase-no-value", doc(ev(event="Purchase", data={"currency": "EUR"})), {}, 422,
     "events[0].data.value"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "headers", "status", "path"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])  # fmt: skip
async def test_bad_input(
    make_config: Any,
    gateway: Any,
    body: bytes,
    headers: dict[str, str],
    status: int,
    path: str | None,
) -> None:
    client = await gateway(make_config(), run_workers=False)
    all_headers = {**JSON, **auth(), **headers}
    if all_headers.get("Authorization") == "":
        del all_headers["Authorization"]
    resp = await client.post("/v1/events", data=body, headers=all_headers)
    text = await resp.text()
    assert resp.status == status, text
    answer = json.loads(text)
    assert "error" in answer
    if path is not None:
        paths = [e["path"] for e in answer.get("errors", [])]
        paths += [e["path"] for r in answer.get("rejected", []) for e in r["errors"]]
        assert path in paths, answer
        reasons = [e["reason"] for r in answer.get("rejected", []) for e in r["errors"]]
        reasons += [e["reason"] for e in answer.get("errors", [])]
        assert all(reasons)
    assert "X-Injected" not in resp.headers
    counts = await runtime_of(client).store.counts()
    assert sum(counts.values()) == 0, "a refused request wrote something"


def test_there_are_at_least_40_cases() -> None:
    assert len(CASES) >= 40


async def test_mixed_batch_keeps_good_events_and_names_bad_ones(
    make_config: Any, gateway: Any
) -> None:
    client = await gateway(make_config(), run_workers=False)
    body = {"events": [ev(event_id="good-1"), ev(user__ip="nope"), ev(event_id="good-2")]}
    resp = await client.post("/v1/events", json=body, headers=auth())
    answer = await resp.json()
    assert resp.status == 202
    assert answer["accepted"] == 2
    assert answer["rejected"] == [
        {
            "index": 1,
            "errors": [{"path": "events[1].user.ip", "reason": "expected an IPv4 or IPv6 address"}],
        }
    ]
    counts = await runtime_of(client).store.counts()
    assert sum(counts.values()) == 2


@pytest.mark.parametrize(
    ("field", "value"), [("email", "not-an-email"), ("phone", "12"), ("country", "Narnia")]
)
async def test_unnormalisable_identifier_is_dropped_with_a_warning(
    make_config: Any, gateway: Any, field: str, value: str
) -> None:
    client = await gateway(make_config(), run_workers=False)
    resp = await client.post("/v1/events", data=doc(ev(**{f"user__{field}": value})),
                             headers={**JSON, **auth()})  # fmt: skip
    answer = await resp.json()
    assert resp.status == 202
    assert answer["accepted"] == 1
    assert [w["path"] for w in answer["warnings"]] == [f"events[0].user.{field}"]


async def test_gzip_body_is_accepted(make_config: Any, gateway: Any) -> None:
    client = await gateway(make_config(), run_workers=False)
    resp = await client.post(
        "/v1/events",
        data=gzip.compress(doc(ev())),
        headers={**JSON, **auth(), "Content-Encoding": "gzip"},
    )
    assert resp.status == 202, await resp.text()


async def test_rate_limit_answers_429_with_retry_after(make_config: Any, gateway: Any) -> None:
    config = make_config(site={"rate_limit_per_second": 1.0}, server={"max_events_per_request": 2})
    client = await gateway(config, run_workers=False)
    statuses = []
    for _ in range(3):
        resp = await client.post("/v1/events", data=doc(ev(), ev()), headers={**JSON, **auth()})
        statuses.append(resp.status)
    assert statuses[0] == 202
    assert 429 in statuses
    assert resp.headers["Retry-After"].isdigit()


async def test_health_endpoints(make_config: Any, gateway: Any) -> None:
    client = await gateway(make_config(), run_workers=False)
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["status"] == "ok"


async def test_unknown_route_and_method_are_json_errors(make_config: Any, gateway: Any) -> None:
    client = await gateway(make_config(), run_workers=False)
    resp = await client.get("/v1/events")
    assert resp.status == 405
    assert (await resp.json())["error"] == "method_not_allowed"
    resp = await client.get("/nope")
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_found"
