"""Parsing of the canonical event: shapes, defaults, limits and field-path errors."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.event import Event, Source, derive_event_id
from gateway.core.eventparse import parse_event
from gateway.core.eventschema import ParseLimits
from gateway.core.fielderrors import FieldError
from gateway.core.record import RawPIIError, decode, encode

NOW = 1_790_000_000.0


def parse(obj: Any, **kw: Any) -> Event | list[FieldError]:
    return parse_event(obj, now=NOW, new_id=lambda: "random-id", **kw)


def ok(obj: Any) -> Event:
    result = parse(obj)
    assert isinstance(result, Event), result
    return result


def errors(obj: Any) -> dict[str, str]:
    result = parse(obj)
    assert isinstance(result, list), result
    return {e.path: e.reason for e in result}


class TestDefaults:
    def test_time_defaults_to_now_and_source_to_website_when_url_present(self) -> None:
        ev = ok({"event": "Lead", "url": "https://shop.example/x"})
        assert ev.time == int(NOW)
        assert ev.source is Source.WEBSITE

    def test_source_is_other_without_url(self) -> None:
        assert ok({"event": "Lead"}).source is Source.OTHER

    def test_event_id_derives_from_order_id(self) -> None:
        ev = ok({"event": "Purchase", "data": {"order_id": 1001, "value": 1, "currency": "eur"}})
        assert ev.event_id == "1001" == derive_event_id("1001")
        assert ev.data.currency == "EUR"

    def test_event_id_is_random_without_order_id(self) -> None:
        assert ok({"event": "Lead"}).event_id == "random-id"

    def test_explicit_event_id_wins(self) -> None:
        ev = ok({"event": "Lead", "event_id": "abc", "data": {"order_id": "1"}})
        assert ev.event_id == "abc"


class TestTime:
    def test_unix_seconds(self) -> None:
        assert ok({"event": "Lead", "time": NOW - 60}).time == int(NOW - 60)

    def test_iso_8601_with_zone(self) -> None:
        assert ok({"event": "Lead", "time": "2026-09-21T12:00:00Z"}).time == 1790510400 - 86400 * 6

    def test_iso_without_zone_is_refused(self) -> None:
        assert "timezone" in errors({"event": "Lead", "time": "2026-09-21T12:00:00"})[".time"]

    def test_milliseconds_are_refused_with_a_hint(self) -> None:
        assert "milliseconds" in errors({"event": "Lead", "time": NOW * 1000})[".time"]

    def test_eight_days_old_is_refused(self) -> None:
        assert "older than 7 days" in errors({"event": "Lead", "time": NOW - 8 * 86400})[".time"]

    def test_physical_store_may_be_sixty_days_old(self) -> None:
        ev = ok({"event": "Lead", "source": "physical_store", "time": NOW - 60 * 86400})
        assert ev.time == int(NOW - 60 * 86400)

    def test_future_beyond_skew_is_refused_and_small_skew_clamped(self) -> None:
        assert errors({"event": "Lead", "time": NOW + 3600})[".time"] == "is in the future"
        assert ok({"event": "Lead", "time": NOW + 30}).time == int(NOW)

    def test_site_limit_applies(self) -> None:
        result = parse({"event": "Lead", "time": NOW - 2 * 86400}, limits=ParseLimits(86400))
        assert isinstance(result, list)


class TestErrors:
    def test_paths_name_the_field(self) -> None:
        errs = errors(
            {
                "event": "",
                "user": {"email": 5, "ip": "not-ip", "nope": 1},
                "data": {"value": "x", "contents": [{"quantity": 1}]},
            }
        )
        assert set(errs) >= {
            ".event",
            ".user.email",
            ".user.ip",
            ".user.nope",
            ".data.value",
            ".data.contents[0].id",
        }

    def test_prefix_is_applied(self) -> None:
        result = parse({"event": 1}, path="events[3]")
        assert isinstance(result, list)
        assert result[0].path == "events[3].event"

    def test_unknown_top_level_field(self) -> None:
        assert errors({"event": "Lead", "evnt": 1})[".evnt"] == "unknown field"

    def test_website_needs_url(self) -> None:
        assert ".url" in errors({"event": "Lead", "source": "website"})

    def test_huge_string_is_refused(self) -> None:
        assert (
            "longer"
            in errors({"event": "Lead", "user": {"user_agent": "x" * 5000}})[".user.user_agent"]
        )

    def test_control_characters_are_refused(self) -> None:
        assert ".data.order_id" in errors({"event": "Lead", "data": {"order_id": "a\r\nb"}})

    def test_fbc_format_checked(self) -> None:
        assert ".user.fbc" in errors({"event": "Lead", "user": {"fbc": "garbage"}})
        ev = ok({"event": "Lead", "user": {"fbc": "fb.1.1554763741205.AbC-123"}})
        assert ev.user.fbc == "fb.1.1554763741205.AbC-123"


class TestRecord:
    def test_round_trip_keeps_everything(self) -> None:
        ev = ok(
            {
                "event": "Purchase",
                "url": "https://shop.example/thanks",
                "user": {"ip": "::1", "user_agent": "UA", "click_ids": {"fbclid": "X"}},
                "data": {
                    "value": 10,
                    "currency": "usd",
                    "order_id": "o1",
                    "contents": [{"id": "sku", "quantity": 2, "price": 5}],
                    "custom": {"coupon": "X"},
                },
                "consent": {"ad_storage": "granted"},
            }
        )
        assert decode(encode(ev)) == ev

    def test_raw_pii_is_never_encoded(self) -> None:
        ev = ok({"event": "Lead", "user": {"email": "a@b.co"}})
        try:
            encode(ev)
        except RawPIIError:
            return
        raise AssertionError("raw PII was encoded")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
keys = st.sampled_from(["event", "event_id", "time", "source", "url", "user", "data", "consent"])


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, json_values, max_size=8) | json_values)
def test_parse_never_raises_on_arbitrary_json(obj: Any) -> None:
    result = parse(obj)
    assert isinstance(result, Event | list)


class TestFastBuilders:
    """The request path's builders make ordinary, frozen instances equal to the constructor's."""

    def test_builders_equal_the_constructors(self) -> None:
        import dataclasses

        from gateway.core import event as ev_module
        from gateway.core import eventbuild

        content = eventbuild._new_content("sku", 2, 9.5)
        data = eventbuild._new_data(10.0, "EUR", "o1", (content,))
        user = eventbuild._new_user({}, {"meta": {"em": ("d" * 64,)}}, "1.2.3.4", "ua")
        made = eventbuild._new_event(
            "Purchase", "o1", 1, ev_module.Source.WEBSITE, "https://x.test/", None, user, data
        )
        expected = ev_module.Event(
            event="Purchase",
            event_id="o1",
            time=1,
            source=ev_module.Source.WEBSITE,
            url="https://x.test/",
            user=ev_module.User(
                hashed={"meta": {"em": ("d" * 64,)}}, ip="1.2.3.4", user_agent="ua"
            ),
            data=ev_module.Data(
                value=10.0,
                currency="EUR",
                order_id="o1",
                contents=(ev_module.Content("sku", 2, 9.5),),
            ),
        )
        assert made == expected
        assert hash(content) == hash(ev_module.Content("sku", 2, 9.5))
        assert repr(made) == repr(expected)
        for obj, cls in ((content, ev_module.Content), (data, ev_module.Data),
                         (user, ev_module.User), (made, ev_module.Event)):  # fmt: skip
            assert type(obj) is cls
            with pytest.raises(dataclasses.FrozenInstanceError):
                obj.__setattr__(dataclasses.fields(cls)[0].name, None)
        assert data.custom == {}
        assert data.custom is not eventbuild._new_data().custom  # a fresh default per instance
        assert dataclasses.replace(made, event_id="o2").event_id == "o2"


def test_stored_record_bytes_are_plain_compact_json() -> None:
    """The record keeps its documented JSON shape (hash lists, the source as its string)."""
    import json

    event = parse_event(
        {"event": "Lead", "source": "app", "user": {"ip": "1.2.3.4"}},
        now=1_700_000_000,
        new_id=lambda: "x",
    )
    assert isinstance(event, Event)
    from gateway.core.eventbuild import with_hashed

    hashed = with_hashed(event, {"meta": {"em": ("a" * 64, "b" * 64)}})
    expected = {
        "e": "Lead",
        "id": "x",
        "t": 1_700_000_000,
        "s": "app",
        "u": {"ip": "1.2.3.4", "h": {"meta": {"em": ["a" * 64, "b" * 64]}}},
        "d": {},
    }
    assert encode(hashed) == json.dumps(expected, separators=(",", ":")).encode()
    assert decode(encode(hashed)) == hashed
