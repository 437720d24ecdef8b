"""GA4 /g/collect hits → canonical events (destinations/ga4/hits.py)."""

from __future__ import annotations

import pytest
from hitsamples import (
    NOW,
    ga4_line,
    parsed,
)

from gateway.core.hits import MAX_BODY, MAX_PARAMS
from gateway.destinations.ga4.hits import GA4_EVENTS, parse_ga4

# A real gtag /g/collect query (the parameters shared by every event of the hit).
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
