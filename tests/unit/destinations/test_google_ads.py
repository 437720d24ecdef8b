"""Google Ads destination: ClickConversion mapping, request shape, tokens (platforms.md §4.4)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.event import Consent, Data, Event, Source, User
from gateway.core.identity import hash_pii
from gateway.core.normalize import hashed, normalize
from gateway.core.secret import Secret
from gateway.destinations import DESTINATIONS
from gateway.destinations.base import Paused, Retry
from gateway.destinations.google_ads.destination import (
    GoogleAds,
    GoogleAdsSettings,
    conversion_date_time,
)
from gateway.destinations.tokens import REFRESH_MARGIN, RefreshTokenGrant, TokenUser

NOW = 1_790_000_000.0
HEX64 = re.compile(r"[0-9a-f]{64}")
SECRET = "client-s3cret"
REFRESH = "1//refresh-t0ken"
DEV = "dev-t0ken"
ACCESS = "ya29.access-t0ken"
GCLID = "Cj0KCQiA-Example_wcB"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def google_ads(**kw: Any) -> GoogleAds:
    return GoogleAds(
        GoogleAdsSettings(
            customer_id="1234567890",
            purchase_action="987654321",
            developer_token=Secret(DEV),
            client_id="client.apps.googleusercontent.com",
            client_secret=Secret(SECRET),
            refresh_token=Secret(REFRESH),
            **kw,
        )
    )


def with_token(dest: GoogleAds, expires_in: int = 3599, now: float = NOW) -> GoogleAds:
    answer = httpx.Response(200, json={"access_token": ACCESS, "expires_in": expires_in})
    assert dest.token_answer(answer, now) is None
    return dest


def hashed_ids(**pii: tuple[str, ...]) -> dict[str, dict[str, tuple[str, ...]]]:
    out, warnings = hash_pii(pii, ("google", "meta"))
    assert warnings == []
    return out


def event(**kw: Any) -> Event:
    base: dict[str, Any] = {
        "event": "Purchase",
        "event_id": "evt-1",
        "time": 1546374765,  # 2019-01-01 12:32:45-08:00, Google's own example instant
        "source": Source.WEBSITE,
        "url": "https://shop.example/thanks",
        "user": User(
            hashed=hashed_ids(em=("John.Doe@gmail.com",), ph=("+1 650 555 1212",)),
            ip="203.0.113.7",
            user_agent="Mozilla/5.0",
            click_ids={"gclid": GCLID},
        ),
        "data": Data(value=12.5, currency="USD", order_id="order-1"),
    }
    base.update(kw)
    return Event(**base)


def body(request: httpx.Request) -> dict[str, Any]:
    doc = json.loads(request.content)
    assert isinstance(doc, dict)
    return doc


# --- mapping ------------------------------------------------------------------------------------


def test_golden_payload_of_googles_documented_example() -> None:
    """platforms.md §4.4: the documented ClickConversion fields, byte for byte."""
    request = with_token(google_ads()).build_request([event()])
    assert str(request.url) == (
        "https://googleads.googleapis.com/v26/customers/1234567890:uploadClickConversions"
    )
    em = sha("johndoe@gmail.com")  # Google's e-mail rule: gmail dots removed
    ph = sha("+16505551212")  # E.164 with '+'
    expected = {
        "conversions": [
            {
                "gclid": GCLID,
                "conversionAction": "customers/1234567890/conversionActions/987654321",
                "conversionDateTime": "2019-01-01 20:32:45+00:00",
                "conversionValue": 12.5,
                "currencyCode": "USD",
                "orderId": "order-1",
                "userIdentifiers": [
                    {"hashedEmail": em, "userIdentifierSource": "FIRST_PARTY"},
                    {"hashedPhoneNumber": ph, "userIdentifierSource": "FIRST_PARTY"},
                ],
                "consent": {"adUserData": "GRANTED", "adPersonalization": "GRANTED"},
                "conversionEnvironment": "WEB",
            }
        ],
        "partialFailure": True,
    }
    assert request.content == json.dumps(expected, separators=(",", ":")).encode()
    assert request.headers["authorization"] == f"Bearer {ACCESS}"
    assert ACCESS.encode() not in request.content, "the token travels only in the header"
    assert "access_token" not in str(request.url)
    assert request.headers["developer-token"] == DEV
    assert request.headers["content-type"] == "application/json"
    assert "login-customer-id" not in request.headers


def test_conversion_date_time_is_utc_with_its_offset() -> None:
    assert conversion_date_time(0) == "1970-01-01 00:00:00+00:00"
    assert conversion_date_time(1546374765) == "2019-01-01 20:32:45+00:00"


@pytest.mark.parametrize(
    ("ids", "sent"),
    [
        ({"gclid": "G1", "gbraid": "GB1", "wbraid": "WB1"}, ("gclid", "G1")),
        ({"gbraid": "GB1", "wbraid": "WB1"}, ("gbraid", "GB1")),
        ({"wbraid": "WB1"}, ("wbraid", "WB1")),
    ],
)
def test_exactly_one_click_id_in_preference_order(
    ids: dict[str, str], sent: tuple[str, str]
) -> None:
    user = User(hashed=event().user.hashed, click_ids=ids)
    [conversion] = body(google_ads().build_request([event(user=user)]))["conversions"]
    present = [k for k in ("gclid", "gbraid", "wbraid") if k in conversion]
    assert present == [sent[0]]
    assert conversion[sent[0]] == sent[1]


def test_no_click_id_but_identifiers_is_an_enhanced_conversion_for_leads() -> None:
    dest = google_ads(conversion_actions={"Lead": "111"})
    lead = event(event="Lead", user=User(hashed=event().user.hashed), data=Data())
    assert dest.validate(lead) is None
    [conversion] = body(dest.build_request([lead]))["conversions"]
    assert not {"gclid", "gbraid", "wbraid"} & set(conversion)
    assert conversion["conversionAction"] == "customers/1234567890/conversionActions/111"
    assert conversion["orderId"] == "evt-1", "without an order id the event id is the dedup key"
    assert [next(iter(i)) for i in conversion["userIdentifiers"]] == [
        "hashedEmail",
        "hashedPhoneNumber",
    ]


def test_at_most_five_identifiers_each_with_exactly_one_value() -> None:
    emails = tuple(f"user{i}@example.com" for i in range(4))
    phones = ("+1 650 555 1212", "+1 650 555 1213")
    user = User(hashed=hashed_ids(em=emails, ph=phones), click_ids={"gclid": GCLID})
    [conversion] = body(google_ads().build_request([event(user=user)]))["conversions"]
    identifiers = conversion["userIdentifiers"]
    assert len(identifiers) == 5
    for item in identifiers:
        assert item["userIdentifierSource"] == "FIRST_PARTY"
        keys = set(item) - {"userIdentifierSource"}
        assert len(keys) == 1
        assert HEX64.fullmatch(item[keys.pop()])


def test_only_googles_click_ids_and_digests_reach_google_ads() -> None:
    user = User(
        hashed=event().user.hashed,
        fbc="fb.1.1596403881668.fbclid-x",
        fbp="fb.1.1596403881668.1116446470",
        click_ids={"gclid": GCLID, "fbclid": "fbclid-x", "ttclid": "tt-x", "msclkid": "ms-x"},
    )
    text = google_ads().build_request([event(user=user)]).content.decode()
    for foreign in ("fbclid-x", "tt-x", "ms-x", "1116446470", sha("16505551212")):
        assert foreign not in text
    assert "203.0.113.7" not in text, "Google Ads click uploads take no IP"


@pytest.mark.parametrize("name", sorted(set(DESTINATIONS) - {"google_ads"}))
def test_no_other_destination_gets_googles_click_ids(name: str) -> None:
    from test_compliance import destination as build

    other = build(name)
    rules = DESTINATIONS[name].hash_rules
    hashed, _ = hash_pii({"em": ("jane@example.com",)}, (rules,))
    user = User(
        hashed=hashed,
        ip="203.0.113.7",
        user_agent="Mozilla/5.0",
        click_ids={"gclid": "GCLID-SECRETLY-GOOGLE", "gbraid": "GBRAID-G", "wbraid": "WBRAID-G"},
    )
    text = other.build_request([event(user=user)]).content.decode()
    for value in ("GCLID-SECRETLY-GOOGLE", "GBRAID-G", "WBRAID-G"):
        assert value not in text, f"{name} got a Google click id"


@pytest.mark.parametrize(
    ("consent", "ldu", "expected"),
    [
        (None, False, ("GRANTED", "GRANTED")),
        (Consent(ad_user_data=True, ad_personalization=True), False, ("GRANTED", "GRANTED")),
        (Consent(ad_personalization=False), False, ("GRANTED", "DENIED")),
        (Consent(ad_user_data=False), False, ("DENIED", "GRANTED")),
        (None, True, ("GRANTED", "DENIED")),
    ],
)
def test_consent_follows_the_event(
    consent: Consent | None, ldu: bool, expected: tuple[str, str]
) -> None:
    [conversion] = body(google_ads().build_request([event(consent=consent, ldu=ldu)]))[
        "conversions"
    ]
    assert conversion["consent"] == {"adUserData": expected[0], "adPersonalization": expected[1]}


def test_events_without_an_action_or_anything_to_attribute_are_refused_with_a_reason() -> None:
    dest = google_ads(conversion_actions={"Lead": "12x"})
    reason = dest.validate(event(event="AddToCart"))
    assert reason is not None
    assert "'AddToCart' has no Google Ads conversion action" in reason
    assert "conversion_actions" in reason
    bad = dest.validate(event(event="Lead"))
    assert bad is not None
    assert "not a conversion action id" in bad
    nothing = dest.validate(event(user=User(ip="203.0.113.7")))
    assert nothing is not None
    assert "gclid, gbraid, wbraid or hashed e-mail/phone" in nothing


def test_conversion_actions_may_override_purchase() -> None:
    dest = google_ads(conversion_actions={"Purchase": "555"})
    [conversion] = body(dest.build_request([event()]))["conversions"]
    assert conversion["conversionAction"].endswith("/555")


def test_test_events_and_validate_only_send_validate_only_requests() -> None:
    dest = google_ads()
    assert dest.batch_key(event()) == ""
    assert dest.batch_key(event(test_code="T1")) == "validate"
    assert body(dest.build_request([event(test_code="T1")]))["validateOnly"] is True
    assert "validateOnly" not in body(dest.build_request([event()]))
    always = google_ads(validate_only=True)
    assert body(always.build_request([event()]))["validateOnly"] is True


def test_login_customer_id_header_for_manager_access() -> None:
    request = google_ads(login_customer_id="1112223333").build_request([event()])
    assert request.headers["login-customer-id"] == "1112223333"


def test_ninety_day_window() -> None:
    dest = google_ads()
    assert not dest.too_old(event(time=int(NOW) - 80 * 86400), NOW)
    assert dest.too_old(event(time=int(NOW) - 90 * 86400), NOW)


# --- OAuth2 refresh-token grant -----------------------------------------------------------------


def test_destination_is_a_token_user_and_asks_for_a_token_first() -> None:
    dest = google_ads(token_url="http://127.0.0.1:9/token")
    assert isinstance(dest, TokenUser)
    request = dest.token_request(NOW)
    assert request is not None
    assert str(request.url) == "http://127.0.0.1:9/token"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
    assert form == {
        "grant_type": "refresh_token",
        "client_id": "client.apps.googleusercontent.com",
        "client_secret": SECRET,
        "refresh_token": REFRESH,
    }
    assert "authorization" not in dest.build_request([event()]).headers


def test_the_token_is_cached_until_shortly_before_it_expires() -> None:
    dest = with_token(google_ads(), expires_in=3600)
    assert dest.token_request(NOW) is None
    assert dest.token_request(NOW + 3600 - REFRESH_MARGIN - 1) is None
    assert dest.token_request(NOW + 3600 - REFRESH_MARGIN) is not None
    assert dest.grant.refreshes == 1


@pytest.mark.parametrize(
    ("status", "payload", "hint"),
    [
        (
            400,
            {"error": "invalid_grant", "error_description": "Token has been revoked."},
            "refresh",
        ),
        (401, {"error": "invalid_client"}, "client_id / client_secret"),
        (403, {}, "credentials refused"),
    ],
)
def test_refused_credentials_pause_the_route(
    status: int, payload: dict[str, str], hint: str
) -> None:
    outcome = google_ads().token_answer(httpx.Response(status, json=payload), NOW)
    assert isinstance(outcome, Paused)
    assert hint in outcome.reason
    assert "revoked." not in outcome.reason, "the endpoint's free text is not copied"


@pytest.mark.parametrize("status", [500, 503, 429, 408])
def test_token_endpoint_outages_retry(status: int) -> None:
    answer = httpx.Response(status, headers={"Retry-After": "7"}, content=b"busy")
    outcome = google_ads().token_answer(answer, NOW)
    assert isinstance(outcome, Retry)
    assert outcome.after == 7.0


def test_a_2xx_without_a_token_retries_and_caches_nothing() -> None:
    dest = google_ads()
    outcome = dest.token_answer(httpx.Response(200, json={"token_type": "Bearer"}), NOW)
    assert isinstance(outcome, Retry)
    assert dest.token_request(NOW) is not None


def test_secrets_never_show_in_reprs_or_reasons() -> None:
    dest = with_token(google_ads())
    for text in (repr(dest.settings), repr(dest.grant)):
        for secret in (SECRET, REFRESH, DEV, ACCESS):
            assert secret not in text


def test_grant_without_expires_in_assumes_an_hour() -> None:
    grant = RefreshTokenGrant("http://t/token", "c", "s", "r")
    assert grant.answer(httpx.Response(200, json={"access_token": "a"}), NOW) is None
    assert grant.request(NOW + 3600 - REFRESH_MARGIN - 1) is None
    assert grant.request(NOW + 3600 - REFRESH_MARGIN) is not None
    assert grant.bearer() == {"authorization": "Bearer a"}
    grant.drop()
    assert grant.bearer() == {}


# --- identifier rules (platforms.md §4.4, §10.4, pitfalls 1, 12, 13) ----------------------------

LOCAL = st.text(st.sampled_from("abcXYZ019._+-"), min_size=1, max_size=12).filter(
    lambda s: s[0] not in "." and s[-1] not in "." and ".." not in s
)
DOMAIN = st.sampled_from(["gmail.com", "GoogleMail.com", "example.com", "Shop.Example.org"])


@settings(max_examples=200, deadline=None, database=None)
@given(local=LOCAL, domain=DOMAIN, pad=st.sampled_from(["", " ", "\t"]))
def test_google_email_digests_are_64_hex_idempotent_and_never_double_hashed(
    local: str, domain: str, pad: str
) -> None:
    raw = f"{pad}{local}@{domain}{pad}"
    norm = normalize("em", raw, "google")
    if norm is None:
        return
    assert normalize("em", norm, "google") == norm, "normalising twice changes nothing"
    digest = hashed("em", raw, "google")
    assert digest is not None
    assert HEX64.fullmatch(digest)
    assert digest == sha(norm)
    assert hashed("em", digest, "google") == digest, "a digest is passed through, not rehashed"
    assert hashed("em", digest.upper(), "google") == digest
    if domain.lower() in ("gmail.com", "googlemail.com"):
        assert "." not in norm.split("@")[0], "gmail dots removed"


@settings(max_examples=100, deadline=None, database=None)
@given(number=st.integers(min_value=2_012_000_000, max_value=9_899_999_999))
def test_google_phone_digests_are_e164_with_plus(number: int) -> None:
    raw = f"+1 {number}"
    norm = normalize("ph", raw, "google")
    if norm is None:
        return  # not a valid NANP number
    assert norm == f"+1{number}"
    assert normalize("ph", norm, "google") == norm
    digest = hashed("ph", raw, "google")
    assert digest == sha(norm)
    assert hashed("ph", digest, "google") == digest


def test_gmail_rule_against_a_non_gmail_address() -> None:
    assert normalize("em", " John.Doe@GMAIL.com ", "google") == "johndoe@gmail.com"
    assert normalize("em", "John.Doe@Example.com", "google") == "john.doe@example.com"
