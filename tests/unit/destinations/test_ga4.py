"""GA4 destination: payload mapping, request shape, answer classification (platforms.md §4.1)."""

from __future__ import annotations

import hashlib
import json
import re
import string
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.event import Consent, Content, Data, Event, Source, User
from gateway.core.eventparse import parse_event
from gateway.core.identity import hash_pii
from gateway.core.secret import Secret
from gateway.destinations.base import Delivered, Paused, Permanent, Retry
from gateway.destinations.ga4 import mapping
from gateway.destinations.ga4.destination import GA4, GA4Settings
from gateway.destinations.meta import Meta, MetaSettings
from gateway.store.base import DeadReason

NOW = 1_790_000_000.0
HEX64 = re.compile(r"[0-9a-f]{64}")
MEASUREMENT_ID = "G-ABC123XYZ9"
SECRET = "mp-s3cr3t"
CLIENT_ID = "1234567890.1700000000"  # platforms.md §4.1's example: <random>.<seconds>


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# Documented normal forms (§4.1, §4.4): Google's gmail rule drops dots and +tag in the local
# part; the phone is E.164 *with* '+'; names lowercase without symbols.
EMAIL = "Cloudy.SanFrancisco+shopping@gmail.com"
EM = sha("cloudysanfrancisco@gmail.com")
PHONE = "+1 (212) 565-0000"
PH = sha("+12125650000")
FN = sha("jane")
LN = sha("obrien")


def ga4(**kw: Any) -> GA4:
    return GA4(GA4Settings(measurement_id=MEASUREMENT_ID, api_secret=Secret(SECRET), **kw))


def hashed_user(**pii: tuple[str, ...]) -> dict[str, dict[str, tuple[str, ...]]]:
    hashed, warnings = hash_pii(pii, ("google", "meta"))
    assert warnings == []
    return hashed


def event(**kw: Any) -> Event:
    """Google's documented purchase (`T_12345`, SKU_12345 at 10.01 x 3, 30.03 USD)."""
    base: dict[str, Any] = {
        "event": "Purchase",
        "event_id": "T_12345",
        "time": int(NOW),
        "source": Source.WEBSITE,
        "url": "https://shop.example/thanks",
        "user": User(
            hashed=hashed_user(em=(EMAIL,), ph=(PHONE,), fn=("Jane",), ln=("O'Brien",)),
            ip="203.0.113.7",
            user_agent="Mozilla/5.0",
            fbp="fb.1.1596403881668.1116446470",
            click_ids={"ga": CLIENT_ID, "fbclid": "AbC-123", "gclid": "G-1", "ttclid": "tt-1"},
        ),
        "data": Data(
            value=30.03,
            currency="USD",
            order_id="T_12345",
            contents=(Content("SKU_12345", 3, 10.01),),
        ),
    }
    base.update(kw)
    return Event(**base)


def body_of(request: httpx.Request) -> dict[str, Any]:
    doc = json.loads(request.content)
    assert isinstance(doc, dict)
    return doc


class TestPayload:
    def test_golden_purchase_request(self) -> None:
        """§4.1: Google's documented purchase, with user_data of the documented normal forms."""
        req = ga4().build_request([event()])
        assert req.method == "POST"
        url = urlsplit(str(req.url))
        assert f"{url.scheme}://{url.netloc}{url.path}" == (
            "https://www.google-analytics.com/mp/collect"
        )
        assert parse_qs(url.query) == {"measurement_id": [MEASUREMENT_ID], "api_secret": [SECRET]}
        assert req.headers["content-type"] == "application/json"
        assert body_of(req) == {
            "client_id": CLIENT_ID,
            "user_data": {
                "sha256_email_address": [EM],
                "sha256_phone_number": [PH],
                "address": [{"sha256_first_name": FN, "sha256_last_name": LN}],
            },
            "ip_override": "203.0.113.7",
            "user_agent": "Mozilla/5.0",
            "events": [
                {
                    "name": "purchase",
                    "params": {
                        "currency": "USD",
                        "value": 30.03,
                        "transaction_id": "T_12345",
                        "page_location": "https://shop.example/thanks",
                        "items": [{"item_id": "SKU_12345", "quantity": 3, "price": 10.01}],
                    },
                    "timestamp_micros": int(NOW) * 1_000_000,
                }
            ],
        }
        assert SECRET not in req.content.decode()

    def test_eu_region_and_test_mode_endpoints(self) -> None:
        eu = ga4(api_base="https://region1.google-analytics.com/")
        assert str(eu.build_request([event()]).url).startswith(
            "https://region1.google-analytics.com/mp/collect?"
        )
        debug = ga4(test_mode=True).build_request([event()])
        assert urlsplit(str(debug.url)).path == "/debug/mp/collect"
        assert body_of(debug)["validation_behavior"] == "ENFORCE_RECOMMENDATIONS"
        own_code = ga4().build_request([event(test_code="T1")])
        assert urlsplit(str(own_code.url)).path == "/debug/mp/collect"

    @pytest.mark.parametrize("secret", [SECRET, "s e/c+r&t=?#ü"])
    def test_the_url_parsed_once_equals_one_built_per_request(self, secret: str) -> None:
        """The collect URLs are parsed once at start; each request must be what building it
        with `params` every time gave: same URL bytes, headers and body."""

        def dest_with(**kw: Any) -> GA4:
            return GA4(GA4Settings(measurement_id=MEASUREMENT_ID, api_secret=Secret(secret), **kw))

        for dest, e in [
            (dest_with(), event()),
            (dest_with(test_mode=True), event()),
            (dest_with(), event(test_code="T1")),
        ]:
            req = dest.build_request([e])
            query = {"measurement_id": MEASUREMENT_ID, "api_secret": secret}
            base = dest.debug_url if dest.is_debug(e) else dest.url
            json_type = {"content-type": "application/json"}
            old = httpx.Request("POST", base, params=query, content=req.content, headers=json_type)
            assert req.url == old.url
            assert req.url.raw_path == old.url.raw_path
            assert list(req.headers.raw) == list(old.headers.raw)

    def test_event_names_follow_the_recommended_events(self) -> None:
        names = {
            "PageView": "page_view",
            "ViewContent": "view_item",
            "Search": "search",
            "AddToCart": "add_to_cart",
            "AddToWishlist": "add_to_wishlist",
            "InitiateCheckout": "begin_checkout",
            "AddPaymentInfo": "add_payment_info",
            "Purchase": "purchase",
            "Lead": "generate_lead",
            "CompleteRegistration": "sign_up",
            "StartTrial": "start_trial",
            "newsletter_signup": "newsletter_signup",
        }
        for ours, theirs in names.items():
            assert mapping.event_body(event(event=ours))["name"] == theirs
        for name in mapping.EVENT_NAMES.values():
            assert mapping.name_problem(name) is None

    def test_transaction_id_is_the_order_id_or_the_event_id_never_empty(self) -> None:
        no_order = Data(value=5.0, currency="EUR")
        assert mapping.params(event(data=no_order))["transaction_id"] == "T_12345"
        assert "transaction_id" not in mapping.params(event(event="AddToCart", data=no_order))
        lead = mapping.params(event(event="Lead", data=Data(order_id="L-9")))
        assert lead["transaction_id"] == "L-9"

    def test_a_value_without_currency_is_left_out(self) -> None:
        params = mapping.params(event(event="AddToCart", data=Data(value=5.0)))
        assert "value" not in params
        assert "currency" not in params

    def test_search_referrer_and_custom_params(self) -> None:
        data = Data(search_string="red shoes", custom={"brand": "acme", "member": True, "n": 2.0})
        params = mapping.params(event(event="Search", data=data, referrer="https://a.example/"))
        assert params == {
            "brand": "acme",
            "member": "true",
            "n": 2.0,
            "search_term": "red shoes",
            "page_location": "https://shop.example/thanks",
            "page_referrer": "https://a.example/",
        }

    def test_custom_data_never_sets_the_gateways_own_params(self) -> None:
        custom = {"items": "not a list", "currency": "XXX", "value": 9.0, "brand": "acme"}
        data = Data(value=1.0, currency="EUR", custom=custom)
        params = mapping.params(event(event="AddToCart", data=data))
        assert params == {
            "brand": "acme",
            "currency": "EUR",
            "value": 1.0,
            "page_location": "https://shop.example/thanks",
        }
        assert ga4().validate(event(event="AddToCart", data=data)) is None

    def test_long_urls_are_cut_to_the_page_parameter_limits(self) -> None:
        long = "https://shop.example/" + "x" * 2000
        params = mapping.params(event(url=long, referrer=long))
        assert len(params["page_location"]) == 1000
        assert len(params["page_referrer"]) == 420
        assert ga4().validate(event(url=long, referrer=long)) is None

    def test_without_user_fields_the_request_has_only_the_client_id(self) -> None:
        bare = event(user=User(click_ids={"ga": CLIENT_ID}), url=None, data=Data())
        doc = body_of(ga4().build_request([bare]))
        assert doc == {
            "client_id": CLIENT_ID,
            "events": [{"name": "purchase", "params": {"transaction_id": "T_12345"},
                        "timestamp_micros": int(NOW) * 1_000_000}],
        }  # fmt: skip


class TestConsent:
    def test_stated_consent_is_sent(self) -> None:
        granted = Consent(ad_storage=True, ad_user_data=True, ad_personalization=True)
        doc = body_of(ga4().build_request([event(consent=granted)]))
        assert doc["consent"] == {"ad_user_data": "GRANTED", "ad_personalization": "GRANTED"}

    def test_unstated_consent_is_left_out(self) -> None:
        assert "consent" not in body_of(ga4().build_request([event()]))

    def test_limited_data_use_denies_personalisation(self) -> None:
        doc = body_of(ga4().build_request([event(ldu=True)]))
        assert doc["consent"] == {"ad_personalization": "DENIED"}

    def test_denied_ad_user_data_sends_no_user_data(self) -> None:
        denied = Consent(ad_storage=True, ad_user_data=False, ad_personalization=False)
        doc = body_of(ga4().build_request([event(consent=denied)]))
        assert doc["consent"] == {"ad_user_data": "DENIED", "ad_personalization": "DENIED"}
        assert "user_data" not in doc


class TestIdentifiersStayWithTheirPlatform:
    def test_ga4_sends_only_google_digests_and_its_own_client_id(self) -> None:
        text = ga4().build_request([event()]).content.decode()
        for foreign in ("AbC-123", "fb.1.", "G-1", "tt-1", sha("12125650000"), sha(EMAIL.lower())):
            assert foreign not in text
        assert "fbclid" not in text
        assert "gclid" not in text

    def test_meta_never_sends_the_ga_client_id(self) -> None:
        meta = Meta(MetaSettings(pixel_id="1234567890", access_token=Secret("tok")))
        text = json.dumps(meta.payload(event()))
        assert CLIENT_ID not in text

    def test_only_meta_digests_give_ga4_no_user_data(self) -> None:
        meta_only = User(
            hashed={"meta": {"em": (sha("x@example.com"),)}}, click_ids={"ga": CLIENT_ID}
        )
        assert "user_data" not in body_of(ga4().build_request([event(user=meta_only)]))

    def test_the_client_id_is_parsed_from_a_cookie_value_or_refused(self) -> None:
        def parsed(value: str) -> Any:
            raw = {"event": "Lead", "event_id": "e1", "time": NOW, "source": "email"}
            return parse_event(
                {**raw, "user": {"click_ids": {"ga": value}}}, now=NOW, new_id=lambda: "x"
            )

        ok = parsed("GA1.1.1234567890.1700000000")
        assert not isinstance(ok, list)
        assert ok.user.click_ids["ga"] == CLIENT_ID
        bad = parsed("not-a-client-id")
        assert isinstance(bad, list)
        assert [e.path for e in bad] == [".user.click_ids.ga"]


@pytest.mark.parametrize("value", ["GA1.1.1234567890.1700000000", "GA1.2.5.6", "5.6", "x.y"])
def test_fast_and_precise_parsers_agree_on_the_ga_client_id(value: str) -> None:
    from gateway.core.eventprecise import _parse_precise
    from gateway.core.eventschema import ParseLimits

    raw = {
        "event": "Lead",
        "event_id": "e1",
        "time": NOW,
        "url": "https://shop.example/",
        "user": {"click_ids": {"ga": value}},
    }
    fast = parse_event(raw, now=NOW, new_id=lambda: "x")
    precise = _parse_precise(raw, now=NOW, new_id=lambda: "x", path="", limits=ParseLimits())
    assert fast == precise
    expected = {"x.y": None, "5.6": "5.6", "GA1.2.5.6": "5.6"}.get(value, CLIENT_ID)
    if expected is None:
        assert isinstance(fast, list)
    else:
        assert not isinstance(fast, list)
        assert fast.user.click_ids["ga"] == expected


class TestValidate:
    def test_valid_event_passes(self) -> None:
        assert ga4().validate(event()) is None

    def test_without_client_id_it_is_refused(self) -> None:
        user = User(hashed=hashed_user(em=(EMAIL,)), ip="203.0.113.7")
        assert "no GA client id" in (ga4().validate(event(user=user)) or "")

    @pytest.mark.parametrize("channel", ["loader", "pixel"])
    def test_browser_events_are_refused(self, channel: str) -> None:
        reason = ga4().validate(event(channel=channel)) or ""
        assert "does not deduplicate" in reason
        assert f"channel {channel}" in reason

    @pytest.mark.parametrize(
        ("name", "part"),
        [
            ("sign up", "not a GA4 event name"),
            ("1st_order", "not a GA4 event name"),
            ("x" * 41, "not a GA4 event name"),
            ("session_start", "reserved"),
            ("first_visit", "reserved"),
            ("firebase_thing", "reserved"),
            ("ga_custom", "reserved"),
        ],
    )
    def test_event_name_rules(self, name: str, part: str) -> None:
        reason = ga4().validate(event(event=name)) or ""
        assert reason.startswith("event name")
        assert part in reason

    @pytest.mark.parametrize(
        ("custom", "part"),
        [
            ({"_private": "x"}, "reserved"),
            ({"google_x": "x"}, "reserved"),
            ({"firebase_conversion": "x"}, "reserved"),
            ({"p" + "x" * 40: "x"}, "not a GA4 parameter name"),
            ({"note": "y" * 101}, "longer than 100"),
            ({f"p{i}": "x" for i in range(22)}, "at most 25"),
        ],
    )
    def test_parameter_rules(self, custom: dict[str, str], part: str) -> None:
        data = Data(value=1.0, currency="EUR", custom=custom)
        assert part in (ga4().validate(event(data=data)) or "")

    def test_items_rules(self) -> None:
        many = tuple(Content(f"sku-{i}") for i in range(201))
        assert "at most 200" in (ga4().validate(event(data=Data(contents=many))) or "")
        long_id = (Content("s" * 101),)
        assert "item_id" in (ga4().validate(event(data=Data(contents=long_id))) or "")

    def test_72_hour_window(self) -> None:
        g = ga4()
        assert not g.too_old(event(), NOW + 71 * 3600)
        assert g.too_old(event(), NOW + 72 * 3600)

    def test_batch_key_takes_a_user_agent_with_a_lone_surrogate(self) -> None:
        g = ga4()
        odd = User(user_agent="UA \ud800", click_ids={"ga": CLIENT_ID})
        assert g.batch_key(event(user=odd)) == g.batch_key(event(user=odd, event_id="x"))
        assert g.batch_key(event(user=odd)) != g.batch_key(event())

    def test_batch_key_groups_one_user_and_one_endpoint(self) -> None:
        g = ga4()
        assert g.batch_key(event()) == g.batch_key(event(event_id="other", data=Data()))
        other = User(click_ids={"ga": "1.2"})
        assert g.batch_key(event(user=other)) != g.batch_key(event())
        assert g.batch_key(event(test_code="T1")) != g.batch_key(event())
        assert g.batch_key(event(ldu=True)) != g.batch_key(event())

    def test_a_batch_carries_every_event(self) -> None:
        events = [event(event_id=f"e{i}", data=Data(order_id=f"o{i}")) for i in range(25)]
        doc = body_of(ga4().build_request(events))
        assert [e["params"]["transaction_id"] for e in doc["events"]] == [
            f"o{i}" for i in range(25)
        ]


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    if body is None:
        return httpx.Response(status, content=b"", headers=headers)
    return httpx.Response(status, json=body, headers=headers)


class TestClassify:
    """One test per answer class: 2xx, validation messages, retry, pause, refusal (§4.1)."""

    @pytest.mark.parametrize("status", [200, 204])
    def test_2xx_is_delivered_even_without_a_body(self, status: int) -> None:
        assert ga4().classify([event()], answer(status), NOW).outcome == Delivered()

    @pytest.mark.parametrize("status", [500, 502, 503])
    def test_server_errors_retry(self, status: int) -> None:
        verdict = ga4().classify([event()], answer(status), NOW)
        assert isinstance(verdict.outcome, Retry)

    def test_rate_limit_retries_after_retry_after(self) -> None:
        verdict = ga4().classify([event()], answer(429, headers={"Retry-After": "12"}), NOW)
        assert verdict.outcome == Retry("HTTP 429", 12.0)

    @pytest.mark.parametrize("status", [401, 403])
    def test_refused_credentials_pause(self, status: int) -> None:
        verdict = ga4().classify([event()], answer(status), NOW)
        assert isinstance(verdict.outcome, Paused)
        assert "api_secret" in verdict.outcome.reason

    @pytest.mark.parametrize("status", [400, 413])
    def test_other_4xx_are_permanent_and_bisected(self, status: int) -> None:
        verdict = ga4().classify([event(), event()], answer(status), NOW)
        assert isinstance(verdict.outcome, Permanent)
        assert verdict.outcome.reason is DeadReason.PLATFORM_REJECTED
        assert "do not resend" in verdict.outcome.detail
        assert verdict.bisect

    def test_validation_messages_fail_the_event_they_name(self) -> None:
        g = ga4(test_mode=True)
        body = {
            "validationMessages": [
                {
                    "fieldPath": "events[1].params.currency",
                    "description": "Currency must be ISO 4217.",
                    "validationCode": "VALUE_INVALID",
                }
            ]
        }
        verdict = g.classify([event(), event(), event()], answer(200, body), NOW)
        assert verdict.per_event is not None
        first, second, third = verdict.per_event
        assert first == third == Delivered()
        assert isinstance(second, Permanent)
        assert second.reason is DeadReason.INVALID_FIELD
        assert "VALUE_INVALID events[1].params.currency: Currency must be" in second.detail

    def test_a_message_naming_no_event_fails_all(self) -> None:
        body = {"validationMessages": [{"fieldPath": "client_id", "validationCode": "X"}]}
        verdict = ga4(test_mode=True).classify([event(), event()], answer(200, body), NOW)
        assert verdict.per_event is not None
        assert all(isinstance(o, Permanent) for o in verdict.per_event)

    def test_no_messages_is_delivered(self) -> None:
        verdict = ga4(test_mode=True).classify(
            [event()], answer(200, {"validationMessages": []}), NOW
        )
        assert verdict.outcome == Delivered()
        assert verdict.per_event is None

    def test_debug_answer_without_messages_is_resent(self) -> None:
        resp = httpx.Response(200, content=b"<html>proxy</html>")
        assert isinstance(ga4(test_mode=True).classify([event()], resp, NOW).outcome, Retry)


EMAILS = st.builds(
    lambda local, domain, tld: f"{local}@{domain}.{tld}",
    st.text(string.ascii_letters + string.digits + "._", min_size=1, max_size=20).filter(
        lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s
    ),
    st.sampled_from(["gmail", "googlemail", "example", "shop"]),
    st.sampled_from(["com", "de"]),
)
PHONES = st.builds(
    lambda area, rest, sep: f"+1 {area}{sep}555{sep}{rest:04d}",
    st.sampled_from([201, 202, 206, 212, 213, 305, 310, 312, 404, 415, 512, 617, 650, 702, 917]),
    st.integers(0, 9999),
    st.sampled_from([" ", "-", ".", ""]),
)


def google_email(email: str) -> str:
    local, _, domain = email.strip().lower().partition("@")
    if domain in ("gmail.com", "googlemail.com"):
        local = local.split("+", 1)[0].replace(".", "")
    return f"{local}@{domain}"


class TestIdentifierRules:
    """The "google" rule set: 64-hex, idempotent, never hashed twice (§4.1, pitfalls 1, 12, 13)."""

    @settings(max_examples=100, deadline=None, database=None)
    @given(email=EMAILS, phone=PHONES)
    def test_digests_are_64_hex_idempotent_and_never_double_hashed(
        self, email: str, phone: str
    ) -> None:
        first, _ = hash_pii({"em": (email,), "ph": (phone,)}, ("google",))
        digests = first["google"]
        for values in digests.values():
            assert all(HEX64.fullmatch(v) for v in values)
        assert digests["em"] == (sha(google_email(email)),)
        assert digests["ph"] == (sha("+" + "".join(c for c in phone if c.isdigit())),)
        again, _ = hash_pii(dict(digests), ("google",))
        assert again["google"] == digests  # a digest passes through unchanged
        sent = mapping.user_data(event(user=User(hashed=first)))
        assert sent == {
            "sha256_email_address": [digests["em"][0]],
            "sha256_phone_number": [digests["ph"][0]],
        }

    def test_gmail_dots_only_for_google(self) -> None:
        hashed, _ = hash_pii({"em": ("John.Doe+x@GMAIL.com",)}, ("google", "meta"))
        assert hashed["google"]["em"] == (sha("johndoe@gmail.com"),)
        assert hashed["meta"]["em"] == (sha("john.doe+x@gmail.com"),)
        other, _ = hash_pii({"em": ("John.Doe+x@example.com",)}, ("google",))
        assert other["google"]["em"] == (sha("john.doe+x@example.com"),)


NAMES = st.one_of(
    st.sampled_from(sorted(mapping.EVENT_NAMES)),
    st.sampled_from(["session_start", "firebase_x", "ga_x", "sign up", "x" * 41, "Refund"]),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_ .:-]{0,45}", fullmatch=True),
)
CUSTOM = st.dictionaries(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,45}", fullmatch=True),
    st.one_of(st.booleans(), st.floats(-1e6, 1e6), st.text(max_size=120)),
    max_size=30,
)
CONTENTS = st.lists(
    st.builds(
        Content,
        st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=110),
        st.one_of(st.none(), st.integers(0, 100)),
        st.one_of(st.none(), st.floats(0, 1e5)),
    ),
    max_size=3,
)


class TestAgreementWithTheSandbox:
    """What `validate` lets through, the independent emulator (written from platforms.md §4.1)
    accepts; and every event `validate` refuses for its name or parameters, it drops."""

    @settings(max_examples=200, deadline=None, database=None)
    @given(name=NAMES, custom=CUSTOM, contents=CONTENTS, value=st.none() | st.floats(0, 1e6))
    def test_validate_and_the_sandbox_agree(
        self, name: str, custom: dict[str, Any], contents: list[Content], value: float | None
    ) -> None:
        from gateway.sandbox.ga4 import _event_messages, _user_data_messages

        currency = "EUR" if name == "Purchase" or value is not None else None
        data = Data(value=value, currency=currency, custom=custom, contents=tuple(contents))
        ev = event(event=name, data=data)
        problem = ga4().validate(ev)
        doc = body_of(ga4().build_request([ev]))
        messages = _event_messages(doc, NOW, ())
        assert _user_data_messages(doc["user_data"]) == []
        if problem is None:
            assert messages == {}, messages
        else:
            assert 0 in messages, problem
