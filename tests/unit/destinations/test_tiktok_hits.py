"""TikTok pixel hits → canonical events (destinations/tiktok/hits.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hitsamples import (
    H_EMAIL,
    H_PHONE,
    NOW,
    NOW_MS,
    parsed,
)

from gateway.core.hits import MAX_BODY, Hit
from gateway.destinations.tiktok.hits import parse_tiktok

# --- TikTok -------------------------------------------------------------------------------------


def tiktok_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event": "CompletePayment",
        "event_id": "tt-order-7",
        "message_id": "messageId-1726000000000-1234567890",
        "timestamp": "2026-09-21T14:13:20.000Z",
        "context": {
            "pixel": {"code": "CABCDEFGHIJ1234567"},
            "page": {
                "url": "https://shop.example/thanks?ttclid=E.C.P.abc",
                "referrer": "https://shop.example/cart",
            },
            "library": {"name": "pixel.js", "version": "2.2.1"},
            "ad": {"callback": "E.C.P.CscBAbc_Def-123", "idc": "useast2a"},
            "user": {"email": H_EMAIL, "phone_number": H_PHONE, "external_id": "raw-id"},
            "device": {"platform": "pc"},
        },
        "properties": {
            "value": 19.98,
            "currency": "USD",
            "content_type": "product",
            "contents": [
                {"content_id": "SKU-1", "quantity": 2, "price": 9.99, "content_name": "Tee"}
            ],
            "order_id": 7,
            "shipping": "express",
        },
        "sdkid": "CABCDEFGHIJ1234567",
        "analytics_uniq_id": "abc",
    }
    event.update(overrides)
    return event


TT_NOW = 1_790_000_000.0 + 10  # 2026-09-21T14:13:30Z


class TestTikTok:
    def test_purchase_hit(self) -> None:
        hits_ = parse_tiktok(json.dumps(tiktok_event()).encode(), now=TT_NOW)
        assert hits_ == [
            Hit(
                vendor="tiktok",
                pixel_id="CABCDEFGHIJ1234567",
                event={
                    "event": "Purchase",
                    "event_id": "tt-order-7",
                    "time": 1_790_000_000,
                    "url": "https://shop.example/thanks?ttclid=E.C.P.abc",
                    "source": "website",
                    "referrer": "https://shop.example/cart",
                    "user": {
                        "email": H_EMAIL,
                        "phone": H_PHONE,
                        "click_ids": {"ttclid": "E.C.P.CscBAbc_Def-123"},
                    },
                    "data": {
                        "value": 19.98,
                        "currency": "USD",
                        "order_id": "7",
                        "contents": [{"id": "SKU-1", "quantity": 2, "price": 9.99}],
                        "content_type": "product",
                        "custom": {"shipping": "express"},
                    },
                },
            )
        ]
        ev = parsed(hits_[0].event, now=TT_NOW)
        assert ev.user.click_ids == {"ttclid": "E.C.P.CscBAbc_Def-123"}

    def test_batch_and_name_mapping(self) -> None:
        body = {
            "batch": [
                tiktok_event(event="Pageview", event_id="pv-1", properties={}),
                tiktok_event(event="SubmitForm", event_id="lead-1", properties={}),
                tiktok_event(event="AddToCart", event_id="atc-1"),
                {"event": None},
                "junk",
            ]
        }
        hits_ = parse_tiktok(json.dumps(body).encode(), now=TT_NOW)
        assert [(h.event["event"], h.event["event_id"]) for h in hits_] == [
            ("PageView", "pv-1"),
            ("Lead", "lead-1"),
            ("AddToCart", "atc-1"),
        ]
        for hit in hits_:
            parsed(hit.event, now=TT_NOW)

    def test_fallbacks_and_dropped_values(self) -> None:
        event = tiktok_event(
            event="Search",
            event_id=12345,
            timestamp="2026-09-21T14:13:20",  # no zone → receipt time
            context={
                "page": {"url": "ftp://shop.example/"},
                "ad": {"callback": "bad id!"},
                "user": {"email": "john@example.com", "phone_number": [H_PHONE, "123"]},
            },
            properties={"query": "red shoes", "content_ids": ["A", "B"], "value": "NaN"},
        )
        [hit] = parse_tiktok(json.dumps(event).encode(), now=TT_NOW)
        assert hit.pixel_id == "CABCDEFGHIJ1234567"  # top-level sdkid
        assert hit.event == {
            "event": "Search",
            "event_id": "12345",
            "time": int(TT_NOW),
            "user": {"phone": [H_PHONE]},
            "data": {"contents": [{"id": "A"}, {"id": "B"}], "search_string": "red shoes"},
        }
        parsed(hit.event, now=TT_NOW)

    def test_numeric_timestamps(self) -> None:
        for stamp in (NOW_MS - 5000, int(NOW) - 5, str(NOW_MS - 5000)):
            [hit] = parse_tiktok(json.dumps(tiktok_event(timestamp=stamp)).encode(), now=NOW)
            assert hit.event["time"] == int(NOW) - 5

    @pytest.mark.parametrize(
        "body",
        [
            b"",
            b"not json",
            b"\xff\xfe\x00",
            b"[]",
            b"null",
            b'{"batch": 5}',
            b'{"event": ""}',
            b'{"event": 5}',
            b"[" * 100_000,
            b'{"event": "Pageview", "x": ' + b"1" * 5000 + b"}",
            json.dumps(tiktok_event(pad="x" * MAX_BODY)).encode(),
        ],
    )
    def test_bad_bodies_give_nothing(self, body: bytes) -> None:
        assert parse_tiktok(body, now=NOW) == []
