"""Meta pixel /tr hits → canonical events for mirroring (destinations/meta/hits.py)."""

from __future__ import annotations

import json

import pytest
from hitsamples import (
    FBC,
    FBP,
    H_EMAIL,
    H_EXT,
    H_PHONE,
    NOW,
    NOW_MS,
    field_errors,
    one,
    parsed,
    query_of,
)

from gateway.core.event import Source
from gateway.core.hits import MAX_CLIENT_LAG, MAX_PARAMS, MAX_VALUE, Hit
from gateway.destinations.meta.hits import parse_meta_tr

# platforms.md §1.10 "Real example", with its elided values (…) filled in.
META_EXAMPLE = (
    "https://www.facebook.com/tr/?id=473120943447503&ev=PageView"
    "&dl=https%3A%2F%2Fwww.example.com%2Fpricing%3Fplan%3Dpro&rl=https%3A%2F%2Fwww.google.com%2F"
    "&if=false&ts=1655227981442&sw=1440&sh=900&ud[external_id]=" + H_EXT + "&v=2.9.62&r=stable"
    "&a=tmhubspot&ec=0&o=30&fbp=fb.1.1642534104092.1825265756&it=1655227981424&coo=false"
    "&exp=p0&rqm=GET"
)
META_EXAMPLE_NOW = 1_655_228_000.0


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
