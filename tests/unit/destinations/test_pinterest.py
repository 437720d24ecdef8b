"""Pinterest destination: payload mapping, request, answer classification (platforms.md §5)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.event import Consent, Content, Data, Event, Source, User
from gateway.core.identity import hash_pii
from gateway.core.normalize import normalize
from gateway.core.secret import Secret
from gateway.destinations import DESTINATIONS
from gateway.destinations.base import BatchVerdict, Delivered, Paused, Permanent, Retry
from gateway.destinations.meta.destination import Meta, MetaSettings
from gateway.destinations.pinterest.destination import (
    EVENT_NAMES,
    PINTEREST_EVENTS,
    Pinterest,
    PinterestSettings,
)
from gateway.store.base import DeadReason

# The documented example request of Pinterest's v5 `events/create` (platforms.md §5.2, OpenAPI):
# event_time 1451431341, event_id "eventId0001", value "72.39", item_price "1325.12".
NOW = 1_451_431_341
ACCOUNT = "549755885175"
EMAIL_IN, EMAIL_SHA = (
    "  Person@Example.com ",
    "542d240129883c019e106e3b1b2d3f3cb3537c43c425364de8e951d5a3083345",
)
PHONE_IN, PHONE_DIGITS = "+1 (650) 555-1212", "16505551212"  # digits, country code, no '+'
PHONE_SHA = hashlib.sha256(PHONE_DIGITS.encode()).hexdigest()
EPIK = (  # the OpenAPI click_id example
    "dj0yJnU9b2JDcFFHekV4SHJNcmVrbFBkUEdqakh0akdUT1VjVVUmcD0yJm49cnNBQ3F2Q2dOVDBX"
    "WWhkWklrUGxBUSZ0PUFBQUFBR1BaY3Bv"
)
HEX64 = re.compile(r"[0-9a-f]{64}")


def pinterest(**kw: Any) -> Pinterest:
    return Pinterest(PinterestSettings(ad_account_id=ACCOUNT, access_token=Secret("pin-tok"), **kw))


def hashed(**pii: str) -> dict[str, dict[str, tuple[str, ...]]]:
    keys = {"email": "em", "phone": "ph", "first_name": "fn", "zip": "zp"}
    result, warnings = hash_pii({keys[k]: (v,) for k, v in pii.items()}, ["meta"])
    assert warnings == []
    return result


def event(**kw: Any) -> Event:
    base: dict[str, Any] = {
        "event": "Purchase",
        "event_id": "eventId0001",
        "time": NOW,
        "source": Source.WEBSITE,
        "url": "https://www.my-clothing-shop.org/",
        "referrer": "https://www.pinterest.com/",
        "user": User(
            hashed=hashed(email=EMAIL_IN, phone=PHONE_IN),
            ip="216.3.128.12",
            user_agent="Mozilla/5.0",
            fbp="fb.1.1596403881668.1116446470",
            click_ids={"epik": EPIK, "fbclid": "AbC-123", "sccid": "sc-1", "ttclid": "tt-1"},
        ),
        "data": Data(
            value=72.39,
            currency="usd",
            order_id="my_order_id",
            contents=(Content("red-pinterest-shirt-logo-1", 1, 1325.12),),
            content_name="pinterest-themed-clothing",
            content_category="shirts",
        ),
    }
    base.update(kw)
    return Event(**base)


def response(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    if body is None:
        return httpx.Response(status, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


class TestPayload:
    def test_golden_checkout_from_pinterests_documented_example(self) -> None:
        assert pinterest().payload(event()) == {
            "event_name": "checkout",
            "action_source": "web",
            "event_time": 1451431341,
            "event_id": "eventId0001",
            "event_source_url": "https://www.my-clothing-shop.org/",
            "user_data": {
                "em": [EMAIL_SHA],
                "ph": [PHONE_SHA],
                "client_ip_address": "216.3.128.12",
                "client_user_agent": "Mozilla/5.0",
                "click_id": EPIK,
            },
            "custom_data": {
                "currency": "USD",
                "value": "72.39",
                "content_name": "pinterest-themed-clothing",
                "content_category": "shirts",
                "order_id": "my_order_id",
                "content_ids": ["red-pinterest-shirt-logo-1"],
                "contents": [
                    {"id": "red-pinterest-shirt-logo-1", "item_price": "1325.12", "quantity": 1}
                ],
                "num_items": 1,
            },
        }

    def test_identifiers_are_normalised_as_pinterest_documents(self) -> None:
        assert normalize("ph", PHONE_IN, "meta") == PHONE_DIGITS
        assert normalize("em", EMAIL_IN, "meta") == "person@example.com"
        assert normalize("ct", "New York", "meta") == "newyork"  # no spaces or punctuation
        assert normalize("st", "CA", "meta") == "ca"
        assert normalize("country", "US", "meta") == "us"

    def test_every_hashed_key_is_a_list_even_for_several_values(self) -> None:
        two, _ = hash_pii({"em": ("a@x.example", "b@x.example"), "fn": ("Ann",)}, ["meta"])
        user = pinterest().user_data(event(user=User(hashed=two)))
        assert len(user["em"]) == 2
        assert isinstance(user["fn"], list)

    @pytest.mark.parametrize(
        ("value", "text"), [(72.39, "72.39"), (10.0, "10.00"), (0.5, "0.50"), (1.2345, "1.2345")]
    )
    def test_money_is_sent_as_decimal_strings(self, value: float, text: str) -> None:
        data = Data(value=value, currency="EUR", contents=(Content("a", None, value),))
        custom = pinterest().payload(event(data=data))["custom_data"]
        assert custom["value"] == text
        assert custom["contents"] == [{"id": "a", "item_price": text}]

    def test_page_visit_without_pii_sends_ip_and_ua_plain(self) -> None:
        e = event(event="PageView", user=User(ip="2001:db8::1", user_agent="UA/1"), data=Data())
        payload = pinterest().payload(e)
        assert payload["event_name"] == "page_visit"
        assert payload["user_data"] == {
            "client_ip_address": "2001:db8::1",
            "client_user_agent": "UA/1",
        }
        assert "custom_data" not in payload
        assert pinterest().validate(e) is None

    def test_custom_properties_stay_out_but_content_brand(self) -> None:
        data = Data(custom={"content_brand": "pinterest", "coupon": "X1", "vip": True})
        custom = pinterest().payload(event(event="AddToCart", data=data))["custom_data"]
        assert custom == {"content_brand": "pinterest"}

    def test_ldu_sends_opt_out_type_ldp(self) -> None:
        assert pinterest().payload(event(ldu=True))["custom_data"]["opt_out_type"] == "LDP"
        page = pinterest().payload(event(event="PageView", data=Data(), ldu=True))
        assert page["custom_data"] == {"opt_out_type": "LDP"}
        assert "opt_out_type" not in pinterest().payload(event())["custom_data"]

    def test_denied_ad_personalization_sets_opt_out(self) -> None:
        denied = event(
            consent=Consent(ad_storage=True, ad_user_data=True, ad_personalization=False)
        )
        assert pinterest().payload(denied)["opt_out"] is True
        granted = event(consent=Consent(ad_personalization=True))
        assert "opt_out" not in pinterest().payload(granted)
        assert "opt_out" not in pinterest().payload(event())

    def test_partner_name_only_when_configured(self) -> None:
        assert "partner_name" not in pinterest().payload(event())
        assert pinterest(partner_name="ss-shop").payload(event())["partner_name"] == "ss-shop"

    @pytest.mark.parametrize(
        ("source", "expected"),
        [
            (Source.WEBSITE, "web"),
            (Source.PHYSICAL_STORE, "offline"),
            (Source.PHONE_CALL, "offline"),
            (Source.EMAIL, "offline"),
        ],
    )
    def test_action_source(self, source: Source, expected: str) -> None:
        assert pinterest().payload(event(source=source))["action_source"] == expected


class TestEventNames:
    @pytest.mark.parametrize(("canonical", "name"), sorted(EVENT_NAMES.items()))
    def test_standard_events_map_to_pinterest_names(self, canonical: str, name: str) -> None:
        assert name in PINTEREST_EVENTS
        assert pinterest().event_name(event(event=canonical)) == name

    def test_pinterest_names_pass_through(self) -> None:
        assert pinterest().event_name(event(event="view_category")) == "view_category"

    def test_other_names_are_sent_as_custom(self) -> None:
        for name in ("Donate", "QuizDone"):
            e = event(event=name)
            assert pinterest().validate(e) is None
            assert pinterest().payload(e)["event_name"] == "custom"

    def test_custom_events_override_and_are_checked(self) -> None:
        mapped = pinterest(custom_events={"Donate": "checkout", "ViewContent": "page_visit"})
        assert mapped.event_name(event(event="Donate")) == "checkout"
        assert mapped.event_name(event(event="ViewContent")) == "page_visit"
        wrong = pinterest(custom_events={"Lead": "LEAD"})
        assert "no Pinterest event" in (wrong.validate(event(event="Lead")) or "")


class TestValidate:
    def test_needs_email_or_ip_and_ua(self) -> None:
        phone_only = event(user=User(hashed=hashed(phone=PHONE_IN), user_agent="UA"))
        assert "email or both" in (pinterest().validate(phone_only) or "")
        with_ip = replace(phone_only, user=replace(phone_only.user, ip="203.0.113.7"))
        assert pinterest().validate(with_ip) is None
        email_only = event(user=User(hashed=hashed(email=EMAIL_IN)))
        assert pinterest().validate(email_only) is None

    def test_website_events_need_a_url(self) -> None:
        assert "url" in (pinterest().validate(event(url=None)) or "")
        assert pinterest().validate(event(url=None, source=Source.PHYSICAL_STORE)) is None

    def test_app_events_are_refused(self) -> None:
        assert "app_android" in (pinterest().validate(event(source=Source.APP)) or "")

    def test_window_is_seven_days(self) -> None:
        e = event()
        assert not pinterest().too_old(e, NOW + 6 * 86400)
        assert pinterest().too_old(e, NOW + 7 * 86400)


class TestClickIdsStayWithPinterest:
    def test_meta_never_sends_epik(self) -> None:
        meta = Meta(MetaSettings(pixel_id="1234567890", access_token=Secret("t")))
        text = json.dumps(meta.payload(event()))
        assert EPIK not in text
        assert "click_id" not in text

    def test_pinterest_never_sends_other_vendors_ids(self) -> None:
        text = json.dumps(pinterest().payload(event()))
        for foreign in ("fb.1.", "AbC-123", "sc-1", "tt-1", "fbp", "fbc"):
            assert foreign not in text


class TestRequest:
    def test_post_json_with_bearer_token(self) -> None:
        request = pinterest().build_request([event(), event(event_id="order-2")])
        assert request.method == "POST"
        assert str(request.url) == f"https://api.pinterest.com/v5/ad_accounts/{ACCOUNT}/events"
        assert request.headers["authorization"] == "Bearer pin-tok"
        assert request.headers["content-type"] == "application/json"
        doc = json.loads(request.content)
        assert set(doc) == {"data"}
        assert [e["event_id"] for e in doc["data"]] == ["eventId0001", "order-2"]
        assert b"pin-tok" not in request.content

    def test_test_mode_and_test_events_add_test_true(self) -> None:
        assert pinterest(test_mode=True).build_request([event()]).url.params["test"] == "true"
        plain = pinterest()
        test_event = event(test_code="TEST1")
        assert plain.batch_key(test_event) != plain.batch_key(event())
        assert plain.build_request([test_event]).url.params.get("test") == "true"
        assert "test" not in plain.build_request([event()]).url.params

    def test_registered(self) -> None:
        reg = DESTINATIONS["pinterest"]
        assert reg.settings is PinterestSettings
        assert reg.hash_rules == Pinterest.hash_rules == "meta"
        settings_ = PinterestSettings(ad_account_id=ACCOUNT, access_token=Secret("t"))
        assert isinstance(reg.factory(settings_), Pinterest)

    def test_settings_repr_hides_the_token(self) -> None:
        assert "pin-tok" not in repr(pinterest().settings)


def processed(n: int) -> dict[str, Any]:
    return {
        "num_events_received": n,
        "num_events_processed": n,
        "events": [{"status": "processed", "error_message": None}] * n,
    }


class TestClassify:
    """One test per documented answer of `events/create` (200, 400, 401, 403, 422, 429, 503)."""

    def verdict(self, resp: httpx.Response, n: int = 1) -> BatchVerdict:
        events = [event(event_id=f"e{i}") for i in range(n)]
        return pinterest().classify(events, resp, float(NOW))

    def test_200_all_processed_is_delivered(self) -> None:
        assert self.verdict(response(200, processed(3)), n=3) == BatchVerdict(Delivered())
        assert self.verdict(response(200)) == BatchVerdict(Delivered())

    def test_200_with_a_failed_event_dead_letters_only_it(self) -> None:
        body = processed(3)
        body["events"] = [
            {"status": "processed"},
            {"status": "failed", "error_message": "event_time is too old"},
            {"status": "processed", "warning_message": "non-standard field"},
        ]
        v = self.verdict(response(200, body), n=3)
        assert v.per_event is not None
        assert v.per_event[0] == Delivered()
        assert v.per_event[2] == Delivered()
        bad = v.per_event[1]
        assert isinstance(bad, Permanent)
        assert bad.reason is DeadReason.INVALID_FIELD
        assert bad.detail == "HTTP 200, event failed: event_time is too old"

    def test_400_request_invalid_is_bisected(self) -> None:
        v = self.verdict(response(400, {"code": 4196, "message": "The request was invalid."}), 4)
        assert v.bisect
        assert v.per_event is None
        assert isinstance(v.outcome, Permanent)
        assert v.outcome.reason is DeadReason.PLATFORM_REJECTED
        assert v.outcome.detail == "HTTP 400, code 4196: The request was invalid."

    def test_401_authentication_failed_pauses(self) -> None:
        v = self.verdict(response(401, {"code": 2, "message": "Authentication failed."}))
        assert isinstance(v.outcome, Paused)
        assert "code 2" in v.outcome.reason
        assert "pin-tok" not in v.outcome.reason

    def test_403_not_permitted_pauses(self) -> None:
        body = {"code": 29, "message": "You are not permitted to access that resource."}
        v = self.verdict(response(403, body))
        assert isinstance(v.outcome, Paused)
        assert "code 29" in v.outcome.reason

    def test_404_ad_account_pauses(self) -> None:
        v = self.verdict(response(404, {"code": 404, "message": "Ad account not found."}))
        assert isinstance(v.outcome, Paused)

    def test_422_names_the_failed_events_and_delivers_the_rest(self) -> None:
        details = {
            "num_events_received": 2,
            "num_events_processed": 1,
            "events": [
                {"status": "failed", "error_message": "user_data.em: not hashed"},
                {"status": "processed"},
            ],
        }
        body = {"code": 4196, "message": "Not all events were successfully processed.",
                "details": details}  # fmt: skip
        v = self.verdict(response(422, body), n=2)
        assert v.per_event is not None
        assert not v.bisect
        assert isinstance(v.per_event[0], Permanent)
        assert v.per_event[0].reason is DeadReason.INVALID_FIELD
        assert "not hashed" in v.per_event[0].detail
        assert v.per_event[1] == Delivered()

    def test_422_without_per_event_details_is_bisected(self) -> None:
        body = {"code": 4196, "message": "Not all events were successfully processed.",
                "details": {}}  # fmt: skip
        v = self.verdict(response(422, body), n=3)
        assert v.bisect
        assert isinstance(v.outcome, Permanent)
        assert v.outcome.reason is DeadReason.INVALID_FIELD

    def test_429_retries_honouring_retry_after(self) -> None:
        body = {"code": 8, "message": "This request exceeded a rate limit."}
        v = self.verdict(response(429, body, headers={"Retry-After": "7"}))
        assert v.outcome == Retry("HTTP 429, code 8: This request exceeded a rate limit.", 7.0)
        v = self.verdict(response(429, body))
        assert isinstance(v.outcome, Retry)
        assert v.outcome.after is None

    @pytest.mark.parametrize("status", [503, 500, 502, 504, 408])
    def test_server_errors_retry(self, status: int) -> None:
        body = {"code": 4197, "message": "The endpoint has been ramped down."}
        v = self.verdict(response(status, body))
        assert isinstance(v.outcome, Retry)
        assert not v.bisect

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
    user = pinterest().user_data(event(user=User(hashed=first)))
    for key in ("em", "ph"):
        assert isinstance(user[key], list)
        for digest in user[key]:
            assert HEX64.fullmatch(digest)
    # Pinterest's phone rule: digits only, with country code, no '+' (§5.3).
    digits = normalize("ph", phone, "meta")
    assert digits is not None
    assert digits.isdigit()
    assert not digits.startswith("0")
    assert user["ph"] == [hashlib.sha256(digits.encode()).hexdigest()]
    # Feeding the digests back in (a retry path, a shop that hashed already) changes nothing.
    again, _ = hash_pii({k: tuple(v) for k, v in first["meta"].items()}, ["meta"])
    assert again == first
    once = normalize("em", email, "meta")
    assert once is not None
    assert normalize("em", once, "meta") == once


def test_config_errors_name_the_pinterest_key(tmp_path: Any) -> None:
    from gateway.config import ConfigError, parse

    table = {"ad_account_id": "act_12", "max_batch": 1001, "custom_events": {"Lead": 1}}
    doc = {"sites": [{"id": "s", "destinations": {"pinterest": table}}]}
    with pytest.raises(ConfigError) as info:
        parse(doc, {}, tmp_path)
    text = str(info.value)
    prefix = "sites[0].destinations.pinterest"
    assert f"{prefix}.ad_account_id: expected an ad account id (1-18 digits)" in text
    assert f"{prefix}.access_token: required" in text
    assert f"{prefix}.max_batch: expected <= 1000" in text
    assert f"{prefix}.custom_events: expected a table of strings" in text
