"""Microsoft UET CAPI destination: mapping, request shape, answer classes (platforms.md §8)."""

from __future__ import annotations

import json
import re
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
from gateway.destinations.microsoft.destination import (
    EVENT_NAMES,
    Microsoft,
    MicrosoftSettings,
    msclkid,
)
from gateway.store.base import DeadReason

NOW = 1_790_000_000
TAG = "343012345"
# Documented normalisation (platforms.md §8: trimmed lower-case e-mail; phone digits, no '+'),
# the same digests as Meta's and Snap's documented examples:
EMAIL_IN, EMAIL_SHA = (
    "  Person@Example.com ",
    "542d240129883c019e106e3b1b2d3f3cb3537c43c425364de8e951d5a3083345",
)
PHONE_IN, PHONE_SHA = (
    "+44 844 412 4653",
    "dc008fda46e2e64002cf2f82a4906236282d431c4f75e5b60bfe79fc48546383",
)
MSCLKID = "e85de3e3b8a2139d6e1b858362f6c13a"
HEX64 = re.compile(r"[0-9a-f]{64}")


def ms(**kw: Any) -> Microsoft:
    return Microsoft(MicrosoftSettings(tag_id=TAG, access_token=Secret("uet-tok"), **kw))


def hashed(**pii: str) -> dict[str, dict[str, tuple[str, ...]]]:
    keys = {"email": "em", "phone": "ph", "external_id": "external_id"}
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
        "referrer": "https://www.bing.com/",
        "user": User(
            hashed=hashed(email=EMAIL_IN, phone=PHONE_IN),
            ip="203.0.113.7",
            user_agent="Mozilla/5.0",
            fbp="fb.1.1596403881668.1116446470",
            fbc="fb.1.1596403881668.AbC-123",
            click_ids={"msclkid": MSCLKID, "fbclid": "AbC-123", "ttclid": "tt-1", "gclid": "g-1"},
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
    def test_golden_purchase_from_the_documented_fields(self) -> None:
        assert ms().payload(event()) == {
            "eventType": "custom",
            "eventId": "order-1",
            "eventTime": NOW,
            "eventName": "purchase",
            "eventSourceUrl": "https://shop.example/thanks",
            "referrerUrl": "https://www.bing.com/",
            "adStorageConsent": "G",
            "userData": {
                "em": EMAIL_SHA,
                "ph": PHONE_SHA,
                "clientIpAddress": "203.0.113.7",
                "clientUserAgent": "Mozilla/5.0",
                "msclkid": MSCLKID,
            },
            "customData": {
                "pageType": "purchase",
                "value": 49.9,
                "currency": "EUR",
                "transactionId": "order-1",
                "itemIds": ["sku-1", "sku-2"],
                "items": [
                    {"id": "sku-1", "price": 10.0, "quantity": 2},
                    {"id": "sku-2", "price": 29.9},
                ],
            },
        }

    def test_page_view_is_a_page_load_without_a_name(self) -> None:
        e = event(event="PageView", user=User(ip="2001:db8::1", user_agent="UA/1"), data=Data())
        payload = ms().payload(e)
        assert payload["eventType"] == "pageLoad"
        assert "eventName" not in payload
        assert "customData" not in payload
        assert payload["userData"] == {"clientIpAddress": "2001:db8::1", "clientUserAgent": "UA/1"}
        assert ms().validate(e) is None

    def test_search_and_view_content_carry_page_type(self) -> None:
        search = ms().payload(event(event="Search", data=Data(search_string="red shoes")))
        assert search["eventName"] == "search"
        assert search["customData"] == {"pageType": "searchresults", "searchTerm": "red shoes"}
        view = ms().payload(event(event="ViewContent", data=Data(content_category="shoes")))
        assert view["customData"] == {"pageType": "product", "ecommCategory": "shoes"}

    def test_only_uet_custom_keys_pass_from_data_custom(self) -> None:
        custom = {"eventCategory": "video", "eventLabel": "intro", "eventValue": 3, "coupon": "X1",
                  "ecommTotalValue": True, "pageType": "home"}  # fmt: skip
        payload = ms().payload(event(event="Play", data=Data(custom=custom)))
        assert payload["eventName"] == "Play"
        assert payload["customData"] == {
            "eventCategory": "video",
            "eventLabel": "intro",
            "eventValue": 3,
            "pageType": "home",
        }
        odd = ms().payload(event(event="Search", data=Data(custom={"pageType": "checkout"})))
        assert odd["customData"] == {"pageType": "searchresults"}

    def test_external_id_is_sent_as_its_digest(self) -> None:
        user = User(hashed=hashed(external_id="Customer-42"))
        user_data = ms().user_data(event(user=user))
        assert HEX64.fullmatch(user_data["externalId"])
        assert "Customer-42" not in json.dumps(user_data)

    def test_ad_storage_consent_from_the_event(self) -> None:
        assert ms().payload(event(consent=Consent(ad_storage=True)))["adStorageConsent"] == "G"
        assert ms().payload(event(consent=Consent(ad_storage=False)))["adStorageConsent"] == "D"
        assert ms().payload(event(consent=None))["adStorageConsent"] == "G"


class TestEventNames:
    @pytest.mark.parametrize(("canonical", "name"), sorted(EVENT_NAMES.items()))
    def test_standard_events_map_to_ga4_style_names(self, canonical: str, name: str) -> None:
        assert ms().event_type_and_name(event(event=canonical)) == ("custom", name)

    def test_unmapped_names_are_custom_events_unchanged(self) -> None:
        for name in ("StartTrial", "Contact", "quiz_done"):
            assert ms().event_type_and_name(event(event=name)) == ("custom", name)
            assert ms().validate(event(event=name)) is None

    def test_custom_events_override(self) -> None:
        mapped = ms(custom_events={"StartTrial": "start_trial", "Landing": "pageLoad"})
        assert mapped.event_type_and_name(event(event="StartTrial")) == ("custom", "start_trial")
        assert mapped.event_type_and_name(event(event="Landing")) == ("pageLoad", None)


class TestValidate:
    def test_page_load_needs_a_url(self) -> None:
        problem = ms().validate(event(event="PageView", url=None))
        assert problem is not None
        assert "eventSourceUrl" in problem
        assert ms().validate(event(url=None)) is None  # custom events may go without

    def test_needs_an_identifier(self) -> None:
        problem = ms().validate(event(user=User(user_agent="UA only")))
        assert problem is not None
        assert "identifier" in problem
        assert ms().validate(event(user=User(click_ids={"msclkid": MSCLKID}))) is None

    def test_test_events_are_never_sent(self) -> None:
        test_event = event(test_code="TEST1")
        assert "no test mode" in (ms().validate(test_event) or "")
        assert ms().batch_key(test_event) != ms().batch_key(event())

    def test_window_is_7_days(self) -> None:
        assert not ms().too_old(event(), NOW + 6 * 86400)
        assert ms().too_old(event(), NOW + 7 * 86400)


class TestClickIds:
    @pytest.mark.parametrize(
        "raw",
        [MSCLKID, "_uet" + MSCLKID, MSCLKID + "-1", MSCLKID + "-0", f" {MSCLKID} "],
    )
    def test_prefix_and_suffix_are_stripped(self, raw: str) -> None:
        assert msclkid(raw) == MSCLKID
        assert ms().user_data(event(user=User(click_ids={"msclkid": raw})))["msclkid"] == MSCLKID

    @pytest.mark.parametrize("raw", ["", "abc", MSCLKID[:-1], MSCLKID + "-2", "z" * 32])
    def test_malformed_click_ids_are_not_sent(self, raw: str) -> None:
        assert msclkid(raw) is None
        assert "msclkid" not in ms().user_data(event(user=User(click_ids={"msclkid": raw})))

    def test_microsoft_never_sends_other_vendors_ids(self) -> None:
        text = json.dumps(ms().payload(event()))
        for foreign in ("AbC-123", "fb.1.", "tt-1", "g-1", "fbc", "fbp", "ttclid", "gclid"):
            assert foreign not in text

    def test_meta_never_sends_the_msclkid(self) -> None:
        meta = Meta(MetaSettings(pixel_id="1234567890", access_token=Secret("t")))
        assert MSCLKID not in json.dumps(meta.payload(event()))


class TestRequest:
    def test_post_with_bearer_token_and_continue_on_validation_error(self) -> None:
        request = ms().build_request([event(), event(event_id="order-2")])
        assert request.method == "POST"
        assert str(request.url) == f"https://capi.uet.microsoft.com/v1/{TAG}/events"
        assert request.headers["authorization"] == "Bearer uet-tok"
        assert request.headers["content-type"] == "application/json"
        doc = json.loads(request.content)
        assert set(doc) == {"data", "continueOnValidationError"}
        assert doc["continueOnValidationError"] is True
        assert [e["eventId"] for e in doc["data"]] == ["order-1", "order-2"]
        assert "uet-tok" not in request.content.decode()

    def test_registered(self) -> None:
        reg = DESTINATIONS["microsoft"]
        assert reg.settings is MicrosoftSettings
        assert reg.hash_rules == Microsoft.hash_rules == "meta"
        made = reg.factory(MicrosoftSettings(tag_id=TAG, access_token=Secret("t")))
        assert isinstance(made, Microsoft)

    def test_settings_repr_hides_the_token(self) -> None:
        assert "uet-tok" not in repr(ms().settings)


def detail(index: int, **kw: Any) -> dict[str, Any]:
    return {
        "index": index,
        "propertyName": "userData.em",
        "attemptedValue": "jane@example.com",
        "errorMessage": "Invalid hash",
        "errorCode": "InvalidValue",
        **kw,
    }


def error_body(received: int, *details: dict[str, Any]) -> dict[str, Any]:
    return {
        "eventsReceived": received,
        "error": {"code": "InvalidEvents", "message": "Some events are invalid.",
                  "details": list(details)},
        "traceId": "t-1",
    }  # fmt: skip


class TestClassify:
    """One test per documented answer class (platforms.md §8 Errors / Response)."""

    def verdict(self, resp: httpx.Response, n: int = 1) -> BatchVerdict:
        events = [event(event_id=f"e{i}") for i in range(n)]
        return ms().classify(events, resp, float(NOW))

    def test_accepted_is_delivered(self) -> None:
        ok = {"eventsReceived": 3, "traceId": "abc"}
        assert self.verdict(response(200, ok), n=3) == BatchVerdict(Delivered())
        assert self.verdict(response(200), n=3) == BatchVerdict(Delivered())

    def test_warnings_are_accepted(self) -> None:
        body = error_body(2, detail(1, isWarning=True))
        assert self.verdict(response(200, body), n=2) == BatchVerdict(Delivered())

    def test_401_bad_or_expired_token_pauses(self) -> None:
        body = error_body(0)
        v = self.verdict(response(401, body))
        assert isinstance(v.outcome, Paused)
        assert "token" in v.outcome.reason
        assert "uet-tok" not in v.outcome.reason

    def test_404_unknown_tag_pauses(self) -> None:
        assert isinstance(self.verdict(response(404, error_body(0))).outcome, Paused)

    @pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
    def test_server_errors_retry(self, status: int) -> None:
        v = self.verdict(response(status, error_body(0)))
        assert isinstance(v.outcome, Retry)
        assert not v.bisect

    def test_429_retries_honouring_retry_after(self) -> None:
        v = self.verdict(response(429, error_body(0), headers={"Retry-After": "12"}))
        assert isinstance(v.outcome, Retry)
        assert v.outcome.after == 12.0
        assert isinstance(self.verdict(response(429)).outcome, Retry)

    def test_validation_errors_beside_ingested_events_are_judged_per_event(self) -> None:
        body = error_body(2, detail(1), detail(3, propertyName="eventTime"))
        for status in (200, 400):
            v = self.verdict(response(status, body), n=4)
            assert not v.bisect
            assert v.per_event is not None
            assert [type(o) for o in v.per_event] == [Delivered, Permanent, Delivered, Permanent]
            bad = v.per_event[1]
            assert isinstance(bad, Permanent)
            assert bad.reason is DeadReason.INVALID_FIELD
            assert "userData.em" in bad.detail
            assert "Invalid hash" in bad.detail
            assert "jane@example.com" not in bad.detail, "attemptedValue is never copied"

    def test_400_with_nothing_ingested_is_bisected(self) -> None:
        v = self.verdict(response(400, error_body(0, detail(2))), n=4)
        assert v.bisect
        assert isinstance(v.outcome, Permanent)
        assert v.outcome.reason is DeadReason.INVALID_FIELD
        alone = self.verdict(response(400, error_body(0, detail(0))))
        assert alone.per_event is not None
        assert isinstance(alone.per_event[0], Permanent)

    def test_request_level_400_is_bisected_as_platform_rejected(self) -> None:
        v = self.verdict(response(400, error_body(0)), n=3)
        assert v.bisect
        assert isinstance(v.outcome, Permanent)
        assert v.outcome.reason is DeadReason.PLATFORM_REJECTED
        assert "InvalidEvents" in v.outcome.detail

    def test_2xx_that_received_fewer_without_naming_them_is_bisected(self) -> None:
        body = {"eventsReceived": 1, "error": {"code": "Partial", "message": "?"}}
        v = self.verdict(response(200, body), n=3)
        assert v.bisect
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
    user = ms().user_data(event(user=User(hashed=first)))
    for key in ("em", "ph"):
        assert HEX64.fullmatch(user[key])
        assert user[key] == first["meta"][key][0]
    # Feeding the digests back in (a retry path, a shop that hashed already) changes nothing.
    again, _ = hash_pii({k: tuple(v) for k, v in first["meta"].items()}, ["meta"])
    assert again == first
    assert ms().user_data(event(user=User(hashed=again)))["em"] == user["em"]
    # Normalising twice is normalising once; the phone digest is of digits without '+'.
    once = normalize("em", email, "meta")
    assert once is not None
    assert normalize("em", once, "meta") == once
    digits = normalize("ph", phone, "meta")
    assert digits is not None
    assert digits.isdigit()


@settings(max_examples=40, deadline=None)
@given(st.from_regex(r"[0-9a-fA-F]{32}", fullmatch=True), st.sampled_from(["", "_uet"]))
def test_click_id_is_sent_plain_never_hashed(raw: str, prefix: str) -> None:
    sent = ms().user_data(event(user=User(click_ids={"msclkid": prefix + raw})))["msclkid"]
    assert sent == raw
    assert not HEX64.fullmatch(sent)


def test_config_errors_name_the_microsoft_key(tmp_path: Any) -> None:
    from gateway.config import ConfigError, parse

    table = {"tag_id": "not a tag", "max_batch": 1001, "custom_events": {"Lead": 1}}
    doc = {"sites": [{"id": "s", "destinations": {"microsoft": table}}]}
    with pytest.raises(ConfigError) as info:
        parse(doc, {}, tmp_path)
    text = str(info.value)
    assert "sites[0].destinations.microsoft.tag_id: expected a UET tag id (digits)" in text
    assert "sites[0].destinations.microsoft.access_token: required" in text
    assert "sites[0].destinations.microsoft.max_batch: expected <= 1000" in text
    assert "sites[0].destinations.microsoft.custom_events: expected a table of strings" in text
