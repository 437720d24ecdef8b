"""Meta destination: payload mapping, request shape, answer classification (platforms.md §1)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import httpx
import pytest

from gateway.core.event import Content, Data, Event, Source, User
from gateway.core.secret import Secret
from gateway.destinations.base import Delivered, Paused, Permanent, Retry
from gateway.destinations.meta.destination import Meta, MetaSettings
from gateway.store.base import DeadReason

NOW = 1_790_000_000.0
EM = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"


def meta(**kw: Any) -> Meta:
    return Meta(MetaSettings(pixel_id="1234567890", access_token=Secret("tok"), **kw))


def event(**kw: Any) -> Event:
    base: dict[str, Any] = {
        "event": "Purchase",
        "event_id": "order-1",
        "time": int(NOW),
        "source": Source.WEBSITE,
        "url": "https://shop.example/thanks",
        "user": User(
            hashed={"meta": {"em": (EM,)}},
            ip="203.0.113.7",
            user_agent="Mozilla/5.0",
            fbp="fb.1.1596403881668.1116446470",
            click_ids={"fbclid": "AbC-123"},
        ),
        "data": Data(
            value=49.9,
            currency="EUR",
            order_id="order-1",
            contents=(Content("sku-1", 2, 10.0),),
        ),
    }
    base.update(kw)
    return Event(**base)


def response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


class TestPayload:
    def test_purchase_maps_to_capi_fields(self) -> None:
        payload = meta().payload(event())
        assert payload == {
            "event_name": "Purchase",
            "event_time": int(NOW),
            "event_id": "order-1",
            "action_source": "website",
            "event_source_url": "https://shop.example/thanks",
            "user_data": {
                "em": EM,
                "client_ip_address": "203.0.113.7",
                "client_user_agent": "Mozilla/5.0",
                "fbc": f"fb.1.{int(NOW) * 1000}.AbC-123",
                "fbp": "fb.1.1596403881668.1116446470",
            },
            "custom_data": {
                "value": 49.9,
                "currency": "EUR",
                "order_id": "order-1",
                "content_ids": ["sku-1"],
                "contents": [{"id": "sku-1", "quantity": 2, "item_price": 10.0}],
                "content_type": "product",
            },
        }

    def test_fbc_cookie_wins_over_fbclid_and_is_passed_unchanged(self) -> None:
        fbc = "fb.1.1554763741205.IwAR2F4-dbP.AQEAAQMB"
        ev = replace(event(), user=User(user_agent="UA", fbc=fbc, click_ids={"fbclid": "other"}))
        assert meta().payload(ev)["user_data"]["fbc"] == fbc

    def test_several_emails_become_a_list(self) -> None:
        ev = event(user=User(hashed={"meta": {"em": (EM, "a" * 64)}}, user_agent="UA"))
        assert meta().payload(ev)["user_data"]["em"] == [EM, "a" * 64]


class TestRequest:
    def test_post_to_versioned_pixel_endpoint_with_token_in_query(self) -> None:
        req = meta(api_base="http://sandbox:1/", test_event_code="TEST1").build_request([event()])
        assert req.method == "POST"
        assert req.url.path == "/v25.0/1234567890/events"
        assert req.url.params["access_token"] == "tok"
        doc = json.loads(req.content)
        assert doc["test_event_code"] == "TEST1"
        assert doc["partner_agent"] == "signalgate"
        assert len(doc["data"]) == 1

    def test_per_event_test_code_groups_batches(self) -> None:
        m = meta()
        assert m.batch_key(event(test_code="T1")) != m.batch_key(event())


class TestValidate:
    def test_valid_event_passes(self) -> None:
        assert meta().validate(event()) is None

    def test_website_without_user_agent(self) -> None:
        ev = event(user=User(hashed={"meta": {"em": (EM,)}}))
        assert "user_agent" in (meta().validate(ev) or "")

    def test_purchase_without_currency(self) -> None:
        assert "currency" in (meta().validate(event(data=Data(value=1.0))) or "")

    def test_below_matching_baseline(self) -> None:
        ev = event(source=Source.OTHER, url=None, user=User(hashed={"meta": {"fn": (EM,)}}))
        assert "baseline" in (meta().validate(ev) or "")

    def test_too_old_respects_window_and_offline_window(self) -> None:
        m = meta()
        assert not m.too_old(event(), NOW + 6 * 86400)
        assert m.too_old(event(), NOW + 7 * 86400)
        offline = event(source=Source.PHYSICAL_STORE)
        assert not m.too_old(offline, NOW + 30 * 86400)


def err(code: int, subcode: int | None = None, **kw: Any) -> dict[str, Any]:
    return {"error": {"message": "m", "type": "OAuthException", "code": code,
                      "error_subcode": subcode, "fbtrace_id": "x", **kw}}  # fmt: skip


class TestClassify:
    @pytest.mark.parametrize(
        ("status", "body", "expected"),
        [
            (200, {"events_received": 1}, Delivered),
            (500, err(2, is_transient=True), Retry),
            (400, err(1), Retry),
            (400, err(4), Retry),
            (400, err(17), Retry),
            (400, err(341), Retry),
            (400, err(190, 463), Paused),
            (400, err(10), Paused),
            (400, err(200), Paused),
            (400, err(100, 33), Paused),
            (503, "not json", Retry),
            (502, {"unexpected": True}, Retry),
        ],
    )
    def test_codes(self, status: int, body: Any, expected: type) -> None:
        verdict = meta().classify([event()], response(status, body), NOW)
        assert isinstance(verdict.outcome, expected)

    def test_429_honours_retry_after(self) -> None:
        verdict = meta().classify([event()], response(429, err(4), {"Retry-After": "7"}), NOW)
        assert verdict.outcome == Retry("HTTP 429, code 4: m", 7.0)

    def test_invalid_parameter_bisects_and_dead_letters_with_message(self) -> None:
        body = err(100, 2804050, error_user_msg="bad em")
        verdict = meta().classify([event(), event()], response(400, body), NOW)
        assert verdict.bisect
        assert isinstance(verdict.outcome, Permanent)
        assert verdict.outcome.reason is DeadReason.INVALID_FIELD
        assert "bad em" in verdict.outcome.detail

    def test_too_old_subcode(self) -> None:
        verdict = meta().classify([event()], response(400, err(100, 2804003)), NOW)
        assert isinstance(verdict.outcome, Permanent)
        assert verdict.outcome.reason is DeadReason.TOO_OLD
