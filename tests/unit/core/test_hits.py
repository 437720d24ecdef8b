"""Pixel hits (Meta /tr, TikTok, Snap, GA4 /g/collect) → canonical events for mirroring."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from unittest import mock
from urllib.parse import parse_qsl, quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.event import Event, Source, parse_event
from gateway.core.hits import MAX_BODY, MAX_CLIENT_LAG, MAX_PARAMS, MAX_VALUE, Hit
from gateway.destinations.ga4 import hits as ga4_hits
from gateway.destinations.ga4.hits import GA4_EVENTS, parse_ga4
from gateway.destinations.meta import hits as meta_hits
from gateway.destinations.meta.hits import parse_meta_tr
from gateway.destinations.snap import hits as snap_hits
from gateway.destinations.snap.hits import parse_snap
from gateway.destinations.tiktok import hits as tiktok_hits
from gateway.destinations.tiktok.hits import parse_tiktok

NOW = 1_790_000_000.0
NOW_MS = int(NOW * 1000)
H_EMAIL = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
H_PHONE = "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
H_EXT = "3469a9d1e1b9f0c7b3f2a3a5d4b2c1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4"
FBP = "fb.1.1642534104092.1825265756"
FBC = "fb.1.1554763741205.IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk"

# platforms.md §1.10 "Real example", with its elided values (…) filled in.
META_EXAMPLE = (
    "https://www.facebook.com/tr/?id=473120943447503&ev=PageView"
    "&dl=https%3A%2F%2Fwww.example.com%2Fpricing%3Fplan%3Dpro&rl=https%3A%2F%2Fwww.google.com%2F"
    "&if=false&ts=1655227981442&sw=1440&sh=900&ud[external_id]=" + H_EXT + "&v=2.9.62&r=stable"
    "&a=tmhubspot&ec=0&o=30&fbp=fb.1.1642534104092.1825265756&it=1655227981424&coo=false"
    "&exp=p0&rqm=GET"
)
META_EXAMPLE_NOW = 1_655_228_000.0


def query_of(url: str) -> list[tuple[str, str]]:
    return parse_qsl(url.partition("?")[2], keep_blank_values=True)


def parsed(event: dict[str, Any], now: float = NOW) -> Event:
    result = parse_event(event, now=now, new_id=lambda: "x")
    assert isinstance(result, Event), result
    return result


def field_errors(event: dict[str, Any], now: float = NOW) -> dict[str, str]:
    result = parse_event(event, now=now, new_id=lambda: "x")
    assert isinstance(result, list), result
    return {e.path: e.reason for e in result}


def one(hit: Hit | None) -> Hit:
    assert hit is not None
    return hit


def meta(pairs: list[tuple[str, str]], form: list[tuple[str, str]] | None = None) -> Hit | None:
    return parse_meta_tr(pairs, form or (), now=NOW)


# --- Meta ---------------------------------------------------------------------------------------


class TestMeta:
    def test_real_example_hit(self) -> None:
        hit = one(parse_meta_tr(query_of(META_EXAMPLE), now=META_EXAMPLE_NOW))
        assert hit == Hit(
            vendor="meta",
            pixel_id="473120943447503",
            event={
                "event": "PageView",
                "time": 1655227981,
                "url": "https://www.example.com/pricing?plan=pro",
                "source": "website",
                "referrer": "https://www.google.com/",
                "user": {"external_id": H_EXT, "fbp": FBP},
                "data": {},
            },
        )
        ev = parsed(hit.event, now=META_EXAMPLE_NOW)
        assert ev.source is Source.WEBSITE
        assert ev.user.pii == {"external_id": (H_EXT,)}
        assert ev.user.fbp == FBP

    def test_purchase_with_custom_and_user_data(self) -> None:
        contents = [
            {"id": "SKU-1", "quantity": 2, "item_price": 10.5},
            {"id": 77, "quantity": "1", "item_price": "3"},
        ]
        pairs = [
            ("id", "1234567890"),
            ("ev", "Purchase"),
            ("eid", "order-42"),
            ("dl", "https://shop.example/thanks"),
            ("rl", "https://shop.example/checkout"),
            ("ts", str(NOW_MS - 1500)),
            ("cd[value]", "24.00"),
            ("cd[currency]", "eur"),
            ("cd[contents]", json.dumps(contents)),
            ("cd[content_ids]", '["ignored-when-contents"]'),
            ("cd[content_type]", "product"),
            ("cd[num_items]", "3"),
            ("cd[order_id]", "42"),
            ("cd[coupon]", "SPRING"),
            ("cd[delivery_category]", "home_delivery"),
            ("ud[em]", H_EMAIL),
            ("ud[ph]", H_PHONE),
            ("ud[fn]", "Mary"),
            ("ud[country]", "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"),
            ("fbp", FBP),
            ("fbc", FBC),
            ("rqm", "FGET"),
        ]
        hit = one(meta(pairs))
        assert hit.pixel_id == "1234567890"
        assert hit.event == {
            "event": "Purchase",
            "event_id": "order-42",
            "time": int(NOW) - 2,
            "url": "https://shop.example/thanks",
            "source": "website",
            "referrer": "https://shop.example/checkout",
            "user": {
                "email": H_EMAIL,
                "phone": H_PHONE,
                "first_name": "Mary",
                "country": "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621",
                "fbp": FBP,
                "fbc": FBC,
            },
            "data": {
                "value": 24.0,
                "currency": "EUR",
                "order_id": "42",
                "contents": [
                    {"id": "SKU-1", "quantity": 2, "price": 10.5},
                    {"id": "77", "quantity": 1, "price": 3.0},
                ],
                "content_type": "product",
                "num_items": 3,
                "custom": {"coupon": "SPRING", "delivery_category": "home_delivery"},
            },
        }
        ev = parsed(hit.event)
        assert ev.event_id == "order-42"
        assert ev.data.value == 24.0
        assert ev.data.contents[1].id == "77"

    def test_content_ids_when_no_contents(self) -> None:
        hit = one(meta([("ev", "ViewContent"), ("cd[content_ids]", '["a", 12, true, ""]')]))
        assert hit.event["data"]["contents"] == [{"id": "a"}, {"id": "12"}]
        single = one(meta([("ev", "ViewContent"), ("cd[content_ids]", "SKU 9")]))
        assert single.event["data"]["contents"] == [{"id": "SKU 9"}]
        broken = one(meta([("ev", "ViewContent"), ("cd[content_ids]", "[oops")]))
        assert "contents" not in broken.event["data"]

    def test_other_standard_data_fields(self) -> None:
        hit = one(
            meta(
                [
                    ("ev", "Search"),
                    ("cd[search_string]", " shoes "),
                    ("cd[content_name]", "Shoes"),
                    ("cd[content_category]", "Footwear"),
                    ("cd[status]", "ok"),
                    ("cd[predicted_ltv]", "120.5"),
                ]
            )
        )
        assert hit.event["data"] == {
            "content_name": "Shoes",
            "content_category": "Footwear",
            "search_string": "shoes",
            "status": "ok",
            "predicted_ltv": 120.5,
        }
        parsed(hit.event)

    @pytest.mark.parametrize("mode", ["GET", "FGET", "SB", "POST", "get", None])
    def test_normal_request_modes_count(self, mode: str | None) -> None:
        pairs = [("ev", "PageView")] + ([("rqm", mode)] if mode else [])
        assert meta(pairs) is not None

    @pytest.mark.parametrize(
        "pairs",
        [
            [("id", "1"), ("dl", "https://shop.example/")],  # no ev
            [("ev", "")],
            [("ev", "Bad\nName")],
            [("ev", "PageView"), ("rqm", "XHR")],
            [("ev", "Microdata"), ("cd[Schema.org]", "[]")],
            [("ev", "SubscribedButtonClick")],
            [("ev", "PageView"), ("es", "automatic")],
        ],
    )
    def test_non_events_are_not_parsed(self, pairs: list[tuple[str, str]]) -> None:
        assert meta(pairs) is None

    def test_noscript_hit_without_page_url_is_source_other(self) -> None:
        hit = one(meta([("id", "473120943447503"), ("ev", "Lead"), ("noscript", "1")]))
        assert hit.event == {"event": "Lead", "time": int(NOW), "user": {}, "data": {}}
        assert parsed(hit.event).source is Source.OTHER
        hit.event["url"] = "https://shop.example/contact"  # the caller knows the Referer
        assert parsed(hit.event).source is Source.WEBSITE

    def test_missing_eid_gives_no_event_id_so_the_pipeline_derives_one(self) -> None:
        hit = one(meta([("ev", "Purchase"), ("cd[value]", "5"), ("cd[currency]", "USD")]))
        assert "event_id" not in hit.event
        assert parsed(hit.event).event_id == "x"
        with_order = one(
            meta(
                [
                    ("ev", "Purchase"),
                    ("cd[value]", "5"),
                    ("cd[currency]", "USD"),
                    ("cd[order_id]", "A-1"),
                ]
            )
        )
        assert parsed(with_order.event).event_id == "A-1"

    @pytest.mark.parametrize(
        ("ts", "expected"),
        [
            (str(NOW_MS - 10_000), int(NOW) - 10),  # ms
            (str(int(NOW) - 10), int(NOW) - 10),  # seconds are tolerated
            (str(NOW_MS + 3_600_000), int(NOW)),  # future: clamped (pitfall 9)
            (str(NOW_MS - int(MAX_CLIENT_LAG * 1000) - 1000), int(NOW)),  # wrong clock
            ("-5", int(NOW)),
            ("soon", int(NOW)),
            ("1e400", int(NOW)),
            ("", int(NOW)),
        ],
    )
    def test_client_time(self, ts: str, expected: int) -> None:
        hit = one(meta([("ev", "PageView"), ("ts", ts)]))
        assert hit.event["time"] == expected
        parsed(hit.event)

    def test_invalid_fields_are_dropped_not_repaired(self) -> None:
        pairs = [
            ("ev", "AddToCart"),
            ("eid", "e" * 300),
            ("dl", "javascript:alert(1)"),
            ("rl", "android-app://com.google.android.gm/"),
            ("cd[value]", "12,50"),
            ("cd[currency]", "EURO"),
            ("cd[num_items]", "-1"),
            ("cd[contents]", '[{"id": "A", "quantity": 1.5, "item_price": "x"}, {"quantity": 2}]'),
            ("cd[bad-key]", "v"),
            ("cd[note]", "line\nbreak"),
            ("ud[em]", " "),
            ("fbp", "fb.1.123.456"),
            ("fbc", "not-a-cookie"),
            ("id", "12 34"),
        ]
        hit = one(meta(pairs))
        assert hit.pixel_id is None
        assert hit.event == {
            "event": "AddToCart",
            "time": int(NOW),
            "user": {},
            "data": {"contents": [{"id": "A"}]},
        }
        parsed(hit.event)

    def test_nan_and_huge_values_are_dropped(self) -> None:
        for raw in ("nan", "inf", "1e13", "-1e13", "1_000"):
            hit = one(meta([("ev", "AddToCart"), ("cd[value]", raw)]))
            assert "value" not in hit.event["data"], raw

    def test_purchase_without_value_keeps_its_name_and_the_pipeline_rejects_it(self) -> None:
        hit = one(meta([("ev", "Purchase"), ("eid", "p1"), ("dl", "https://shop.example/")]))
        assert hit.event["event"] == "Purchase"
        assert field_errors(hit.event) == {
            ".data.value": "required for Purchase",
            ".data.currency": "required for Purchase",
        }

    def test_plain_user_data_is_passed_for_the_gateway_to_hash(self) -> None:
        hit = one(meta([("ev", "Lead"), ("ud[em]", " John@Example.com "), ("ud[zp]", "12345")]))
        assert hit.event["user"] == {"email": "John@Example.com", "zip": "12345"}
        assert parsed(hit.event).user.pii == {"em": ("John@Example.com",), "zp": ("12345",)}

    def test_posted_form_wins_over_the_query_and_mappings_are_accepted(self) -> None:
        form = [("ev", "Lead"), ("eid", "from-body"), ("cd[value]", "1"), ("rqm", "SB")]
        hit = one(meta([("id", "99"), ("eid", "from-query")], form))
        assert hit.pixel_id == "99"
        assert hit.event["event_id"] == "from-body"
        assert hit.event["data"] == {"value": 1.0}
        mapped = one(parse_meta_tr({"ev": "PageView", "id": "5"}, now=NOW))
        assert mapped.pixel_id == "5"

    def test_first_occurrence_wins(self) -> None:
        hit = one(meta([("ev", "Lead"), ("ev", "Purchase")]))
        assert hit.event["event"] == "Lead"

    def test_bounds(self) -> None:
        filler = [(f"x{i}", "1") for i in range(MAX_PARAMS)]
        assert meta([*filler, ("ev", "PageView")]) is None  # beyond the first 200
        long_url = "https://shop.example/?" + "a" * MAX_VALUE
        hit = one(meta([("ev", "PageView"), ("dl", long_url)]))
        assert "url" not in hit.event
        many = json.dumps([{"id": f"S{i}", "quantity": 1, "item_price": 1} for i in range(600)])
        assert len(many) > MAX_VALUE
        big = one(meta([("ev", "AddToCart"), ("cd[contents]", many)]))
        assert len(big.event["data"]["contents"]) == 500
        parsed(big.event)

    def test_custom_keys_are_capped(self) -> None:
        pairs = [("ev", "Lead")] + [(f"cd[k{i}]", "v") for i in range(80)]
        hit = one(meta(pairs))
        assert len(hit.event["data"]["custom"]) == 50
        parsed(hit.event)


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


# --- Snap ---------------------------------------------------------------------------------------

SNAP_PIXEL = "2a1b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"


class TestSnap:
    def test_form_encoded_purchase(self) -> None:
        body = urlencode(
            {
                "pid": SNAP_PIXEL,
                "ev": "PURCHASE",
                "pl": "https://shop.example/thanks",
                "rf": "https://shop.example/cart",
                "ts": str(NOW_MS - 2000),
                "v": "1.2.10",
                "u_hem": H_EMAIL,
                "u_hpn": H_PHONE,
                "e_cur": "GBP",
                "e_pr": "49.90",
                "e_tid": "T-1001",
                "e_iids": "SKU1,SKU2",
                "e_ni": "2",
                "client_dedup_id": "snap-dedup-1",
            }
        ).encode()
        hit = one(parse_snap([], body, "application/x-www-form-urlencoded;charset=UTF-8", now=NOW))
        assert hit == Hit(
            vendor="snap",
            pixel_id=SNAP_PIXEL,
            event={
                "event": "Purchase",
                "event_id": "snap-dedup-1",
                "time": int(NOW) - 2,
                "url": "https://shop.example/thanks",
                "source": "website",
                "referrer": "https://shop.example/cart",
                "user": {"email": H_EMAIL, "phone": H_PHONE},
                "data": {
                    "value": 49.9,
                    "currency": "GBP",
                    "order_id": "T-1001",
                    "contents": [{"id": "SKU1"}, {"id": "SKU2"}],
                    "num_items": 2,
                },
            },
        )
        parsed(hit.event)

    def test_json_body_and_order_id_as_dedup_fallback(self) -> None:
        body = json.dumps(
            {
                "pid": SNAP_PIXEL,
                "ev": "PURCHASE",
                "pl": "https://shop.example/thanks",
                "e_cur": "usd",
                "e_pr": 12,
                "e_tid": "T-9",
                "e_iids": ["A", 7],
                "e_sm": "email",
                "e_desc": "summer order",
            }
        ).encode()
        hit = one(parse_snap([], body, "application/json", now=NOW))
        assert hit.event["data"] == {
            "value": 12.0,
            "currency": "USD",
            "order_id": "T-9",
            "contents": [{"id": "A"}, {"id": "7"}],
            "custom": {"description": "summer order", "sign_up_method": "email"},
        }
        assert parsed(hit.event).event_id == "T-9"  # Snap also dedups PURCHASE on it

    def test_noscript_query_and_sniffed_json(self) -> None:
        query = [("id", "ignored"), ("pid", SNAP_PIXEL), ("ev", "PAGE_VIEW"), ("noscript", "1")]
        hit = one(parse_snap(query, b"", "", now=NOW))
        assert hit.event == {"event": "PageView", "time": int(NOW), "user": {}, "data": {}}
        sniffed = one(parse_snap([], b'{"ev": "SIGN_UP", "pid": "p1"}', "text/plain", now=NOW))
        assert (sniffed.pixel_id, sniffed.event["event"]) == ("p1", "CompleteRegistration")

    def test_body_wins_over_query(self) -> None:
        hit = one(parse_snap([("ev", "PAGE_VIEW")], b"ev=ADD_CART", "", now=NOW))
        assert hit.event["event"] == "AddToCart"

    @pytest.mark.parametrize(
        ("snap", "canonical"),
        [*snap_hits.SNAP_EVENTS.items(), ("SAVE", "SAVE"), ("CUSTOM_EVENT_1", "CUSTOM_EVENT_1")],
    )
    def test_event_names(self, snap: str, canonical: str) -> None:
        hit = one(parse_snap([("ev", snap), ("e_pr", "1"), ("e_cur", "EUR")], b"", "", now=NOW))
        assert hit.event["event"] == canonical
        parsed(hit.event)

    def test_plain_identifiers_and_no_event(self) -> None:
        hit = one(parse_snap([("ev", "SIGN_UP"), ("u_hem", "a@b.example")], b"", "", now=NOW))
        assert hit.event["user"] == {}
        assert parse_snap([("pid", SNAP_PIXEL)], b"", "", now=NOW) is None
        assert parse_snap([], b"{bad json", "application/json", now=NOW) is None


# --- GA4 ----------------------------------------------------------------------------------------

GA4_SHARED = [
    ("v", "2"),
    ("tid", "G-ABCDE12345"),
    ("gtm", "45je4910v9"),
    ("_p", "1726947190123"),
    ("gcs", "G111"),
    ("gcd", "13r3r3r3r5l1"),
    ("cid", "1234567890.1726940000"),
    ("ul", "en-us"),
    ("sr", "1440x900"),
    ("uaa", "arm"),
    ("_s", "2"),
    ("sid", "1726947000"),
    ("sct", "4"),
    ("seg", "1"),
    ("dl", "https://shop.example/product/tee?gclid=Cj0KCQ_wcB"),
    ("dr", "https://www.google.com/"),
    ("dt", "Tee"),
    ("tfd", "5012"),
]


def ga4_line(params: list[tuple[str, str]]) -> str:
    """Return one body line as gtag writes it (encodeURIComponent-style escapes)."""
    return "&".join(
        f"{quote(k, safe='.', errors='surrogatepass')}={quote(v, safe='', errors='surrogatepass')}"
        for k, v in params
    )


class TestGA4:
    def test_batched_post_body(self) -> None:
        body = "\n".join(
            [
                ga4_line([("en", "page_view"), ("_ee", "1"), ("ep.page_type", "product")]),
                ga4_line([("en", "view_item"), ("cu", "EUR"), ("pr1", "idSKU_1~nmTee~pr10.01")]),
                ga4_line([("en", "scroll"), ("epn.percent_scrolled", "90"), ("_et", "5")]),
                ga4_line([("en", "user_engagement"), ("_et", "12000")]),
                ga4_line([("_et", "300")]),  # engagement ping without en
            ]
        ).encode()
        hits_ = parse_ga4(GA4_SHARED, body, now=NOW)
        consent = {"ad_storage": "granted", "analytics_storage": "granted"}
        base = {
            "time": int(NOW),
            "url": "https://shop.example/product/tee?gclid=Cj0KCQ_wcB",
            "source": "website",
            "referrer": "https://www.google.com/",
            "user": {},
        }
        assert [h.event for h in hits_] == [
            {
                "event": "PageView",
                **base,
                "data": {"custom": {"page_type": "product"}},
                "consent": consent,
            },
            {
                "event": "ViewContent",
                **base,
                "data": {"currency": "EUR", "contents": [{"id": "SKU_1", "price": 10.01}]},
                "consent": consent,
            },
            {
                "event": "scroll",
                **base,
                "data": {"custom": {"percent_scrolled": 90.0}},
                "consent": consent,
            },
        ]
        for hit in hits_:
            assert hit.vendor == "ga4"
            assert hit.pixel_id == "G-ABCDE12345"
            assert hit.vendor_ids == {
                "client_id": "1234567890.1726940000",
                "session_id": "1726947000",
            }
            ev = parsed(hit.event)
            assert ev.consent is not None
            assert ev.consent.ad_storage is True

    def test_single_purchase_in_the_query(self) -> None:
        query = [
            *GA4_SHARED,
            ("uid", "customer-9"),
            ("en", "purchase"),
            ("cu", "USD"),
            ("ep.transaction_id", "T_12345"),
            ("epn.value", "30.03"),
            ("epn.tax", "4.90"),
            ("ep.coupon", "SUMMER_FUN"),
            ("pr2", "idSKU_2~nmPants~qt1~pr10"),
            ("pr1", "idSKU_12345~nmStan and Friends Tee~pr10.01~qt2~k0color~vred"),
            ("pr3", "nmNo id"),
        ]
        [hit] = parse_ga4(query, b"", now=NOW)
        assert hit.event["event"] == "Purchase"
        assert hit.event["event_id"] == "T_12345"
        assert hit.event["data"] == {
            "value": 30.03,
            "currency": "USD",
            "order_id": "T_12345",
            "contents": [
                {"id": "SKU_12345", "quantity": 2, "price": 10.01},
                {"id": "SKU_2", "quantity": 1, "price": 10.0},
            ],
            "custom": {"coupon": "SUMMER_FUN", "tax": 4.9},
        }
        assert hit.vendor_ids["user_id"] == "customer-9"
        ev = parsed(hit.event)
        assert (ev.event_id, ev.data.value, ev.data.currency) == ("T_12345", 30.03, "USD")

    def test_event_id_param_wins_and_empty_transaction_id_is_ignored(self) -> None:
        [a] = parse_ga4(
            [("en", "purchase"), ("ep.event_id", "E1"), ("ep.transaction_id", "T1")], b"", now=NOW
        )
        assert (a.event["event_id"], a.event["data"]["order_id"]) == ("E1", "T1")
        [b] = parse_ga4(
            [("en", "purchase"), ("ep.transaction_id", ""), ("epn.value", "1"), ("cu", "EUR")],
            b"",
            now=NOW,
        )
        assert "event_id" not in b.event  # pitfall 19
        assert "order_id" not in b.event["data"]
        assert parsed(b.event).event_id == "x"
        [c] = parse_ga4([("en", "add_to_cart"), ("ep.transaction_id", "T2")], b"", now=NOW)
        assert "event_id" not in c.event  # only purchase takes its id from the transaction

    def test_line_params_override_shared_ones(self) -> None:
        body = b"en=page_view&dl=https%3A%2F%2Fshop.example%2Fb\r\n\r\nen=search&ep.search_term=t"
        hits_ = parse_ga4([("dl", "https://shop.example/a"), ("tid", "G-1")], body, now=NOW)
        assert [h.event.get("url") for h in hits_] == [
            "https://shop.example/b",
            "https://shop.example/a",
        ]
        assert hits_[1].event["event"] == "Search"
        assert hits_[1].event["data"] == {"search_string": "t"}
        [hit] = parse_ga4([("en", "add_to_cart"), ("ep.currency", "chf")], b"", now=NOW)
        assert hit.event["data"] == {"currency": "CHF"}

    @pytest.mark.parametrize(("ga4", "canonical"), [*GA4_EVENTS.items(), ("scroll", "scroll")])
    def test_event_names(self, ga4: str, canonical: str) -> None:
        query = [("en", ga4), ("dl", "https://shop.example/"), ("epn.value", "5"), ("cu", "EUR")]
        [hit] = parse_ga4(query, b"", now=NOW)
        assert hit.event["event"] == canonical
        parsed(hit.event)

    def test_consent_denied_and_odd_ids(self) -> None:
        query = [("en", "page_view"), ("gcs", "G100"), ("cid", "GA1.1.123.456"), ("sid", "x")]
        [hit] = parse_ga4(query, b"", now=NOW)
        assert hit.event["consent"] == {"ad_storage": "denied", "analytics_storage": "denied"}
        assert hit.vendor_ids == {}
        consent = parsed(hit.event).consent
        assert consent is not None
        assert consent.analytics_storage is False

    @pytest.mark.parametrize(
        ("query", "body"),
        [
            ([("tid", "G-1"), ("_et", "100")], b""),  # engagement ping
            ([("tid", "G-1")], b"_et=1\n_et=2"),
            ([("en", "session_start")], b""),
            ([("en", "firebase_campaign")], b""),
            ([("en", "bad\tname")], b""),
            ([("en", "page_view")], b"x" * (MAX_BODY + 1)),  # body too big
        ],
    )
    def test_not_events(self, query: list[tuple[str, str]], body: bytes) -> None:
        assert parse_ga4(query, body, now=NOW) == []

    def test_line_count_is_bounded(self) -> None:
        body = "\n".join(["en=scroll"] * (MAX_PARAMS + 50)).encode()
        assert len(parse_ga4([], body, now=NOW)) == MAX_PARAMS

    def test_bad_percent_encoding_is_tolerated(self) -> None:
        [hit] = parse_ga4([], b"en=page_view&ep.x=%E0%A4%A&dl=%ZZhttp", now=NOW)
        assert hit.event["data"]["custom"]["x"] == "\ufffd%A"
        assert "url" not in hit.event
        parsed(hit.event)


# --- robustness ---------------------------------------------------------------------------------

_R = TypeVar("_R")


@contextmanager
def unguarded() -> Iterator[None]:
    """Run the parsers without their last-resort guard, so that any bug surfaces."""

    def run(parse: Callable[[], _R], default: _R) -> _R:
        return parse()

    with (
        mock.patch.object(meta_hits, "guarded", run),
        mock.patch.object(tiktok_hits, "guarded", run),
        mock.patch.object(snap_hits, "guarded", run),
        mock.patch.object(ga4_hits, "guarded", run),
    ):
        yield


def assert_acceptable(hit: Hit) -> None:
    """Every produced event parses; only a Purchase may lack its value/currency."""
    result = parse_event(hit.event, now=NOW, new_id=lambda: "x")
    if isinstance(result, list):
        assert hit.event["event"] == "Purchase", result
        assert {e.path for e in result} <= {".data.value", ".data.currency"}, result
        assert all("required" in e.reason for e in result)


FUZZ = settings(max_examples=150, deadline=None)
FUZZ_JSON = settings(max_examples=100, deadline=None)
META_KEYS = [
    *("id", "ev", "eid", "dl", "rl", "ts", "fbp", "fbc", "rqm", "es"),
    *(f"cd[{k}]" for k in ("value", "currency", "contents", "content_ids", "num_items", "x")),
    *(f"ud[{k}]" for k in ("em", "ph", "external_id", "country")),
]
NAMES = ["Purchase", "PageView", "Lead", "CompletePayment", "Pageview", "PURCHASE", "ADD_CART"]
NAMES += ["page_view", "purchase", "scroll", "user_engagement", "", "bad name\n", "A" * 101]
texts = st.text(max_size=40)
values = st.one_of(
    texts,
    st.sampled_from(
        [
            *NAMES,
            "https://shop.example/",
            "EUR",
            "12.5",
            "-3",
            "1e12",
            str(NOW_MS),
            str(NOW_MS + 10**9),
            FBP,
            FBC,
            H_EMAIL,
            "A-1",
            "idSKU~qt2~pr3.5",
            '[{"id": "a", "quantity": 1, "item_price": 2}]',
            '[{"id": " ", "quantity": -1, "item_price": "1e400"}]',
            '["a", 1, null]',
            "nan",
            "\ud800",
            "x" * 300,
        ]
    ),
)
pairs = st.lists(st.tuples(st.sampled_from(META_KEYS) | texts, values), max_size=25)
named_pairs = st.tuples(st.sampled_from(NAMES), pairs).map(lambda t: [("ev", t[0]), *t[1]])
anything = st.one_of(
    st.none(),
    st.integers(),
    st.floats(),
    texts,
    st.binary(max_size=50),
    st.lists(st.one_of(st.tuples(texts), st.tuples(texts, st.integers()), texts)),
    st.dictionaries(texts, st.one_of(texts, st.integers(), st.none())),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), values)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=10,
)


def loose(keys: list[str], leaf: st.SearchStrategy[Any] = json_values) -> st.SearchStrategy[Any]:
    """A JSON object with any subset of `keys` (or sometimes something else entirely)."""
    obj = st.fixed_dictionaries({}, optional=dict.fromkeys(keys, leaf))
    return st.integers(0, 3).flatmap(lambda i: obj if i else json_values)


TT_CONTENT = loose(["content_id", "quantity", "price", "content_name"], scalars)
TT_PROPERTIES = loose(
    ["value", "currency", "contents", "content_ids", "order_id", "query", "num_items", "extra"],
    st.one_of(scalars, st.lists(TT_CONTENT, max_size=3)),
)
TT_CONTEXT = st.fixed_dictionaries(
    {},
    optional={
        "page": loose(["url", "referrer"]),
        "ad": loose(["callback"]),
        "user": loose(["email", "phone_number", "external_id"]),
        "pixel": loose(["code"]),
    },
)
TT_EVENT = st.fixed_dictionaries(
    {"event": st.one_of(st.sampled_from(NAMES), json_values)},
    optional={
        "event_id": json_values,
        "timestamp": st.one_of(json_values, st.sampled_from(["2026-09-21T14:13:00Z", "2026"])),
        "context": TT_CONTEXT,
        "properties": TT_PROPERTIES,
    },
)
TT_BODY = st.one_of(
    TT_EVENT,
    st.lists(TT_EVENT, max_size=3),
    st.lists(TT_EVENT, max_size=3).map(lambda b: {"batch": b}),
).map(lambda doc: json.dumps(doc).encode())
SNAP_KEYS = ["pid", "ev", "pl", "rf", "ts", "u_hem", "u_hpn", "e_cur", "e_pr", "e_tid", "e_iids"]
SNAP_KEYS += ["e_ni", "e_ss", "client_dedup_id"]
SNAP_NAMES = st.sampled_from([*NAMES, *snap_hits.SNAP_EVENTS, "SAVE"])
GA4_KEYS = ["en", "tid", "dl", "dr", "cu", "gcs", "cid", "sid", "uid", "ep.event_id"]
GA4_KEYS += ["ep.transaction_id", "epn.value", "ep.value", "ep.x", "epn.y", "pr1", "pr2", "pr201"]
ga4_pairs = st.lists(st.tuples(st.sampled_from(GA4_KEYS) | texts, values), max_size=8)
ga4_lines = st.lists(
    st.tuples(st.sampled_from(NAMES), ga4_pairs).map(lambda t: ga4_line([("en", t[0]), *t[1]]))
    | ga4_pairs.map(ga4_line)
    | texts,
    max_size=5,
).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))


class TestNeverRaises:
    @FUZZ
    @given(st.one_of(named_pairs, pairs), pairs)
    def test_meta_pairs(self, query: list[tuple[str, str]], form: list[tuple[str, str]]) -> None:
        with unguarded():
            hit = parse_meta_tr(query, form, now=NOW)
        if hit is not None:
            assert_acceptable(hit)

    @FUZZ
    @given(anything, anything)
    def test_meta_wrong_types(self, query: Any, form: Any) -> None:
        with unguarded():
            hit = parse_meta_tr(query, form, now=NOW)
        if hit is not None:
            assert_acceptable(hit)

    @FUZZ_JSON
    @given(st.one_of(TT_BODY, TT_BODY, st.binary(max_size=200)))
    def test_tiktok(self, body: bytes) -> None:
        with unguarded():
            found = parse_tiktok(body, now=NOW)
        for hit in found:
            assert_acceptable(hit)

    @FUZZ
    @given(
        pairs,
        st.one_of(
            st.binary(max_size=200),
            st.tuples(SNAP_NAMES, st.lists(st.tuples(st.sampled_from(SNAP_KEYS), values))).map(
                lambda t: urlencode([("ev", t[0]), *t[1]], errors="surrogatepass").encode()
            ),
        ),
        st.sampled_from(["", "application/json", "application/x-www-form-urlencoded", "x/y"]),
    )
    def test_snap(self, query: list[tuple[str, str]], body: bytes, content_type: str) -> None:
        with unguarded():
            hit = parse_snap(query, body, content_type, now=NOW)
        if hit is not None:
            assert_acceptable(hit)

    @FUZZ_JSON
    @given(
        st.lists(st.tuples(st.sampled_from(SNAP_KEYS), values), max_size=5),
        st.tuples(
            SNAP_NAMES, loose(SNAP_KEYS, st.one_of(scalars, st.lists(scalars, max_size=3)))
        ).map(lambda t: {**t[1], "ev": t[0]} if isinstance(t[1], dict) else t[1]),
    )
    def test_snap_json(self, query: list[tuple[str, str]], doc: Any) -> None:
        body = json.dumps(doc).encode()
        with unguarded():
            hit = parse_snap(query, body, "application/json", now=NOW)
        if hit is not None:
            assert_acceptable(hit)

    @FUZZ
    @given(st.one_of(ga4_pairs, st.just([("en", "purchase")])), ga4_lines)
    def test_ga4(self, query: list[tuple[str, str]], body: bytes) -> None:
        with unguarded():
            found = parse_ga4(query, body, now=NOW)
        for hit in found:
            assert_acceptable(hit)

    @FUZZ
    @given(anything, st.one_of(st.binary(max_size=300), anything))
    def test_ga4_wrong_types(self, query: Any, body: Any) -> None:
        with unguarded():
            found = parse_ga4(query, body, now=NOW)
        for hit in found:
            assert_acceptable(hit)

    @FUZZ
    @given(anything, anything, anything)
    def test_wrong_types_everywhere(self, a: Any, b: Any, c: Any) -> None:
        with unguarded():
            assert parse_tiktok(a, now=NOW) == [] or isinstance(a, bytes)
            parse_snap(a, b, c, now=NOW)

    def test_guard_turns_a_bug_into_no_result(self) -> None:
        def boom(*_: object) -> None:
            raise RuntimeError("bug")

        with (
            mock.patch.object(meta_hits, "_meta_tr", boom),
            mock.patch.object(ga4_hits, "_ga4", boom),
        ):
            assert parse_meta_tr([("ev", "PageView")], now=NOW) is None
            assert parse_ga4([("en", "page_view")], b"", now=NOW) == []
