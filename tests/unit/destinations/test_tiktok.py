"""TikTok destination: payload mapping, request shape, answer classification (platforms.md §2)."""

from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import replace
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.event import Content, Data, Event, Source, User
from gateway.core.identity import hash_pii
from gateway.core.secret import Secret
from gateway.destinations.base import Delivered, Paused, Permanent, Retry
from gateway.destinations.meta.destination import Meta, MetaSettings
from gateway.destinations.tiktok.destination import EVENT_NAMES, TikTok, TikTokSettings
from gateway.store.base import DeadReason

NOW = 1_790_000_000.0
HEX64 = re.compile(r"[0-9a-f]{64}")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# §2.3's documented normal forms: e-mail trimmed + lower-cased; phone E.164 *with* '+'
# (its +14150000000 example has an invalid NANP exchange, so a valid number stands in).
EM = sha("customer@example.com")
PH_TIKTOK = sha("+16505551212")
PH_META = sha("16505551212")
TTP = "2F7h37YkS1j57AYSKTI7IHhJPYH"  # a _ttp value as written by TikTok's pixel (clickids.py)
TTCLID = "E.C.P.Cr4ABcD-12_x"


def tiktok(**kw: Any) -> TikTok:
    return TikTok(
        TikTokSettings(pixel_code="CABCDEFGHIJ1234567KL", access_token=Secret("s3cr3t-token"), **kw)
    )


def meta() -> Meta:
    return Meta(MetaSettings(pixel_id="1234567890", access_token=Secret("tok")))


def hashed_user(**pii: tuple[str, ...]) -> dict[str, dict[str, tuple[str, ...]]]:
    hashed, warnings = hash_pii(pii, ("meta", "tiktok"))
    assert warnings == []
    return hashed


def event(**kw: Any) -> Event:
    base: dict[str, Any] = {
        "event": "Purchase",
        "event_id": "order-1",
        "time": int(NOW),
        "source": Source.WEBSITE,
        "url": "https://shop.example/thanks",
        "referrer": "https://shop.example/cart",
        "user": User(
            hashed=hashed_user(em=(" Customer@Example.com",), ph=("+1 (650) 555-1212",)),
            ip="203.0.113.7",
            user_agent="Mozilla/5.0",
            fbp="fb.1.1596403881668.1116446470",
            fbc="fb.1.1596403881668.AbC-123",
            click_ids={"fbclid": "AbC-123", "ttclid": TTCLID, "ttp": TTP, "gclid": "G-1"},
        ),
        "data": Data(
            value=49.9,
            currency="EUR",
            order_id="order-1",
            contents=(Content("sku-1", 2, 10.0),),
        ),
    }
    base.update(kw)
    return Event(**base)


def response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def answer(code: int, message: str = "m", status: int = 200) -> httpx.Response:
    return response(status, {"code": code, "message": message, "request_id": "r1", "data": {}})


class TestPayload:
    def test_golden_purchase_from_the_documented_fields(self) -> None:
        """§2.2/§2.3: the event object TikTok's docs describe, digests of the documented forms."""
        assert tiktok().payload(event()) == {
            "event": "Purchase",
            "event_time": int(NOW),
            "event_id": "order-1",
            "user": {
                "email": EM,
                "phone": PH_TIKTOK,
                "ttclid": TTCLID,
                "ttp": TTP,
                "ip": "203.0.113.7",
                "user_agent": "Mozilla/5.0",
            },
            "page": {"url": "https://shop.example/thanks", "referrer": "https://shop.example/cart"},
            "properties": {
                "value": 49.9,
                "currency": "EUR",
                "order_id": "order-1",
                "contents": [{"content_id": "sku-1", "quantity": 2, "price": 10.0}],
                "content_type": "product",
            },
        }

    def test_golden_request_envelope(self) -> None:
        req = tiktok(test_event_code="TEST12345").build_request([event()])
        assert req.method == "POST"
        assert str(req.url) == "https://business-api.tiktok.com/open_api/v1.3/event/track/"
        assert req.headers["access-token"] == "s3cr3t-token"
        assert req.headers["content-type"] == "application/json"
        assert "s3cr3t" not in str(req.url)
        doc = json.loads(req.content)
        assert doc == {
            "event_source": "web",
            "event_source_id": "CABCDEFGHIJ1234567KL",
            "partner_name": "signalgate",
            "test_event_code": "TEST12345",
            "data": [tiktok().payload(event())],
        }

    def test_event_names_follow_tiktoks_table(self) -> None:
        t = tiktok()
        assert t.payload(event(event="PageView"))["event"] == "Pageview"
        assert t.payload(event(event="Lead"))["event"] == "Lead"
        assert t.payload(event(event="CompleteRegistration"))["event"] == "CompleteRegistration"
        assert t.payload(event(event="Donate"))["event"] == "Donate"  # no TikTok name: custom
        assert t.payload(event(event="newsletter_signup"))["event"] == "newsletter_signup"
        assert set(EVENT_NAMES.values()) - {"Pageview"} == set(EVENT_NAMES) - {"PageView"}

    def test_search_and_custom_properties(self) -> None:
        data = Data(search_string="red shoes", custom={"brand": "acme"}, num_items=3)
        props = tiktok().payload(event(event="Search", data=data))["properties"]
        assert props == {"query": "red shoes", "brand": "acme", "num_items": 3}

    def test_no_page_no_properties_when_absent(self) -> None:
        ev = event(source=Source.APP, url=None, referrer=None, data=Data())
        payload = tiktok().payload(ev)
        assert "page" not in payload
        assert "properties" not in payload
        assert "limited_data_use" not in payload

    def test_limited_data_use_follows_the_consent_decision(self) -> None:
        assert tiktok().payload(event(ldu=True))["limited_data_use"] is True

    def test_several_emails_become_a_list(self) -> None:
        ev = event(user=User(hashed={"tiktok": {"em": (EM, "a" * 64)}}))
        assert tiktok().payload(ev)["user"]["email"] == [EM, "a" * 64]


class TestIdentifiersStayWithTheirPlatform:
    def test_tiktok_sends_only_its_rule_set_and_its_click_ids(self) -> None:
        user = tiktok().payload(event())["user"]
        assert user["phone"] == PH_TIKTOK != PH_META
        text = json.dumps(user)
        for foreign in ("AbC-123", "fb.1.", "G-1", PH_META):
            assert foreign not in text

    def test_meta_never_sends_tiktoks_ids_or_hashes(self) -> None:
        payload = meta().payload(event())
        text = json.dumps(payload)
        assert payload["user_data"]["ph"] == PH_META
        for foreign in (TTCLID, TTP, PH_TIKTOK, '"ttclid"', '"ttp"'):
            assert foreign not in text

    def test_only_meta_digests_give_tiktok_nothing_to_send(self) -> None:
        ev = event(user=User(hashed={"meta": {"em": (EM,), "ph": (PH_META,)}}))
        assert tiktok().user(ev) == {}
        assert "no customer information" in (tiktok().validate(ev) or "")


class TestValidate:
    def test_valid_event_passes(self) -> None:
        assert tiktok().validate(event()) is None

    def test_website_without_url(self) -> None:
        assert "url" in (tiktok().validate(event(url=None)) or "")

    def test_offline_source_needs_no_url(self) -> None:
        assert tiktok(event_source="offline").validate(event(url=None)) is None

    def test_too_old_web_and_offline_windows(self) -> None:
        t = tiktok()
        assert not t.too_old(event(), NOW + 6 * 86400)
        assert t.too_old(event(), NOW + 7 * 86400)
        offline = tiktok(event_source="offline")
        assert not offline.too_old(event(), NOW + 27 * 86400)
        assert offline.too_old(event(), NOW + 28 * 86400)

    def test_per_event_test_code_groups_batches(self) -> None:
        t = tiktok()
        assert t.batch_key(event(test_code="T1")) != t.batch_key(event())


class TestClassify:
    """One test per documented error class (§2.5), including HTTP 200 with a code (pitfall 22)."""

    @pytest.mark.parametrize("code", [0, 20001])
    def test_ok_and_partial_success_are_delivered(self, code: int) -> None:
        assert tiktok().classify([event()], answer(code), NOW).outcome == Delivered()

    def test_rate_limit_retries_with_retry_after_or_a_minute(self) -> None:
        verdict = tiktok().classify([event()], answer(40100, "QPS"), NOW)
        assert verdict.outcome == Retry("HTTP 200, code 40100, request_id r1: QPS", 60.0)
        limited = response(200, {"code": 40100, "message": "x"}, {"Retry-After": "7"})
        assert tiktok().classify([event()], limited, NOW).outcome == Retry(
            "HTTP 200, code 40100: x", 7.0
        )

    @pytest.mark.parametrize(("code", "status"), [(40001, 200), (40101, 200), (40105, 200)])
    def test_auth_codes_pause_the_route(self, code: int, status: int) -> None:
        verdict = tiktok().classify([event()], answer(code, status=status), NOW)
        assert isinstance(verdict.outcome, Paused)
        assert f"code {code}" in verdict.outcome.reason

    @pytest.mark.parametrize(
        "resp",
        [
            answer(50000, status=200),
            answer(50002, status=503),
            response(502, "bad gateway"),
            httpx.Response(500, content=b"<html>"),
            httpx.Response(200, content=b"<html>proxy</html>"),
        ],
    )
    def test_server_side_retries(self, resp: httpx.Response) -> None:
        assert isinstance(tiktok().classify([event()], resp, NOW).outcome, Retry)

    def test_invalid_parameters_bisect_and_dead_letter_with_message(self) -> None:
        verdict = tiktok().classify([event(), event()], answer(40002, "bad email"), NOW)
        assert verdict.bisect
        assert isinstance(verdict.outcome, Permanent)
        assert verdict.outcome.reason is DeadReason.INVALID_FIELD
        assert "bad email" in verdict.outcome.detail

    def test_other_client_codes_are_permanent(self) -> None:
        verdict = tiktok().classify([event()], answer(40300), NOW)
        assert isinstance(verdict.outcome, Permanent)
        assert verdict.outcome.reason is DeadReason.PLATFORM_REJECTED
        assert verdict.bisect

    def test_http_401_without_envelope_pauses(self) -> None:
        verdict = tiktok().classify([event()], httpx.Response(401, content=b""), NOW)
        assert isinstance(verdict.outcome, Paused)


EMAILS = st.builds(
    lambda local, domain, tld: f"{local}@{domain}.{tld}",
    st.text(string.ascii_letters + string.digits + "._+", min_size=1, max_size=20).filter(
        lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s
    ),
    st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=15),
    st.sampled_from(["com", "de", "co.uk", "example"]),
)
PHONES = st.builds(
    lambda area, rest, sep: f"+1 {area}{sep}555{sep}{rest:04d}",
    # assigned area codes: phone numbers are checked against libphonenumber's plans, which
    # refuse unassigned ones (core/phones.py)
    st.sampled_from([201, 202, 206, 212, 213, 305, 310, 312, 404, 415, 512, 617, 650, 702, 917]),
    st.integers(0, 9999),
    st.sampled_from([" ", "-", ".", ""]),
)


class TestIdentifierRules:
    """The "tiktok" rule set: 64-hex, idempotent, never hashed twice (§2.3, pitfall 1, 12)."""

    @settings(max_examples=100, deadline=None, database=None)
    @given(email=EMAILS, phone=PHONES)
    def test_digests_are_64_hex_idempotent_and_never_double_hashed(
        self, email: str, phone: str
    ) -> None:
        first, _ = hash_pii({"em": (email,), "ph": (phone,)}, ("tiktok",))
        digests = first["tiktok"]
        assert set(digests) == {"em", "ph"}
        for values in digests.values():
            assert all(HEX64.fullmatch(v) for v in values)
        assert digests["em"] == (sha(email.strip().lower()),)
        assert digests["ph"] == (sha("+" + "".join(c for c in phone if c.isdigit())),)
        again, _ = hash_pii({k: v for k, v in digests.items()}, ("tiktok",))
        assert again["tiktok"] == digests  # a digest passes through unchanged
        user = tiktok().user(event(user=User(hashed=first)))
        assert user["email"] == digests["em"][0]
        assert user["phone"] == digests["ph"][0]

    @settings(max_examples=50, deadline=None, database=None)
    @given(phone=PHONES)
    def test_tiktok_and_meta_phone_digests_differ(self, phone: str) -> None:
        hashed, _ = hash_pii({"ph": (phone,)}, ("meta", "tiktok"))
        assert hashed["tiktok"]["ph"] != hashed["meta"]["ph"]
        plus = tiktok().user(event(user=User(hashed=hashed)))["phone"]
        assert plus == sha("+" + "".join(c for c in phone if c.isdigit()))

    def test_uppercase_digest_is_lowercased_not_rehashed(self) -> None:
        hashed, _ = hash_pii({"em": (EM.upper(),)}, ("tiktok",))
        assert hashed["tiktok"]["em"] == (EM,)


def test_payload_for_replaced_user_keeps_plain_ids_plain() -> None:
    ev = replace(event(), user=User(ip="2001:db8::1", user_agent="UA", click_ids={"ttp": TTP}))
    assert tiktok().user(ev) == {"ttp": TTP, "ip": "2001:db8::1", "user_agent": "UA"}
