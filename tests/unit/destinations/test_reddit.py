"""Reddit destination: payload mapping, request shape, answer classification (platforms.md §7)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.event import Content, Data, Event, Source, User
from gateway.core.identity import hash_pii
from gateway.core.normalize import normalize
from gateway.core.secret import Secret
from gateway.destinations import DESTINATIONS
from gateway.destinations.base import BatchVerdict, Delivered, Paused, Permanent, Retry
from gateway.destinations.meta.destination import Meta, MetaSettings
from gateway.destinations.reddit.destination import (
    EVENT_NAMES,
    TRACKING_TYPES,
    Reddit,
    RedditSettings,
)
from gateway.store.base import DeadReason

# Reddit's documented examples (direct integration and manual advanced matching pages):
NOW = 1_735_707_600  # "event_at": 1735707600000
PIXEL = "a2_abcdef123456"
EMAIL_IN = "Al.ice$+Apple@Example.Com"
EMAIL_SHA = "ff8d9819fc0e12bf0d24892e45987e249a28dce836a85cad60e28eaaa8c6d976"
# Reddit's documented example is +1 (555) 444-1234; area code 555 is unassigned, and phone numbers
# are checked against libphonenumber's plans (core/phones.py), so the same spelling with an
# assigned area code stands in for it.
PHONE_IN = "+1 (650) 444-1234"
PHONE_SHA = "38b7a56d1759d14d1e15c1e4ccca49dbb458555ee150f2374253463045a0ae03"  # "+16504441234"
EXTERNAL_IN = "customer12345"
EXTERNAL_SHA = "a4cc2fc5adf58a029291c1514d273989113a1d05e1d753c1d0c3a848af7109cc"
IP = "192.168.0.1"
IP_SHA = hashlib.sha256(IP.encode()).hexdigest()
UA = "Chrome/98.0.4758.102"
RDT_CID = "3184742045291813272"
URL = f"https://www.example.com/checkout?rdt_cid={RDT_CID}"
HEX64 = re.compile(r"[0-9a-f]{64}")


def reddit(**kw: Any) -> Reddit:
    return Reddit(RedditSettings(pixel_id=PIXEL, access_token=Secret("rdt-tok"), **kw))


def hashed(rules: str = "reddit", **pii: str) -> dict[str, dict[str, tuple[str, ...]]]:
    keys = {"email": "em", "phone": "ph", "external_id": "external_id", "first_name": "fn"}
    result, warnings = hash_pii({keys[k]: (v,) for k, v in pii.items()}, [rules])
    assert warnings == []
    return result


def event(**kw: Any) -> Event:
    base: dict[str, Any] = {
        "event": "Purchase",
        "event_id": "unique-id",
        "time": NOW,
        "source": Source.WEBSITE,
        "url": URL,
        "user": User(
            hashed=hashed(email=EMAIL_IN, phone=PHONE_IN, external_id=EXTERNAL_IN),
            ip=IP,
            user_agent=UA,
            fbp="fb.1.1596403881668.1116446470",
            click_ids={"rdt_cid": RDT_CID, "fbclid": "AbC-123", "ttclid": "tt-1"},
        ),
        "data": Data(
            value=100.0,
            currency="usd",
            num_items=2,
            content_name="Title of the product",
            content_category="Product group",
            contents=(Content("SKU or GTIN", 1, 50.0),),
        ),
    }
    base.update(kw)
    return Event(**base)


def response(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    if body is None:
        return httpx.Response(status, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


class TestPayload:
    def test_golden_purchase_from_reddits_documented_examples(self) -> None:
        assert reddit().payload(event()) == {
            "event_at": 1735707600000,
            "event_source_url": URL,
            "action_source": "WEBSITE",
            "type": {"tracking_type": "PURCHASE"},
            "click_id": RDT_CID,
            "user": {
                "email": EMAIL_SHA,
                "phone_number": PHONE_SHA,
                "external_id": EXTERNAL_SHA,
                "ip_address": IP_SHA,
                "user_agent": UA,
            },
            "metadata": {
                "conversion_id": "unique-id",
                "value": 100.0,
                "currency": "USD",
                "item_count": 2,
                "products": [
                    {
                        "id": "SKU or GTIN",
                        "name": "Title of the product",
                        "category": "Product group",
                        "quantity": 1,
                        "item_price": 50.0,
                    }
                ],
            },
        }

    def test_identifiers_follow_reddits_rules(self) -> None:
        # Manual advanced matching: lower-case, cut the +alias, drop non-alphanumerics.
        assert normalize("em", EMAIL_IN, "reddit") == "alice@example.com"
        assert normalize("em", "alice@example.com", "reddit") == "alice@example.com"
        assert normalize("em", "John.Doe+x@GMAIL.com", "reddit") == "johndoe@gmail.com"
        assert normalize("em", "+only@example.com", "reddit") is None
        # Phone as E.164 with '+', external id only trimmed (case kept).
        assert normalize("ph", PHONE_IN, "reddit") == "+16504441234"
        assert normalize("external_id", "  Cust 42 ", "reddit") == "Cust 42"
        # Meta and TikTok keep the dots of a non-gmail address: the forms differ.
        assert normalize("em", EMAIL_IN, "tiktok") == "al.ice$+apple@example.com"

    def test_custom_event_carries_its_name(self) -> None:
        payload = reddit().payload(event(event="InitiateCheckout"))
        assert payload["type"] == {
            "tracking_type": "CUSTOM",
            "custom_event_name": "InitiateCheckout",
        }
        assert payload["metadata"]["value"] == 100.0

    def test_page_visit_carries_no_value_metadata(self) -> None:
        payload = reddit().payload(event(event="PageView"))
        assert payload["type"] == {"tracking_type": "PAGE_VISIT"}
        assert set(payload["metadata"]) == {"conversion_id", "products"}

    def test_lead_and_sign_up_carry_no_item_count(self) -> None:
        for name, kind in (("Lead", "LEAD"), ("CompleteRegistration", "SIGN_UP")):
            payload = reddit().payload(event(event=name))
            assert payload["type"] == {"tracking_type": kind}
            assert "item_count" not in payload["metadata"]
            assert payload["metadata"]["value"] == 100.0

    def test_item_count_defaults_to_the_quantities(self) -> None:
        data = Data(contents=(Content("a", 2), Content("b")))
        assert reddit().payload(event(event="AddToCart", data=data))["metadata"] == {
            "conversion_id": "unique-id",
            "item_count": 3,
            "products": [{"id": "a", "quantity": 2}, {"id": "b"}],
        }

    def test_ldu_sets_data_processing_options(self) -> None:
        user = reddit().payload(event(ldu=True))["user"]
        assert user["data_processing_options"] == {"modes": ["LDU"]}
        assert "data_processing_options" not in reddit().payload(event())["user"]

    @pytest.mark.parametrize(
        ("source", "expected"),
        [
            (Source.WEBSITE, "WEBSITE"),
            (Source.APP, "APP"),
            (Source.PHYSICAL_STORE, "PHYSICAL_STORE"),
            (Source.PHONE_CALL, "OTHER"),
            (Source.EMAIL, "OTHER"),
        ],
    )
    def test_action_source(self, source: Source, expected: str) -> None:
        assert reddit().payload(event(source=source))["action_source"] == expected

    def test_ipv6_is_hashed_in_its_canonical_form(self) -> None:
        user = reddit().user(event(user=User(ip="2001:db8::1")))
        assert user == {"ip_address": hashlib.sha256(b"2001:db8::1").hexdigest()}


class TestEventNames:
    @pytest.mark.parametrize(("canonical", "name"), sorted(EVENT_NAMES.items()))
    def test_standard_events_map_to_reddit_types(self, canonical: str, name: str) -> None:
        assert name in TRACKING_TYPES
        assert reddit().event_type(event(event=canonical)).tracking_type == name

    def test_reddit_types_pass_through(self) -> None:
        assert reddit().event_type(event(event="ADD_TO_WISHLIST")).tracking_type == (
            "ADD_TO_WISHLIST"
        )

    def test_custom_events_map_names_to_types_or_custom_names(self) -> None:
        mapped = reddit(custom_events={"Subscribe": "PURCHASE", "Contact": "Contact Form"})
        assert mapped.payload(event(event="Subscribe"))["type"] == {"tracking_type": "PURCHASE"}
        assert mapped.payload(event(event="Contact"))["type"] == {
            "tracking_type": "CUSTOM",
            "custom_event_name": "Contact Form",
        }

    def test_custom_names_over_64_characters_are_refused_with_a_reason(self) -> None:
        long_name = "x" * 65
        problem = reddit().validate(event(event=long_name))
        assert problem is not None
        assert "1-64 characters" in problem
        assert "custom_events" in problem
        assert reddit().validate(event(event="y" * 64)) is None
        fixed = reddit(custom_events={long_name: "LEAD"})
        assert fixed.validate(event(event=long_name)) is None


class TestValidate:
    def test_needs_some_identifier(self) -> None:
        bare = event(user=User(fbp="fb.1.1596403881668.1116446470"))
        assert "no customer information" in (reddit().validate(bare) or "")
        assert reddit().validate(event(user=User(click_ids={"rdt_cid": RDT_CID}))) is None
        assert reddit().validate(event(user=User(ip=IP))) is None

    def test_a_url_is_not_required(self) -> None:
        assert reddit().validate(event(url=None)) is None
        assert "event_source_url" not in reddit().payload(event(url=None))

    def test_window_is_7_days(self) -> None:
        e = event()
        assert not reddit().too_old(e, NOW + 6 * 86400)
        assert reddit().too_old(e, NOW + 7 * 86400)


class TestClickIdsStayWithReddit:
    def test_meta_never_sends_rdt_cid(self) -> None:
        meta = Meta(MetaSettings(pixel_id="1234567890", access_token=Secret("t")))
        text = json.dumps(meta.payload(event(url="https://www.example.com/checkout")))
        assert RDT_CID not in text
        assert "click_id" not in text

    def test_reddit_never_sends_other_vendors_ids(self) -> None:
        text = json.dumps(reddit().payload(event()))
        assert "fb.1." not in text
        assert "AbC-123" not in text
        assert "tt-1" not in text

    def test_only_the_reddit_rule_sets_digests_are_sent(self) -> None:
        tiktok_only = event(user=User(hashed=hashed("tiktok", email=EMAIL_IN, phone=PHONE_IN)))
        assert "user" not in reddit().payload(tiktok_only)


class TestRequest:
    def test_post_json_with_bearer_token(self) -> None:
        request = reddit().build_request([event(), event(event_id="order-2")])
        assert request.method == "POST"
        assert str(request.url) == (
            f"https://ads-api.reddit.com/api/v3/pixels/{PIXEL}/conversion_events"
        )
        assert request.headers["authorization"] == "Bearer rdt-tok"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"].startswith("signalgate/")
        doc = json.loads(request.content)
        assert set(doc) == {"data"}
        assert set(doc["data"]) == {"events"}
        ids = [e["metadata"]["conversion_id"] for e in doc["data"]["events"]]
        assert ids == ["unique-id", "order-2"]
        assert b"rdt-tok" not in request.content

    def test_test_id_travels_in_data_and_splits_batches(self) -> None:
        doc = json.loads(reddit(test_id="t2_test").build_request([event()]).content)
        assert doc["data"]["test_id"] == "t2_test"
        plain = reddit()
        test_event = event(test_code="T-1")
        assert plain.batch_key(test_event) != plain.batch_key(event())
        assert json.loads(plain.build_request([test_event]).content)["data"]["test_id"] == "T-1"

    def test_registered(self) -> None:
        reg = DESTINATIONS["reddit"]
        assert reg.settings is RedditSettings
        assert reg.hash_rules == "reddit"
        made = reg.factory(RedditSettings(pixel_id=PIXEL, access_token=Secret("t")))
        assert isinstance(made, Reddit)

    def test_settings_repr_hides_the_token(self) -> None:
        assert "rdt-tok" not in repr(reddit().settings)


class TestClassify:
    """One test per documented error class (Reddit's v3 error table)."""

    def verdict(self, resp: httpx.Response, n: int = 1) -> BatchVerdict:
        events = [event(event_id=f"e{i}") for i in range(n)]
        return reddit().classify(events, resp, float(NOW))

    def test_success_is_delivered(self) -> None:
        ok = {"data": {"message": "Successfully processed 2 conversion events."}}
        assert self.verdict(response(200, ok), n=2) == BatchVerdict(Delivered())
        assert self.verdict(response(204)) == BatchVerdict(Delivered())

    def test_400_invalid_events_is_bisected_as_invalid_field(self) -> None:
        msg = "There were 1 invalid conversion events. None were processed."
        v = self.verdict(response(400, {"error": {"code": 400, "message": msg}}), n=4)
        assert v.bisect
        assert v.per_event is None
        assert v.outcome == Permanent(DeadReason.INVALID_FIELD, f"HTTP 400: {msg}")

    def test_400_bad_request_batch_too_large_is_bisected(self) -> None:
        v = self.verdict(response(400, {"error": {"code": 400, "message": "Bad Request"}}), n=3)
        assert v.bisect
        assert v.outcome == Permanent(DeadReason.PLATFORM_REJECTED, "HTTP 400: Bad Request")

    @pytest.mark.parametrize("message", ["No bearer token provided", "UNAUTHORIZED"])
    def test_401_pauses_the_route(self, message: str) -> None:
        v = self.verdict(response(401, {"error": {"code": 401, "message": message}}))
        assert isinstance(v.outcome, Paused)
        assert message in v.outcome.reason
        assert "rdt-tok" not in v.outcome.reason

    @pytest.mark.parametrize(
        "message",
        [
            f"You're not authorized to post conversions to Pixel ID {PIXEL}.",
            "Missing adsconversions scope to post conversions to Pixel.",
        ],
    )
    def test_403_pauses_the_route(self, message: str) -> None:
        v = self.verdict(response(403, {"error": {"code": 403, "message": message}}))
        assert isinstance(v.outcome, Paused)
        assert "permission" in v.outcome.reason

    def test_404_unknown_pixel_pauses(self) -> None:
        assert isinstance(self.verdict(response(404)).outcome, Paused)

    @pytest.mark.parametrize(
        "message",
        [
            "Your user agent was automatically ratelimited.",
            "Too many requests/events within timeframe.",
        ],
    )
    def test_429_retries_with_backoff_or_retry_after(self, message: str) -> None:
        body = {"error": {"code": 429, "message": message}}
        v = self.verdict(response(429, body))
        assert v.outcome == Retry(f"HTTP 429: {message}", None)
        v = self.verdict(response(429, body, headers={"Retry-After": "7"}))
        assert v.outcome == Retry(f"HTTP 429: {message}", 7.0)

    @pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
    def test_service_unavailable_retries(self, status: int) -> None:
        msg = "The service is currently unavailable. No conversion events were processed."
        v = self.verdict(response(status, {"error": {"code": status, "message": msg}}))
        assert isinstance(v.outcome, Retry)
        assert not v.bisect

    def test_non_json_errors_fall_back_to_the_status(self) -> None:
        v = self.verdict(httpx.Response(400, text="<html>bad</html>"), n=2)
        assert v.bisect
        assert v.outcome == Permanent(DeadReason.PLATFORM_REJECTED, "HTTP 400")
        assert isinstance(self.verdict(httpx.Response(502, text="<html>")).outcome, Retry)


# --- identifier rules, property-tested -----------------------------------------------------------

emails = st.emails().map(lambda e: e.upper() if len(e) % 2 else f"  {e} ")
phones = st.from_regex(
    r"\+(1 650 [2-9][0-9]{2} [0-9]{4}|44 20 7[0-9]{3} [0-9]{4}|49 30 [1-9][0-9]{7})", fullmatch=True
)
external_ids = st.text(
    st.characters(codec="ascii", categories=["L", "N", "P"]), min_size=1, max_size=40
)


@settings(max_examples=80, deadline=None)
@given(email=emails, phone=phones, external_id=external_ids)
def test_identifiers_are_64_hex_idempotent_and_never_double_hashed(
    email: str, phone: str, external_id: str
) -> None:
    first, _ = hash_pii({"em": (email,), "ph": (phone,), "external_id": (external_id,)}, ["reddit"])
    user = reddit().user(event(user=User(hashed=first, ip=IP)))
    for key in ("phone_number", "external_id", "ip_address"):
        assert HEX64.fullmatch(user[key])
    if "em" in first["reddit"]:
        assert HEX64.fullmatch(user["email"])
    # Feeding the digests back in (a retry path, a shop that hashed already) changes nothing.
    again, _ = hash_pii({k: tuple(v) for k, v in first["reddit"].items()}, ["reddit"])
    assert again == first
    # Normalising twice is normalising once.
    for key, value in (("em", email), ("ph", phone), ("external_id", external_id)):
        once = normalize(key, value, "reddit")
        if once is not None:
            assert normalize(key, once, "reddit") == once
    # The IP is hashed once, from its text form: never a digest of a digest.
    assert user["ip_address"] == hashlib.sha256(IP.encode()).hexdigest()


def test_config_errors_name_the_reddit_key(tmp_path: Any) -> None:
    from gateway.config import ConfigError, parse

    table = {"pixel_id": "not a pixel", "max_batch": 1001, "custom_events": {"Lead": 1}}
    doc = {"sites": [{"id": "s", "destinations": {"reddit": table}}]}
    with pytest.raises(ConfigError) as info:
        parse(doc, {}, tmp_path)
    text = str(info.value)
    assert "sites[0].destinations.reddit.pixel_id: expected a Reddit pixel id" in text
    assert "sites[0].destinations.reddit.access_token: required" in text
    assert "sites[0].destinations.reddit.max_batch: expected <= 1000" in text
    assert "sites[0].destinations.reddit.custom_events: expected a table of strings" in text
