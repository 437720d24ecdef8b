"""What every registered destination must do, checked the same way for each (Vector-style).

Adding a platform to `gateway.destinations.DESTINATIONS` runs it through these tests with no
per-platform code here: settings parse from a minimal table (values generated from each field's
`pattern`), payloads carry no raw PII, batches respect `max_batch`, and answers classify as the
Destination protocol promises (5xx and 429 retry, 401/403 pause, other 4xx are permanent).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, get_type_hints

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import ConfigError, parse
from gateway.core.event import Content, Data, Event, Source, User
from gateway.core.identity import hash_pii
from gateway.core.secret import Secret
from gateway.destinations import DESTINATIONS
from gateway.destinations.base import Destination, Paused, Permanent, Retry

NAMES = sorted(DESTINATIONS)
NOW = 1_790_000_000
RAW_EMAIL = "Jane.Doe@Example.com"
RAW_PHONE = "+1 (650) 555-1212"
PHONE_DIGITS = "6505551212"
HEX64 = re.compile(r"[0-9a-f]{64}")
TOKEN = "compliance-secret-token"
GA_CLIENT_ID = "1234567890.1700000000"
"""GA4's client id (`_ga` cookie): GA4's own browser id, sent to no other platform."""


def required_fields(name: str) -> list[dataclasses.Field[Any]]:
    cls = DESTINATIONS[name].settings
    return [
        f
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]


def minimal_table(name: str, draw: Any) -> dict[str, Any]:
    """A table with only the required keys, each value drawn to fit the field's pattern."""
    hints = get_type_hints(DESTINATIONS[name].settings)
    table: dict[str, Any] = {}
    for f in required_fields(name):
        if hints[f.name] is Secret:
            table[f.name] = TOKEN
        elif "pattern" in f.metadata:
            table[f.name] = draw(st.from_regex(f"(?:{f.metadata['pattern']})", fullmatch=True))
        else:
            table[f.name] = draw(
                st.text(
                    st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=20
                )
            )
    return table


def doc_with(name: str, table: dict[str, Any]) -> dict[str, Any]:
    return {"sites": [{"id": "s", "destinations": {name: table}}]}


def settings_of(name: str, table: dict[str, Any]) -> Any:
    config = parse(doc_with(name, table), {}, Path("."))
    return config.sites[0].destinations[name]


def sample_table(name: str) -> dict[str, Any]:
    """One fixed minimal table (the first example of each pattern) for the non-property tests."""
    out: dict[str, Any] = {}

    @settings(max_examples=1, database=None, derandomize=True)
    @given(st.data())
    def pick(data: st.DataObject) -> None:
        out.update(minimal_table(name, data.draw))

    pick()
    return out


def destination(name: str, **overrides: Any) -> Destination:
    reg = DESTINATIONS[name]
    table = {**sample_table(name), **overrides}
    return reg.factory(settings_of(name, table))


def event(rules: str, i: int = 0, **kw: Any) -> Event:
    hashed, warnings = hash_pii({"em": (RAW_EMAIL,), "ph": (RAW_PHONE,)}, (rules,))
    assert warnings == []
    base: dict[str, Any] = {
        "event": "Purchase",
        "event_id": f"order-{i}",
        "time": NOW,
        "source": Source.WEBSITE,
        "url": "https://shop.example/thanks",
        "user": User(
            hashed=hashed,
            ip="203.0.113.7",
            user_agent="Mozilla/5.0",
            fbp="fb.1.1596403881668.1116446470",
            click_ids={
                "ttclid": "tt-1",
                "fbclid": "fb-1",
                "gclid": "g-1",
                "sccid": "sc-1",
                "ga": GA_CLIENT_ID,
            },
        ),
        "data": Data(
            value=10.0, currency="EUR", order_id=f"order-{i}", contents=(Content("sku", 1, 10.0),)
        ),
    }
    base.update(kw)
    return Event(**base)


@pytest.mark.parametrize("name", NAMES)
class TestSettings:
    @settings(
        max_examples=20,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(data=st.data())
    def test_parse_from_a_minimal_table(self, name: str, data: st.DataObject) -> None:
        reg = DESTINATIONS[name]
        parsed = settings_of(name, minimal_table(name, data.draw))
        assert isinstance(parsed, reg.settings)
        dest = reg.factory(parsed)
        assert dest.name == name
        assert TOKEN not in repr(parsed), "secrets never show in a repr"

    def test_missing_required_keys_are_named(self, name: str) -> None:
        with pytest.raises(ConfigError) as err:
            parse(doc_with(name, {}), {}, Path("."))
        text = str(err.value)
        for f in required_fields(name):
            assert f"sites[0].destinations.{name}.{f.name}" in text

    def test_every_setting_has_help(self, name: str) -> None:
        for f in dataclasses.fields(DESTINATIONS[name].settings):
            assert f.metadata.get("help"), f"{name}.{f.name} needs help metadata (README row)"

    def test_hash_rules_is_a_known_rule_set(self, name: str) -> None:
        from gateway.core.normalize import RULESETS

        assert DESTINATIONS[name].hash_rules in RULESETS


@pytest.mark.parametrize("name", NAMES)
class TestPayloads:
    def test_a_full_batch_is_one_request_without_raw_pii(self, name: str) -> None:
        dest = destination(name)
        rules = DESTINATIONS[name].hash_rules
        events = [event(rules, i) for i in range(dest.max_batch)]
        assert dest.validate(events[0]) is None
        request = dest.build_request(events)
        assert request.method == "POST"
        text = request.content.decode()
        assert "@" not in text, "raw e-mail in the payload"
        for raw in (PHONE_DIGITS, "650 555", "Jane", "jane"):
            assert raw not in text, f"raw PII {raw!r} in the payload"
        assert TOKEN not in text, "the token never travels in the body"
        json.loads(text)
        for i in (0, dest.max_batch - 1):
            assert f'"order-{i}"' in text

    def test_max_batch_is_within_the_platform_limit(self, name: str) -> None:
        reg = DESTINATIONS[name]
        limit = next(f for f in dataclasses.fields(reg.settings) if f.name == "max_batch")
        dest = destination(name)
        assert 1 <= dest.max_batch <= limit.metadata["max"]
        with pytest.raises(ConfigError):
            settings_of(name, {**sample_table(name), "max_batch": limit.metadata["max"] + 1})

    def test_digests_are_64_hex_and_from_the_destinations_own_rule_set(self, name: str) -> None:
        dest = destination(name)
        rules = DESTINATIONS[name].hash_rules
        own = event(rules)
        text = dest.build_request([own]).content.decode()
        # A destination may name the hashed keys its platform takes (`identifier_keys`, e.g.
        # LinkedIn takes no phone); the others must then stay out of its payload.
        takes = getattr(type(dest), "identifier_keys", None)
        for key, values in own.user.hashed[rules].items():
            assert all(HEX64.fullmatch(v) for v in values)
            if takes is None or key in takes:
                assert any(v in text for v in values)
            else:
                assert not any(v in text for v in values), f"{key} is not among {name}'s ids"
        other = "tiktok" if rules != "tiktok" else "meta"
        foreign = hash_pii({"ph": (RAW_PHONE,)}, (other,))[0][other]["ph"][0]
        assert foreign not in dest.build_request([event(other)]).content.decode()

    def test_the_ga_client_id_reaches_ga4_only(self, name: str) -> None:
        dest = destination(name)
        text = dest.build_request([event(dest.hash_rules)]).content.decode()
        assert (GA_CLIENT_ID in text) is (name == "ga4")

    def test_windows_and_batch_keys(self, name: str) -> None:
        dest = destination(name)
        rules = DESTINATIONS[name].hash_rules
        assert not dest.too_old(event(rules), NOW + 60)
        assert dest.too_old(event(rules), NOW + 400 * 86400)
        assert dest.batch_key(event(rules, test_code="T1")) != dest.batch_key(event(rules))


def answer(status: int, body: bytes = b"") -> httpx.Response:
    return httpx.Response(status, content=body)


@pytest.mark.parametrize("name", NAMES)
class TestClassify:
    @pytest.mark.parametrize("status", [500, 502, 503, 504])
    def test_5xx_retries(self, name: str, status: int) -> None:
        dest = destination(name)
        for body in (b"", b"<html>oops</html>"):
            verdict = dest.classify([event(dest.hash_rules)], answer(status, body), NOW)
            assert isinstance(verdict.outcome, Retry)

    def test_429_retries_and_honours_retry_after(self, name: str) -> None:
        dest = destination(name)
        resp = httpx.Response(429, content=b"", headers={"Retry-After": "9"})
        verdict = dest.classify([event(dest.hash_rules)], resp, NOW)
        assert isinstance(verdict.outcome, Retry)
        assert verdict.outcome.after == 9.0

    @pytest.mark.parametrize("status", [401, 403])
    def test_credentials_refused_pause(self, name: str, status: int) -> None:
        dest = destination(name)
        verdict = dest.classify([event(dest.hash_rules)], answer(status, b"denied"), NOW)
        assert isinstance(verdict.outcome, Paused)

    def test_other_4xx_is_permanent_and_isolated(self, name: str) -> None:
        dest = destination(name)
        events = [event(dest.hash_rules, i) for i in range(2)]
        verdict = dest.classify(events, answer(400, b"bad"), NOW)
        assert isinstance(verdict.outcome, Permanent)
        assert verdict.bisect or verdict.per_event is not None
