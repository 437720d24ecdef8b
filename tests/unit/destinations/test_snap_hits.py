"""Snap pixel hits → canonical events (destinations/snap/hits.py)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from hitsamples import (
    H_EMAIL,
    H_PHONE,
    NOW,
    NOW_MS,
    one,
    parsed,
)

from gateway.core.hits import Hit
from gateway.destinations.snap import hits as snap_hits
from gateway.destinations.snap.hits import parse_snap

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
