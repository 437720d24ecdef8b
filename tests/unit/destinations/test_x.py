"""X destination: conversion mapping, request shape, answer classification (platforms.md §9)."""

from __future__ import annotations

import hashlib
import json
import re
import string
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import ConfigError, parse
from gateway.core.event import Content, Data, Event, Source, User
from gateway.core.identity import hash_pii
from gateway.core.secret import Secret
from gateway.destinations.base import Delivered, Paused, Permanent, Retry, bind_clock
from gateway.destinations.meta import Meta, MetaSettings
from gateway.destinations.tiktok import TikTok, TikTokSettings
from gateway.destinations.x.destination import X, XSettings, conversion_time
from gateway.destinations.x.signing import Entropy
from gateway.store.base import DeadReason

NOW = 1_790_000_000.0
HEX64 = re.compile(r"[0-9a-f]{64}")
PIXEL = "o8z6j"  # §9's example pixel (Base Tag) id
PURCHASE = "o87ne"  # §9's example event id
LEAD = "o87nf"
TWCLID = "26l5rhrj8xrsbz9kgv4cxy2dhs"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# §9: e-mail trimmed + lower-cased, phone E.164 (sent with '+', the "tiktok" rule set).
EM = sha("customer@example.com")
PH = sha("+16505551212")
PH_DIGITS = sha("16505551212")


def fixed() -> Entropy:
    return Entropy(lambda: NOW, lambda: "nonce-1")


def x(**kw: Any) -> X:
    table: dict[str, Any] = {
        "pixel_id": PIXEL,
        "purchase_event_id": PURCHASE,
        "consumer_key": Secret("ck"),
        "consumer_secret": Secret("cs-secret"),
        "access_token": Secret("at-token"),
        "access_token_secret": Secret("ats-secret"),
        "event_ids": {"Lead": LEAD},
    }
    table.update(kw)
    return X(XSettings(**table), fixed())


def event(**kw: Any) -> Event:
    hashed, warnings = hash_pii(
        {"em": (" Customer@Example.com",), "ph": ("+1 (650) 555-1212",)}, ("meta", "tiktok")
    )
    assert warnings == []
    base: dict[str, Any] = {
        "event": "Purchase",
        "event_id": "order-1",
        "time": 1_771_377_240,  # 2026-02-18T01:14:00Z, the time of §9's example
        "source": Source.WEBSITE,
        "url": "https://shop.example/thanks",
        "user": User(
            hashed=hashed,
            ip="203.0.113.7",
            user_agent="Mozilla/5.0",
            fbp="fb.1.1596403881668.1116446470",
            fbc="fb.1.1596403881668.AbC-123",
            click_ids={"twclid": TWCLID, "fbclid": "AbC-123", "ttclid": "tt-1", "gclid": "G-1"},
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


def answer(status: int, *errors: tuple[str, str], headers: dict[str, str] | None = None) -> Any:
    body = {"errors": [{"code": c, "message": m} for c, m in errors], "request": {"params": {}}}
    return httpx.Response(status, json=body, headers=headers)


class TestPayload:
    def test_golden_conversion_from_the_documented_fields(self) -> None:
        """§9's conversion object: ISO-8601 ms time, event id, one object per identifier."""
        assert x().payload(event()) == {
            "conversion_time": "2026-02-18T01:14:00.000Z",
            "event_id": PURCHASE,
            "identifiers": [
                {"twclid": TWCLID},
                {"hashed_email": EM},
                {"hashed_phone_number": PH},
                {"ip_address": "203.0.113.7"},
                {"user_agent": "Mozilla/5.0"},
            ],
            "conversion_id": "order-1",
            "value": 49.9,
            "price_currency": "EUR",
            "number_items": 3,
            "contents": [
                {"content_id": "sku-1", "content_price": 10.0, "num_items": 2},
                {"content_id": "sku-2", "content_price": 29.9},
            ],
        }

    def test_golden_request(self) -> None:
        req = x().build_request([event(), event(event_id="order-2")])
        assert req.method == "POST"
        assert str(req.url) == f"https://ads-api.x.com/12/measurement/conversions/{PIXEL}"
        assert req.headers["content-type"] == "application/json"
        auth = req.headers["authorization"]
        assert auth.startswith("OAuth ")
        assert 'oauth_consumer_key="ck"' in auth
        assert 'oauth_token="at-token"' in auth
        assert 'oauth_nonce="nonce-1"' in auth
        assert f'oauth_timestamp="{int(NOW)}"' in auth
        assert 'oauth_signature_method="HMAC-SHA1"' in auth
        for secret in ("cs-secret", "ats-secret"):
            assert secret not in auth
            assert secret not in req.content.decode()
        doc = json.loads(req.content)
        assert list(doc) == ["conversions"]
        assert [c["conversion_id"] for c in doc["conversions"]] == ["order-1", "order-2"]

    def test_version_and_base_are_configurable(self) -> None:
        req = x(api_base="http://127.0.0.1:9/", api_version="11").build_request([event()])
        assert str(req.url) == f"http://127.0.0.1:9/11/measurement/conversions/{PIXEL}"

    def test_conversion_time_keeps_milliseconds_and_z(self) -> None:
        assert conversion_time(0) == "1970-01-01T00:00:00.000Z"
        assert conversion_time(1_771_377_240) == "2026-02-18T01:14:00.000Z"

    def test_event_ids_come_from_the_table(self) -> None:
        d = x(event_ids={"Lead": LEAD, "Purchase": "o87nz", "quiz_done": "tw-o8z6j-o87nq"})
        assert d.payload(event(event="Lead"))["event_id"] == LEAD
        assert d.payload(event())["event_id"] == "o87nz", "event_ids overrides purchase_event_id"
        assert d.payload(event(event="quiz_done"))["event_id"] == "tw-o8z6j-o87nq"

    def test_no_value_no_contents_when_absent(self) -> None:
        payload = x().payload(event(event="Lead", data=Data()))
        assert set(payload) == {"conversion_time", "event_id", "identifiers", "conversion_id"}

    def test_num_items_wins_over_the_line_item_count(self) -> None:
        assert x().payload(event(data=Data(num_items=7)))["number_items"] == 7

    def test_ip_and_user_agent_only_next_to_another_identifier(self) -> None:
        lone = event(user=User(ip="203.0.113.7", user_agent="UA", click_ids={"fbclid": "f"}))
        assert x().identifiers(lone) == []
        with_click = event(user=User(ip="203.0.113.7", click_ids={"twclid": TWCLID}))
        assert x().identifiers(with_click) == [{"twclid": TWCLID}, {"ip_address": "203.0.113.7"}]

    def test_several_emails_each_in_their_own_object(self) -> None:
        ev = event(user=User(hashed={"tiktok": {"em": (EM, "a" * 64)}}))
        assert x().identifiers(ev) == [{"hashed_email": EM}, {"hashed_email": "a" * 64}]


class TestIdentifiersStayWithTheirPlatform:
    def test_x_sends_only_its_click_id_and_its_rule_set(self) -> None:
        text = json.dumps(x().payload(event()))
        for foreign in ("AbC-123", "fb.1.", "tt-1", "G-1", PH_DIGITS, '"fbc"', '"ttclid"'):
            assert foreign not in text
        assert PH in text

    @pytest.mark.parametrize(
        "other",
        [
            Meta(MetaSettings(pixel_id="1234567890", access_token=Secret("t"))),
            TikTok(TikTokSettings(pixel_code="CABCDEFGHIJ1234567KL", access_token=Secret("t"))),
        ],
    )
    def test_no_other_platform_gets_twclid(self, other: Any) -> None:
        text = other.build_request([event()]).content.decode()
        assert TWCLID not in text
        assert "twclid" not in text

    def test_only_meta_digests_give_x_nothing_to_send(self) -> None:
        ev = event(user=User(hashed={"meta": {"em": (EM,), "ph": (PH_DIGITS,)}}))
        assert x().identifiers(ev) == []
        assert "X needs the twclid" in (x().validate(ev) or "")


class TestValidate:
    def test_valid_events_pass(self) -> None:
        assert x().validate(event()) is None
        assert x().validate(event(event="Lead")) is None

    def test_an_event_without_an_x_event_id_is_not_sent(self) -> None:
        problem = x().validate(event(event="AddToCart")) or ""
        assert "'AddToCart' has no X event id" in problem
        assert "sites[].destinations.x.event_ids" in problem

    def test_test_events_are_refused(self) -> None:
        assert "no test mode" in (x().validate(event(test_code="TEST1")) or "")

    def test_batches_hold_one_event_id_and_never_mix_test_events(self) -> None:
        d = x()
        assert d.batch_key(event()) != d.batch_key(event(event="Lead"))
        assert d.batch_key(event()) != d.batch_key(event(test_code="T1"))
        assert d.batch_key(event()) == d.batch_key(event(event_id="order-9"))

    def test_thirty_day_window(self) -> None:
        d = x()
        ev = event()
        assert not d.too_old(ev, ev.time + 29 * 86400)
        assert d.too_old(ev, ev.time + 30 * 86400)


class TestClassify:
    """One test per documented answer class (§9 error table, X Ads API error codes)."""

    def test_200_is_delivered(self) -> None:
        ok = httpx.Response(200, json={"data": {"conversions_processed": 2}, "request": {}})
        assert x().classify([event(), event()], ok, NOW).outcome == Delivered()

    @pytest.mark.parametrize(
        "message",
        [
            "At least one user identifier must be provided",
            "Hashed_email is not a valid SHA-256 hash",
            "Conversion count limit is 500",
        ],
    )
    def test_documented_400_for_one_conversion_is_bisected(self, message: str) -> None:
        resp = answer(400, ("INVALID_PARAMETER", message))
        verdict = x().classify([event(), event()], resp, NOW)
        assert verdict.bisect
        assert verdict.outcome == Permanent(
            DeadReason.INVALID_FIELD, f"HTTP 400, INVALID_PARAMETER: {message}"
        )

    @pytest.mark.parametrize(
        "message", ["Event_id (o87ne) is not a single event tag (SET)", "Missing event_id"]
    )
    def test_400_about_the_event_id_dead_letters_the_request_without_bisection(
        self, message: str
    ) -> None:
        verdict = x().classify([event(), event()], answer(400, ("INVALID_PARAMETER", message)), NOW)
        assert not verdict.bisect
        assert isinstance(verdict.outcome, Permanent)
        assert verdict.outcome.reason is DeadReason.INVALID_FIELD
        assert message in verdict.outcome.detail

    @pytest.mark.parametrize(
        ("status", "code", "hint"),
        [
            (401, "UNAUTHORIZED_ACCESS", "consumer_key"),
            (403, "UNAUTHORIZED_CLIENT_APPLICATION", "AD_MANAGER"),
            (404, "NOT_FOUND", "pixel_id"),
        ],
    )
    def test_auth_and_config_answers_pause(self, status: int, code: str, hint: str) -> None:
        verdict = x().classify([event()], answer(status, (code, "nope")), NOW)
        assert isinstance(verdict.outcome, Paused)
        assert code in verdict.outcome.reason
        assert hint in verdict.outcome.reason

    def test_429_waits_for_retry_after(self) -> None:
        resp = answer(429, ("TOO_MANY_REQUESTS", "slow"), headers={"Retry-After": "12"})
        assert x().classify([event()], resp, NOW).outcome == Retry(
            "HTTP 429, TOO_MANY_REQUESTS: slow", 12.0
        )

    @pytest.mark.parametrize("header", ["x-account-rate-limit-reset", "x-rate-limit-reset"])
    def test_429_waits_for_the_rate_limit_reset(self, header: str) -> None:
        resp = answer(429, ("TOO_MANY_REQUESTS", "x"), headers={header: str(int(NOW) + 42)})
        outcome = x().classify([event()], resp, NOW).outcome
        assert isinstance(outcome, Retry)
        assert outcome.after == 42.0

    def test_429_without_a_hint_waits_a_minute(self) -> None:
        outcome = x().classify([event()], httpx.Response(429), NOW).outcome
        assert outcome == Retry("HTTP 429", 60.0)

    @pytest.mark.parametrize(
        "resp",
        [
            answer(503, ("SERVICE_UNAVAILABLE", "down")),
            answer(500, ("INTERNAL_ERROR", "x")),
            answer(408, ("CANCELLED_REQUEST", "x")),
            httpx.Response(502, content=b"<html>bad gateway</html>"),
        ],
    )
    def test_server_side_and_timeouts_retry(self, resp: httpx.Response) -> None:
        assert isinstance(x().classify([event()], resp, NOW).outcome, Retry)

    def test_other_4xx_is_permanent_and_isolated(self) -> None:
        verdict = x().classify([event(), event()], httpx.Response(422, content=b"?"), NOW)
        assert isinstance(verdict.outcome, Permanent)
        assert verdict.bisect


class TestClock:
    def test_the_app_clock_signs_the_requests(self) -> None:
        d = bind_clock(x(), lambda: 1_234_567_890.9)
        assert isinstance(d, X)
        assert 'oauth_timestamp="1234567890"' in d.build_request([event()]).headers["authorization"]

    def test_each_request_gets_a_fresh_nonce(self) -> None:
        d = X(x().settings)  # the real nonce source
        nonces = {
            re.search(r'oauth_nonce="([^"]+)"', d.build_request([event()]).headers["authorization"])
            for _ in range(20)
        }
        assert len({m.group(1) for m in nonces if m}) == 20


class TestSettings:
    def doc(self, **table: Any) -> dict[str, Any]:
        base = {
            "pixel_id": PIXEL,
            "purchase_event_id": PURCHASE,
            "consumer_key": "env:X_CONSUMER_KEY",
            "consumer_secret": "env:X_CONSUMER_SECRET",
            "access_token": "env:X_ACCESS_TOKEN",
            "access_token_secret": "env:X_ACCESS_TOKEN_SECRET",
        }
        return {"sites": [{"id": "s", "destinations": {"x": base | table}}]}

    ENV = {
        "X_CONSUMER_KEY": "ck-value",
        "X_CONSUMER_SECRET": "cs-value-secret",
        "X_ACCESS_TOKEN": "at-value",
        "X_ACCESS_TOKEN_SECRET": "ats-value-secret",
    }

    def test_parses_and_hides_the_secrets(self) -> None:
        config = parse(self.doc(event_ids={"Lead": LEAD}), self.ENV, Path("."))
        settings = config.sites[0].destinations["x"]
        assert settings.consumer_secret.value == "cs-value-secret"
        assert settings.event_ids == {"Lead": LEAD}
        for value in self.ENV.values():
            assert value not in repr(config)

    def test_bad_ids_are_named_with_their_path(self) -> None:
        with pytest.raises(ConfigError) as err:
            parse(self.doc(pixel_id="O8Z6J!", event_ids={"Lead": "not an id"}), self.ENV, Path("."))
        text = str(err.value)
        assert "sites[0].destinations.x.pixel_id: expected a base-36 X pixel id" in text
        assert "sites[0].destinations.x.event_ids.Lead: expected a base-36 X event id" in text

    def test_max_batch_is_at_most_500(self) -> None:
        with pytest.raises(ConfigError) as err:
            parse(self.doc(max_batch=501), self.ENV, Path("."))
        assert "sites[0].destinations.x.max_batch: expected <= 500" in str(err.value)


EMAILS = st.builds(
    lambda local, domain, tld, pad: f"{pad}{local}@{domain}.{tld}{pad}",
    st.text(string.ascii_letters + string.digits + "._+", min_size=1, max_size=20).filter(
        lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s
    ),
    st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=15),
    st.sampled_from(["com", "de", "co.uk", "example"]),
    st.sampled_from(["", " ", "\t"]),
)
PHONES = st.builds(
    lambda area, rest, sep: f"+1 {area}{sep}555{sep}{rest:04d}",
    st.sampled_from([201, 202, 206, 212, 213, 305, 310, 312, 404, 415, 512, 617, 650, 702, 917]),
    st.integers(0, 9999),
    st.sampled_from([" ", "-", ".", "", "\u2013"]),
)


class TestIdentifierRules:
    """X's identifiers: 64-hex, idempotent, never hashed twice (§9, §10.4)."""

    @settings(max_examples=100, deadline=None, database=None)
    @given(email=EMAILS, phone=PHONES)
    def test_digests_are_64_hex_idempotent_and_never_double_hashed(
        self, email: str, phone: str
    ) -> None:
        first, _ = hash_pii({"em": (email,), "ph": (phone,)}, (X.hash_rules,))
        digests = first[X.hash_rules]
        assert digests["em"] == (sha(email.strip().lower()),)
        assert digests["ph"] == (sha("+" + "".join(c for c in phone if c.isdigit())),)
        again, _ = hash_pii(dict(digests), (X.hash_rules,))
        assert again[X.hash_rules] == digests, "a digest passes through unchanged"
        sent = x().identifiers(event(user=User(hashed=first)))
        assert sent == [
            {"hashed_email": digests["em"][0]},
            {"hashed_phone_number": digests["ph"][0]},
        ]
        for item in sent:
            (value,) = item.values()
            assert HEX64.fullmatch(value)
            assert value not in {sha(v) for v in (*digests["em"], *digests["ph"])}

    def test_an_uppercase_digest_is_lowercased_not_rehashed(self) -> None:
        hashed, _ = hash_pii({"em": (EM.upper(),)}, (X.hash_rules,))
        assert x().identifiers(event(user=User(hashed=hashed))) == [{"hashed_email": EM}]
