"""LinkedIn destination: payload mapping, request shape, answer classification (platforms §6)."""

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
from gateway.core.secret import Secret
from gateway.destinations import DESTINATIONS
from gateway.destinations.base import BatchVerdict, Delivered, Paused, Permanent, Retry
from gateway.destinations.linkedin.destination import (
    ID_CLICK,
    ID_EMAIL,
    RULE_TYPES,
    LinkedIn,
    LinkedInSettings,
)
from gateway.destinations.meta.destination import Meta, MetaSettings
from gateway.destinations.snap.destination import Snap, SnapSettings
from gateway.destinations.tiktok.destination import TikTok, TikTokSettings
from gateway.store.base import DeadReason

NOW = 1_705_508_777
RULE = "104012"
EMAIL_IN = "  Person@Example.com "
# LinkedIn: SHA-256 of the trimmed, lower-cased e-mail (platforms.md §6 userIds).
EMAIL_SHA = hashlib.sha256(b"person@example.com").hexdigest()
LI_FAT_ID = "df1e8fa2-7b7d-4e1e-a8b4-0f2b1f5e3a9c"
HEX64 = re.compile(r"[0-9a-f]{64}")


def linkedin(**kw: Any) -> LinkedIn:
    return LinkedIn(LinkedInSettings(purchase_rule=RULE, access_token=Secret("li-tok"), **kw))


def hashed(**pii: str) -> dict[str, dict[str, tuple[str, ...]]]:
    keys = {"email": "em", "phone": "ph", "first_name": "fn", "external_id": "external_id"}
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
        "user": User(
            hashed=hashed(email=EMAIL_IN, phone="+1 650 555 1212", first_name="Jane"),
            ip="203.0.113.7",
            user_agent="Mozilla/5.0",
            fbp="fb.1.1596403881668.1116446470",
            click_ids={"li_fat_id": LI_FAT_ID, "fbclid": "AbC-123", "ttclid": "tt-9"},
        ),
        "data": Data(
            value=99.5, currency="usd", order_id="order-1", contents=(Content("sku-1", 1, 99.5),)
        ),
    }
    base.update(kw)
    return Event(**base)


def response(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    if body is None:
        return httpx.Response(status, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


class TestPayload:
    def test_golden_purchase_from_linkedins_documented_example(self) -> None:
        # §6: rule URN, epoch ms, amount as a string ("99.50"), eventId, userIds with the
        # hashed e-mail and the li_fat_id plain.
        assert linkedin().payload(event()) == {
            "conversion": f"urn:lla:llaPartnerConversion:{RULE}",
            "conversionHappenedAt": 1705508777000,
            "conversionValue": {"currencyCode": "USD", "amount": "99.50"},
            "user": {
                "userIds": [
                    {"idType": "SHA256_EMAIL", "idValue": EMAIL_SHA},
                    {"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": LI_FAT_ID},
                ]
            },
            "eventId": "order-1",
        }

    def test_time_is_milliseconds(self) -> None:
        assert linkedin().payload(event())["conversionHappenedAt"] == NOW * 1000

    @pytest.mark.parametrize(
        ("value", "amount"),
        [(100, "100.00"), (0.125, "0.125"), (49.9, "49.90"), (1e-7, "0.0000001")],
    )
    def test_amount_is_a_decimal_string(self, value: float, amount: str) -> None:
        payload = linkedin().payload(event(data=Data(value=value, currency="EUR")))
        assert payload["conversionValue"] == {"currencyCode": "EUR", "amount": amount}

    def test_no_value_without_currency(self) -> None:
        assert "conversionValue" not in linkedin().payload(event(data=Data(value=5.0)))

    def test_only_the_click_id_when_there_is_no_email(self) -> None:
        e = event(user=User(click_ids={"li_fat_id": LI_FAT_ID}))
        assert linkedin().payload(e)["user"] == {
            "userIds": [{"idType": ID_CLICK, "idValue": LI_FAT_ID}]
        }
        assert linkedin().validate(e) is None

    def test_one_email_entry_even_for_several_emails(self) -> None:
        two, _ = hash_pii({"em": ("a@x.example", "b@x.example")}, ["meta"])
        ids = linkedin().user_ids(event(user=User(hashed=two)))
        assert ids == [{"idType": ID_EMAIL, "idValue": two["meta"]["em"][0]}]

    def test_nothing_linkedin_does_not_take(self) -> None:
        text = json.dumps(linkedin().payload(event()))
        u = event().user
        for key in ("ph", "fn"):
            assert u.hashed["meta"][key][0] not in text, f"{key} is not a LinkedIn identifier"
        for plain in ("203.0.113.7", "Mozilla", "fb.1.", "AbC-123", "tt-9", "sku-1"):
            assert plain not in text


class TestRules:
    @pytest.mark.parametrize(("canonical", "kind"), sorted(RULE_TYPES.items()))
    def test_rules_are_found_by_event_name_or_by_type(self, canonical: str, kind: str) -> None:
        by_type = linkedin(conversion_rules={kind: "777"})
        assert by_type.rule(event(event=canonical)) == "777"
        by_name = linkedin(conversion_rules={kind: "777", canonical: "888"})
        assert by_name.rule(event(event=canonical)) == "888"

    def test_purchase_rule_is_the_default_for_purchase(self) -> None:
        assert linkedin().rule(event()) == RULE
        assert linkedin(conversion_rules={"PURCHASE": "5"}).rule(event()) == "5"

    def test_unmapped_events_are_refused_with_the_key_to_set(self) -> None:
        lead = linkedin().validate(event(event="Lead"))
        assert lead is not None
        assert "'LEAD'" in lead
        assert "conversion_rules" in lead
        custom = linkedin().validate(event(event="QuizDone"))
        assert custom is not None
        assert "'QuizDone'" in custom
        mapped = linkedin(conversion_rules={"QuizDone": "99"})
        assert mapped.validate(event(event="QuizDone")) is None
        assert mapped.payload(event(event="QuizDone"))["conversion"].endswith(":99")

    def test_a_full_urn_is_accepted_and_garbage_refused(self) -> None:
        urn = "urn:lla:llaPartnerConversion:31415"
        dest = linkedin(conversion_rules={"Lead": urn, "Contact": "not-a-rule"})
        assert dest.payload(event(event="Lead"))["conversion"] == urn
        assert "neither a rule id" in (dest.validate(event(event="Contact")) or "")


class TestValidate:
    def test_needs_an_email_or_the_click_id(self) -> None:
        e = event(user=User(ip="203.0.113.7", user_agent="UA", hashed=hashed(phone="+16505551212")))
        assert "e-mail or the li_fat_id" in (linkedin().validate(e) or "")

    def test_test_events_are_never_sent(self) -> None:
        dest = linkedin()
        test = event(test_code="TEST1")
        assert "no test mode" in (dest.validate(test) or "")
        assert dest.batch_key(test) != dest.batch_key(event())

    def test_limited_data_use_is_not_sent_unless_allowed(self) -> None:
        assert "limited data use" in (linkedin().validate(event(ldu=True)) or "")
        assert linkedin(send_limited_data_use=True).validate(event(ldu=True)) is None

    def test_window_is_90_days(self) -> None:
        assert not linkedin().too_old(event(), NOW + 89 * 86400)
        assert linkedin().too_old(event(), NOW + 90 * 86400)


class TestClickIdStaysWithLinkedIn:
    def test_other_destinations_never_send_li_fat_id(self) -> None:
        others = [
            Meta(MetaSettings(pixel_id="1234567890", access_token=Secret("t"))).payload(event()),
            Snap(SnapSettings(pixel_id="5bf81ee1-15b1", access_token=Secret("t"))).payload(event()),
            TikTok(TikTokSettings(pixel_code="CABCDEF", access_token=Secret("t"))).payload(event()),
        ]
        for payload in others:
            assert LI_FAT_ID not in json.dumps(payload)


class TestRequest:
    def test_batch_create_with_bearer_token_and_version_headers(self) -> None:
        request = linkedin().build_request([event(), event(event_id="order-2")])
        assert request.method == "POST"
        assert str(request.url) == "https://api.linkedin.com/rest/conversionEvents"
        assert request.headers["authorization"] == "Bearer li-tok"
        assert request.headers["linkedin-version"] == "202607"
        assert request.headers["x-restli-protocol-version"] == "2.0.0"
        assert request.headers["x-restli-method"] == "BATCH_CREATE"
        assert request.headers["content-type"] == "application/json"
        doc = json.loads(request.content)
        assert set(doc) == {"elements"}
        assert [e["eventId"] for e in doc["elements"]] == ["order-1", "order-2"]
        assert "li-tok" not in request.content.decode()

    def test_api_base_and_version_are_configurable(self) -> None:
        request = linkedin(api_base="http://127.0.0.1:9/", api_version="202612").build_request(
            [event()]
        )
        assert str(request.url) == "http://127.0.0.1:9/rest/conversionEvents"
        assert request.headers["linkedin-version"] == "202612"

    def test_registered(self) -> None:
        reg = DESTINATIONS["linkedin"]
        assert reg.settings is LinkedInSettings
        assert reg.hash_rules == "meta"
        assert isinstance(reg.factory(LinkedInSettings(RULE, Secret("t"))), LinkedIn)

    def test_settings_repr_hides_the_token(self) -> None:
        assert "li-tok" not in repr(linkedin().settings)


class TestClassify:
    def verdict(self, resp: httpx.Response, n: int = 1) -> BatchVerdict:
        events = [event(event_id=f"e{i}") for i in range(n)]
        return linkedin().classify(events, resp, float(NOW))

    def test_all_elements_created_is_delivered(self) -> None:
        ok = {"elements": [{"status": 201}, {"status": 201}]}
        assert self.verdict(response(200, ok), n=2) == BatchVerdict(Delivered())
        assert self.verdict(response(201)) == BatchVerdict(Delivered())

    def test_failed_elements_get_their_own_outcome(self) -> None:
        body = {
            "elements": [
                {"status": 201},
                {"status": 400, "error": {"message": "conversionHappenedAt too old"}},
                {"status": 403, "error": {"message": "rule not owned"}},
                {"status": 503},
            ]
        }
        v = self.verdict(response(200, body), n=4)
        assert v.per_event is not None
        first, second, third, fourth = v.per_event
        assert first == Delivered()
        assert isinstance(second, Permanent)
        assert second.reason is DeadReason.INVALID_FIELD
        assert second.detail == "element 1: HTTP 400: conversionHappenedAt too old"
        assert isinstance(third, Permanent)
        assert third.reason is DeadReason.AUTH
        assert isinstance(fourth, Retry)

    @pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
    def test_server_errors_retry(self, status: int) -> None:
        v = self.verdict(response(status, {"status": status, "message": "Internal error"}))
        assert isinstance(v.outcome, Retry)
        assert not v.bisect

    def test_rate_limit_retries_after_retry_after_or_a_minute(self) -> None:
        v = self.verdict(response(429, {"status": 429, "message": "throttled"}))
        assert v.outcome == Retry("HTTP 429: throttled", 60.0)
        v = self.verdict(response(429, headers={"Retry-After": "7"}))
        assert isinstance(v.outcome, Retry)
        assert v.outcome.after == 7.0

    @pytest.mark.parametrize(
        ("status", "hint"),
        [(401, "60 days"), (403, "permission"), (426, "api_version"), (404, "api_base")],
    )
    def test_credentials_version_and_endpoint_errors_pause(self, status: int, hint: str) -> None:
        body = {"status": status, "serviceErrorCode": 65601, "message": "refused"}
        v = self.verdict(response(status, body))
        assert isinstance(v.outcome, Paused)
        assert hint in v.outcome.reason
        assert "serviceErrorCode 65601" in v.outcome.reason
        assert "li-tok" not in v.outcome.reason

    @pytest.mark.parametrize("status", [400, 422])
    def test_validation_errors_are_bisected_to_the_bad_event(self, status: int) -> None:
        body = {"status": status, "message": "elements[2].user.userIds: required"}
        v = self.verdict(response(status, body), n=4)
        assert v.bisect
        assert v.per_event is None
        assert isinstance(v.outcome, Permanent)
        assert v.outcome.reason is DeadReason.INVALID_FIELD
        assert v.outcome.detail == f"HTTP {status}: elements[2].user.userIds: required"

    def test_non_json_error_falls_back_to_status(self) -> None:
        v = self.verdict(httpx.Response(409, text="<html>conflict</html>"), n=2)
        assert v.bisect
        assert isinstance(v.outcome, Permanent)


# --- identifier rules, property-tested -----------------------------------------------------------

emails = st.emails().map(lambda e: e.upper() if len(e) % 2 else f"  {e} ")


@settings(max_examples=60, deadline=None)
@given(email=emails)
def test_email_ids_are_64_hex_idempotent_and_never_double_hashed(email: str) -> None:
    first, _ = hash_pii({"em": (email,)}, ["meta"])
    [entry] = linkedin().user_ids(event(user=User(hashed=first)))
    assert entry["idType"] == ID_EMAIL
    assert HEX64.fullmatch(entry["idValue"])
    assert entry["idValue"] == hashlib.sha256(email.strip().lower().encode()).hexdigest()
    # Feeding the digest back in (a retry path, a shop that hashed already) changes nothing.
    again, _ = hash_pii({"em": (entry["idValue"],)}, ["meta"])
    assert again == first
    assert linkedin().user_ids(event(user=User(hashed=again))) == [entry]


@settings(max_examples=30, deadline=None)
@given(click=st.from_regex(r"[A-Za-z0-9_-]{8,64}", fullmatch=True))
def test_the_click_id_is_sent_as_received(click: str) -> None:
    ids = linkedin().user_ids(event(user=User(click_ids={"li_fat_id": click})))
    assert ids == [{"idType": ID_CLICK, "idValue": click}]


def test_config_errors_name_the_linkedin_key(tmp_path: Any) -> None:
    from gateway.config import ConfigError, parse

    table = {"purchase_rule": "urn:x", "max_batch": 5001, "api_version": "2026-07"}
    doc = {"sites": [{"id": "s", "destinations": {"linkedin": table}}]}
    with pytest.raises(ConfigError) as info:
        parse(doc, {}, tmp_path)
    text = str(info.value)
    assert "sites[0].destinations.linkedin.purchase_rule: expected a conversion rule id" in text
    assert "sites[0].destinations.linkedin.access_token: required" in text
    assert "sites[0].destinations.linkedin.max_batch: expected <= 5000" in text
    assert "sites[0].destinations.linkedin.api_version: expected YYYYMM" in text
