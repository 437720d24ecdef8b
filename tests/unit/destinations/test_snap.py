"""Snap destination: payload mapping, request shape, answer classification (platforms.md §3)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.event import Content, Data, Event, Source, User
from gateway.core.identity import hash_pii
from gateway.core.secret import Secret
from gateway.destinations import DESTINATIONS
from gateway.destinations.base import BatchVerdict, Delivered, Paused, Permanent, Retry
from gateway.destinations.meta.destination import Meta, MetaSettings
from gateway.destinations.snap.destination import EVENT_NAMES, SNAP_EVENTS, Snap, SnapSettings
from gateway.store.base import DeadReason

NOW = 1_705_508_777  # the event_time of Snap's own example request (platforms.md §3.2)
PIXEL = "5bf81ee1-15b1-4dc1-b636-d7dae49b950e"
# Snap's documented normalisation examples (platforms.md §3.3):
EMAIL_IN, EMAIL_SHA = (
    "  Person@Example.com ",
    "542d240129883c019e106e3b1b2d3f3cb3537c43c425364de8e951d5a3083345",
)
PHONE_IN, PHONE_NORMALISED = "+44 844 412 4653", "448444124653"
PHONE_SHA = "dc008fda46e2e64002cf2f82a4906236282d431c4f75e5b60bfe79fc48546383"
SCCID = "6f1a9b-ScCid_Value.1"
SCID = "8c2e5a0b-3d4f-4a6b-9c8d-1e2f3a4b5c6d"
HEX64 = re.compile(r"[0-9a-f]{64}")


def snap(**kw: Any) -> Snap:
    return Snap(SnapSettings(pixel_id=PIXEL, access_token=Secret("snap-tok"), **kw))


def hashed(**pii: str) -> dict[str, dict[str, tuple[str, ...]]]:
    keys = {"email": "em", "phone": "ph", "first_name": "fn", "zip": "zp"}
    result, warnings = hash_pii({keys[k]: (v,) for k, v in pii.items()}, ["meta"])
    assert warnings == []
    return result


def event(**kw: Any) -> Event:
    base: dict[str, Any] = {
        "event": "Purchase",
        "event_id": "order-1",
        "time": NOW,
        "source": Source.WEBSITE,
        "url": "https://shop.example/thanks",
        "referrer": "https://www.snapchat.com/",
        "user": User(
            hashed=hashed(email=EMAIL_IN, phone=PHONE_IN),
            ip="203.0.113.7",
            user_agent="Mozilla/5.0",
            fbp="fb.1.1596403881668.1116446470",
            click_ids={"sccid": SCCID, "scid": SCID, "fbclid": "AbC-123"},
        ),
        "data": Data(
            value=49.9,
            currency="eur",
            order_id="order-1",
            contents=(Content("sku-1", 2, 10.0), Content("sku-2", None, 29.9)),
        ),
    }
    base.update(kw)
    return Event(**base)


def response(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    if body is None:
        return httpx.Response(status, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


class TestPayload:
    def test_golden_purchase_from_snaps_documented_examples(self) -> None:
        payload = snap().payload(event())
        assert payload == {
            "event_name": "PURCHASE",
            "event_time": 1705508777,
            "event_id": "order-1",
            "action_source": "WEB",
            "event_source_url": "https://shop.example/thanks",
            "user_data": {
                "em": [EMAIL_SHA],
                "ph": [PHONE_SHA],
                "client_ip_address": "203.0.113.7",
                "client_user_agent": "Mozilla/5.0",
                "sc_click_id": SCCID,
                "sc_cookie1": SCID,
            },
            "custom_data": {
                "value": 49.9,
                "currency": "EUR",
                "order_id": "order-1",
                "content_ids": ["sku-1", "sku-2"],
                "contents": [
                    {"id": "sku-1", "quantity": 2, "item_price": 10.0},
                    {"id": "sku-2", "item_price": 29.9},
                ],
                "num_items": 3,
            },
        }

    def test_phone_is_normalised_as_snap_documents(self) -> None:
        from gateway.core.normalize import normalize

        assert normalize("ph", PHONE_IN, "meta") == PHONE_NORMALISED
        assert normalize("em", EMAIL_IN, "meta") == "person@example.com"

    def test_every_hashed_key_is_a_list_even_for_several_values(self) -> None:
        two, _ = hash_pii({"em": ("a@x.example", "b@x.example"), "fn": ("Ann",)}, ["meta"])
        user = snap().user_data(event(user=User(hashed=two)))
        assert len(user["em"]) == 2
        assert isinstance(user["fn"], list)

    def test_page_view_without_pii_sends_ip_and_ua_plain(self) -> None:
        e = event(
            event="PageView",
            user=User(ip="2001:db8::1", user_agent="UA/1"),
            data=Data(),
        )
        payload = snap().payload(e)
        assert payload["event_name"] == "PAGE_VIEW"
        assert payload["user_data"] == {
            "client_ip_address": "2001:db8::1",
            "client_user_agent": "UA/1",
        }
        assert "custom_data" not in payload
        assert snap().validate(e) is None

    def test_custom_properties_go_to_custom_fields_as_strings(self) -> None:
        data = Data(custom={"sign_up_method": "google", "coupon": "X1", "vip": True, "n": 2.0})
        payload = snap().payload(event(event="CompleteRegistration", data=data))
        assert payload["event_name"] == "SIGN_UP"
        assert payload["custom_data"] == {
            "sign_up_method": "google",
            "custom_fields": {"coupon": "X1", "vip": "true", "n": "2.0"},
        }

    def test_ldu_sets_data_processing_options(self) -> None:
        assert snap().payload(event(ldu=True))["data_processing_options"] == ["LDU"]
        assert "data_processing_options" not in snap().payload(event())

    @pytest.mark.parametrize(
        ("source", "expected"),
        [
            (Source.WEBSITE, "WEB"),
            (Source.APP, "MOBILE_APP"),
            (Source.PHYSICAL_STORE, "OFFLINE"),
            (Source.PHONE_CALL, "OFFLINE"),
        ],
    )
    def test_action_source(self, source: Source, expected: str) -> None:
        assert snap().payload(event(source=source))["action_source"] == expected


class TestEventNames:
    @pytest.mark.parametrize(("canonical", "name"), sorted(EVENT_NAMES.items()))
    def test_standard_events_map_to_snap_names(self, canonical: str, name: str) -> None:
        assert name in SNAP_EVENTS
        assert snap().event_name(event(event=canonical)) == name

    def test_snap_names_pass_through(self) -> None:
        assert snap().event_name(event(event="LIST_VIEW")) == "LIST_VIEW"

    def test_names_without_a_snap_event_are_refused_unless_mapped(self) -> None:
        lead = event(event="Lead", data=Data())
        problem = snap().validate(lead)
        assert problem is not None
        assert "custom_events" in problem
        mapped = snap(custom_events={"Lead": "SIGN_UP", "Quiz": "CUSTOM_EVENT_1"})
        assert mapped.validate(lead) is None
        assert mapped.payload(lead)["event_name"] == "SIGN_UP"
        assert mapped.event_name(event(event="Quiz")) == "CUSTOM_EVENT_1"
        wrong = snap(custom_events={"Lead": "LEAD"})
        assert "no Snap v3 event" in (wrong.validate(lead) or "")


class TestValidate:
    def test_purchase_needs_value_and_currency(self) -> None:
        assert snap().validate(event(data=Data(value=1.0))) == (
            "PURCHASE needs data.value and data.currency"
        )

    def test_needs_email_phone_or_ip_and_ua(self) -> None:
        only_ip = event(user=User(ip="203.0.113.7", click_ids={"scid": SCID}))
        assert "email, a phone" in (snap().validate(only_ip) or "")
        assert (
            snap().validate(replace(only_ip, user=replace(only_ip.user, user_agent="UA"))) is None
        )

    def test_website_events_need_a_url(self) -> None:
        assert "url" in (snap().validate(event(url=None)) or "")

    def test_window_is_37_days(self) -> None:
        e = event()
        assert not snap().too_old(e, NOW + 36 * 86400)
        assert snap().too_old(e, NOW + 37 * 86400)


class TestClickIdsStayWithSnap:
    def test_meta_never_sends_snap_ids(self) -> None:
        meta = Meta(MetaSettings(pixel_id="1234567890", access_token=Secret("t")))
        text = json.dumps(meta.payload(event()))
        assert SCCID not in text
        assert SCID not in text
        assert "sc_click_id" not in text
        assert "sc_cookie1" not in text

    def test_snap_never_sends_other_vendors_ids(self) -> None:
        text = json.dumps(snap().payload(event()))
        assert "fb.1." not in text
        assert "AbC-123" not in text
        assert "fbp" not in text


class TestRequest:
    def test_post_json_with_access_token_query(self) -> None:
        request = snap().build_request([event(), event(event_id="order-2")])
        assert request.method == "POST"
        assert str(request.url) == (
            f"https://tr.snapchat.com/v3/{PIXEL}/events?access_token=snap-tok"
        )
        assert request.headers["content-type"] == "application/json"
        doc = json.loads(request.content)
        assert [e["event_id"] for e in doc["data"]] == ["order-1", "order-2"]
        assert set(doc) == {"data"}

    def test_test_mode_and_test_events_use_the_validate_endpoint(self) -> None:
        assert snap(test_mode=True).build_request([event()]).url.path.endswith("/events/validate")
        plain = snap()
        test_event = event(test_code="TEST1")
        assert plain.batch_key(test_event) != plain.batch_key(event())
        assert plain.build_request([test_event]).url.path == f"/v3/{PIXEL}/events/validate"

    def test_registered(self) -> None:
        reg = DESTINATIONS["snap"]
        assert reg.settings is SnapSettings
        assert reg.hash_rules == "meta"
        assert isinstance(reg.factory(SnapSettings(pixel_id=PIXEL, access_token=Secret("t"))), Snap)

    def test_settings_repr_hides_the_token(self) -> None:
        assert "snap-tok" not in repr(snap().settings)


class TestClassify:
    def verdict(self, resp: httpx.Response, n: int = 1) -> BatchVerdict:
        events = [event(event_id=f"e{i}") for i in range(n)]
        return snap().classify(events, resp, float(NOW))

    def test_valid_is_delivered(self) -> None:
        ok = {"status": "VALID", "reason": "Events have been processed successfully."}
        assert self.verdict(response(200, ok)) == BatchVerdict(Delivered())
        assert self.verdict(response(200)) == BatchVerdict(Delivered())

    @pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
    def test_server_errors_retry(self, status: int) -> None:
        v = self.verdict(response(status, {"status": "INVALID", "reason": "internal"}))
        assert isinstance(v.outcome, Retry)
        assert not v.bisect

    def test_rate_limit_retries_with_backoff_or_retry_after(self) -> None:
        v = self.verdict(response(429, {"status": "INVALID", "reason": "Too many requests"}))
        assert v.outcome == Retry("HTTP 429, INVALID: Too many requests", None)
        v = self.verdict(response(429, headers={"Retry-After": "7"}))
        assert isinstance(v.outcome, Retry)
        assert v.outcome.after == 7.0

    @pytest.mark.parametrize("status", [401, 403, 404])
    def test_auth_and_pixel_errors_pause_the_route(self, status: int) -> None:
        v = self.verdict(response(status, {"status": "INVALID", "reason": "Invalid access token"}))
        assert isinstance(v.outcome, Paused)
        assert "snap-tok" not in v.outcome.reason

    def test_an_event_named_as_bad_is_isolated_by_bisecting(self) -> None:
        body = {
            "status": "INVALID",
            "event": 2,
            "errors": {"codes": ["INVALID_FIELD"], "error_msgs": ["data[2].user_data.em: bad"]},
        }
        v = self.verdict(response(400, body), n=4)
        assert v.bisect
        assert v.per_event is None
        assert isinstance(v.outcome, Permanent)
        assert v.outcome.reason is DeadReason.INVALID_FIELD
        assert v.outcome.detail == (
            "HTTP 400, INVALID, event 2: INVALID_FIELD; data[2].user_data.em: bad"
        )

    def test_single_bad_event_is_permanent(self) -> None:
        body = {"status": "INVALID", "event": 0, "errors": {"codes": ["X"], "error_msgs": []}}
        v = self.verdict(response(400, body))
        assert isinstance(v.outcome, Permanent)
        assert v.outcome.reason is DeadReason.INVALID_FIELD

    def test_request_level_rejection_is_bisected(self) -> None:
        v = self.verdict(response(400, {"status": "INVALID", "reason": "too many events"}), n=3)
        assert v.bisect
        assert isinstance(v.outcome, Permanent)
        assert v.outcome.reason is DeadReason.PLATFORM_REJECTED
        assert "too many events" in v.outcome.detail

    def test_invalid_status_in_a_200_is_not_delivered(self) -> None:
        body = {"status": "INVALID", "event": 0, "errors": {"codes": ["NOT_HASHED"]}}
        v = self.verdict(response(200, body))
        assert isinstance(v.outcome, Permanent)

    def test_non_json_error_falls_back_to_status(self) -> None:
        v = self.verdict(httpx.Response(400, text="<html>bad</html>"), n=2)
        assert v.bisect
        assert isinstance(v.outcome, Permanent)


# --- identifier rules, property-tested -----------------------------------------------------------

emails = st.emails().map(lambda e: e.upper() if len(e) % 2 else f"  {e} ")
phones = st.from_regex(
    r"\+(1 650 [2-9][0-9]{2} [0-9]{4}|44 20 7[0-9]{3} [0-9]{4}|49 30 [1-9][0-9]{7})", fullmatch=True
)


@settings(max_examples=60, deadline=None)
@given(email=emails, phone=phones)
def test_identifiers_are_64_hex_idempotent_and_never_double_hashed(email: str, phone: str) -> None:
    first, _ = hash_pii({"em": (email,), "ph": (phone,)}, ["meta"])
    user = snap().user_data(event(user=User(hashed=first)))
    for key in ("em", "ph"):
        assert isinstance(user[key], list)
        for digest in user[key]:
            assert HEX64.fullmatch(digest)
    # Feeding the digests back in (a retry path, a shop that hashed already) changes nothing.
    again, _ = hash_pii({k: tuple(v) for k, v in first["meta"].items()}, ["meta"])
    assert again == first
    # Normalising twice is normalising once.
    from gateway.core.normalize import normalize

    once = normalize("em", email, "meta")
    assert once is not None
    assert normalize("em", once, "meta") == once


def test_config_errors_name_the_snap_key(tmp_path: Any) -> None:
    from gateway.config import ConfigError, parse

    snap_table = {"pixel_id": "not a pixel", "max_batch": 2001, "custom_events": {"Lead": 1}}
    doc = {"sites": [{"id": "s", "destinations": {"snap": snap_table}}]}
    with pytest.raises(ConfigError) as info:
        parse(doc, {}, tmp_path)
    text = str(info.value)
    assert "sites[0].destinations.snap.pixel_id: expected a Snap pixel id (UUID)" in text
    assert "sites[0].destinations.snap.access_token: required" in text
    assert "sites[0].destinations.snap.max_batch: expected <= 2000" in text
    assert "sites[0].destinations.snap.custom_events: expected a table of strings" in text
