"""The typed batch decoder (core.wire) against the general path (loads + parse_event)."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.event import Event
from gateway.core.eventparse import parse_event
from gateway.core.eventschema import ParseLimits
from gateway.core.fielderrors import FieldError
from gateway.core.identity import PiiHasher
from gateway.core.jsoncodec import loads
from gateway.core.normalize.digests import sha256_hex
from gateway.core.record import Stored, encode, encode_stored
from gateway.core.wire import decode_document, events_from, is_clean, records_from

NOW = 1_700_000_000.0
LIMITS = ParseLimits()
RULESETS = ("meta", "google")

BASE: dict[str, Any] = {
    "event": "Purchase",
    "event_id": "evt-1",
    "time": int(NOW) - 60,
    "source": "website",
    "url": "https://shop.example/thank-you?o=1",
    "user": {
        "email": "Customer.1@Example.com",
        "phone": "+1 (650) 555-1212",
        "ip": "203.0.113.7",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0",
        "fbp": "fb.1.1596403881668.1116446470",
    },
    "data": {
        "value": 149.85,
        "currency": "EUR",
        "order_id": "ORDER-1",
        "contents": [{"id": "SKU-1042", "quantity": 2, "price": 49.95}],
    },
}


def ids() -> Any:
    counter = iter(range(10**6))
    return lambda: f"generated-{next(counter)}"


def general(doc: Any) -> tuple[list[Event | list[FieldError]], list[FieldError]]:
    """Every item through parse_event, as Pipeline.prepare_all runs it."""
    hasher = PiiHasher(RULESETS, default_country="US")
    new_id = ids()
    out: list[Event | list[FieldError]] = []
    for i, item in enumerate(doc["events"]):
        hasher.path = f"events[{i}]"
        seen = len(hasher.warnings)
        parsed = parse_event(
            item, now=NOW, new_id=new_id, path=f"events[{i}]", limits=LIMITS, hasher=hasher
        )
        if isinstance(parsed, list):
            del hasher.warnings[seen:]
        out.append(parsed)
    return out, hasher.warnings


def typed(raw: bytes, clean: bool | None = None) -> tuple[list[Event], list[FieldError]] | None:
    return converted(events_from, raw, clean)


def stored_form(raw: bytes) -> tuple[list[Stored], list[FieldError]] | None:
    return converted(records_from, raw)


def converted(convert: Any, raw: bytes, clean: bool | None = None) -> Any:
    """The typed path's output (`events_from` or `records_from`) and warnings, or None.

    `clean` None: as the API decides (`is_clean`); False: the general string checks.
    """
    items = decode_document(raw)
    if items is None:
        return None
    hasher = PiiHasher(RULESETS, default_country="US")
    clean = is_clean(raw) if clean is None else clean
    out = convert(items, now=NOW, new_id=ids(), limits=LIMITS, hasher=hasher, clean=clean)
    return None if out is None else (out, hasher.warnings)


def agree(doc: Any, raw: bytes | None = None) -> bool:
    """Assert the typed path returns what the general path does; return whether it decided.

    The stored forms `records_from` builds must be the Events' records, byte for byte, and a
    clean body's shortcuts must decide as the general string checks do. Without `raw`, the
    document is tried as ``", "``-spaced and as compact JSON.
    """
    if raw is None:
        spaced = agree(doc, json.dumps(doc).encode())
        compact = agree(doc, json.dumps(doc, separators=(",", ":")).encode())
        assert spaced == compact, "the clean and general checks decided differently"
        return spaced
    fast = typed(raw)
    if is_clean(raw):
        slow = typed(raw, clean=False)
        assert (fast is None) == (slow is None), "the clean and general checks decided differently"
        assert slow is None or fast is None or slow[0] == fast[0]
    stored = stored_form(raw)
    assert (fast is None) == (stored is None), "events_from and records_from decided differently"
    if fast is None or stored is None:
        return False
    assert [encode_stored(s) for s in stored[0]] == [encode(e) for e in fast[0]]
    assert [(w.path, w.reason) for w in stored[1]] == [(w.path, w.reason) for w in fast[1]]
    expected, warnings = general(loads(raw))
    assert all(isinstance(e, Event) for e in expected), "typed path accepted a refused event"
    assert fast[0] == expected
    assert [encode(e) for e in fast[0]] == [encode(e) for e in expected]  # same types too
    assert [(w.path, w.reason) for w in fast[1]] == [(w.path, w.reason) for w in warnings]
    return True


def with_change(path: tuple[str, ...], value: Any, base: dict[str, Any] = BASE) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    target = doc
    for key in path[:-1]:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            return doc  # an earlier change replaced the object: nothing to change inside
    if value is _DELETE:
        target.pop(path[-1], None)
    else:
        target[path[-1]] = value
    return doc


_DELETE = object()


class TestCommonDocuments:
    def test_the_usual_batch_is_decided_by_the_typed_path(self) -> None:
        events = [with_change(("event_id",), f"evt-{i}") for i in range(50)]
        assert agree({"events": events})

    def test_less_common_but_valid_fields_stay_on_the_typed_path(self) -> None:
        rich = copy.deepcopy(BASE)
        rich["user"].update(
            {
                "first_name": "Zoë",
                "last_name": "O'Brien",
                "city": "São Paulo",
                "zip": "94025",
                "country": "us",
                "external_id": "cust-9",
                "ip": "2001:DB8::0:1",
                "click_ids": {"GCLID": "Cj0KCQ", "ttclid": "E.C.P.x"},
                "fbc": "fb.1.1596403881668.AbC-123",
                "visitor_id": "v-1",
            }
        )
        rich["data"].update(
            {
                "content_type": "product",
                "num_items": 3,
                "predicted_ltv": 12,
                "status": "paid",
                "custom": {"coupon": "X1", "first": True, "margin": 3},
            }
        )
        rich["referrer"] = "https://www.google.com/"
        rich["test_code"] = "TEST123"
        assert agree({"events": [rich, BASE]})

    def test_unnormalisable_values_are_dropped_with_the_same_warnings(self) -> None:
        doc = {"events": [BASE, with_change(("user", "phone"), "call me"), BASE]}
        assert agree(doc)
        fast = typed(json.dumps(doc).encode())
        assert fast is not None
        assert [w.path for w in fast[1]] == ["events[1].user.phone"]

    def test_padded_and_blank_values_are_read_as_the_general_path_reads_them(self) -> None:
        for path, value in (
            (("event_id",), "  e-2 "),
            (("event_id",), " "),
            (("url",), " https://shop.example/x "),
            (("referrer",), " https://r.example/ "),
            (("referrer",), "  "),
            (("test_code",), " T1 "),
            (("user", "email"), "  "),
            (("user", "phone"), " 650 555 1212 "),
            (("user", "ip"), " 10.0.0.1 "),
            (("user", "user_agent"), " UA "),
            (("user", "visitor_id"), " v "),
            (("user", "fbp"), " fb.1.1596403881668.x "),
            (("user", "fbc"), " "),
            (("data", "currency"), "usd"),
            (("data", "order_id"), " o-1 "),
            (("data", "contents"), [{"id": " a "}]),
            (("data", "content_name"), " Shoes "),
            (("data", "custom"), {"note": " kept as is "}),
        ):
            assert agree({"events": [with_change(path, value)]}), (path, value)

    def test_integers_beyond_64_bits_read_as_the_general_path_reads_them(self) -> None:
        """msgspec keeps them exact, orjson reads them as floats: the events still agree."""
        assert agree({"events": [with_change(("data", "custom"), {"big": 10**30})]})
        assert agree({"events": [with_change(("data", "value"), 10**11)]})

    def test_no_time_no_id_and_no_user_take_the_defaults(self) -> None:
        bare = {"event": "PageView", "url": "https://shop.example/"}
        lead = {"event": "Lead", "source": "phone_call", "data": {"order_id": "L-1"}}
        assert agree({"events": [bare, lead]})
        fast = typed(json.dumps({"events": [bare, lead]}).encode())
        assert fast is not None
        assert fast[0][0].event_id == "generated-0"
        assert fast[0][0].time == int(NOW)


class TestUnusualDocumentsGoToTheGeneralPath:
    def undecided(self, doc: Any) -> None:
        raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        assert typed(raw) is None

    def test_shapes_and_types(self) -> None:
        for doc in (
            b"",
            b"not json",
            b'{"events": []}x',
            b'\xef\xbb\xbf{"events": []}',
            b'{"events": [{"event": "A", "url": "\\ud800"}]}',
            b'{"events": [{"event": "A", "data": {"value": NaN}}]}',
            {"events": [BASE], "extra": 1},
            {"events": {"0": BASE}},
            [BASE],
            {"events": [with_change(("user", "email"), ["a@b.co", "c@d.co"])]},
            {"events": [with_change(("event_id",), 12345)]},
            {"events": [with_change(("time",), True)]},
            {"events": [with_change(("time",), 10**30)]},
            {"events": [with_change(("data", "custom"), {"big": 10**400})]},
            {"events": [with_change(("data", "contents"), [{"quantity": 1}])]},
            {"events": [with_change(("data", "contents"), [{"id": "a", "x": 1}])]},
            {"events": [with_change(("user", "nickname"), "x")]},
            {"events": [with_change(("consent",), {"ad_storage": True})]},
        ):
            self.undecided(doc)

    def test_values_only_the_general_path_explains(self) -> None:
        for path, value in (
            (("event",), "bad/name"),
            (("event_id",), "line\nbreak"),
            (("url",), "ftp://x"),
            (("url",), _DELETE),
            (("source",), "billboard"),
            (("time",), NOW - 30 * 86400),
            (("time",), "yesterday"),
            (("user", "ip"), "999.1.1.1"),
            (("user", "fbp"), "fbp-cookie"),
            (("user", "click_ids"), {"unknown": "x"}),
            (("data", "currency"), "EURO"),
            (("data", "value"), _DELETE),
            (("data", "value"), 1e13),
            (("data", "contents"), [{"id": "   "}]),
            (("data", "num_items"), -1),
        ):
            self.undecided({"events": [BASE, with_change(path, value)]})


class TestPhoneCountry:
    """A national phone number is read in the event's own user.country, on both roads."""

    def hashed_phone(self, doc: dict[str, Any]) -> tuple[str, ...] | None:
        assert agree(doc), "the typed path should decide this document"
        result = typed(json.dumps(doc).encode())
        assert result is not None
        (event,) = result[0]
        return event.user.hashed["meta"].get("ph")

    def test_event_country_wins_over_the_site_default(self) -> None:
        for country in ("DE", "de", "Germany", "Deutschland", "DEU"):
            doc = {"events": [with_change(("user", "phone"), "030 1234567")]}
            doc["events"][0]["user"]["country"] = country
            assert self.hashed_phone(doc) == (sha256_hex("49301234567"),), country

    def test_site_default_without_a_usable_event_country(self) -> None:
        # The site default here is US: (650) 555-1212 is a US number, 030 1234567 is none.
        for country in (None, "Narnia", "f" * 64):
            doc = {"events": [with_change(("user", "phone"), "(650) 555-1212")]}
            if country is not None:
                doc["events"][0]["user"]["country"] = country
            assert self.hashed_phone(doc) == (sha256_hex("16505551212"),), country
        doc = {"events": [with_change(("user", "phone"), "030 1234567")]}
        assert self.hashed_phone(doc) is None
        result = typed(json.dumps(doc).encode())
        assert result is not None
        assert [w.path for w in result[1]] == ["events[0].user.phone"]

    def test_one_batch_reads_the_same_digits_in_each_events_country(self) -> None:
        events = []
        for country in ("FR", "GB", "US"):
            event = with_change(("user", "phone"), "0612345678")
            event["user"]["country"] = country
            events.append(event)
        doc = {"events": events}
        assert agree(doc)
        result = typed(json.dumps(doc).encode())
        assert result is not None
        hashed = [e.user.hashed["meta"].get("ph") for e in result[0]]
        # FR: a mobile; GB: 0612 345678 is no valid UK number; US: no trunk 0 in NANP.
        assert hashed[0] == (sha256_hex("33612345678"),)
        assert hashed[1] is None
        assert hashed[2] is None


# -- differential property ------------------------------------------------------------------------

_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)) | st.sampled_from(" \t\n"),
    max_size=12,
)
_ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    _TEXT,
    st.lists(_TEXT, max_size=2),
    st.dictionaries(_TEXT, _TEXT, max_size=2),
)
_PATHS: dict[tuple[str, ...], st.SearchStrategy[Any]] = {
    ("event",): st.sampled_from(["Purchase", "PageView", "Lead", "my event", " x", ""]),
    ("event_id",): st.sampled_from(["e-1", "  e-2 ", "", " ", "a" * 300]),
    ("time",): st.sampled_from(
        [int(NOW), NOW - 0.5, NOW + 100, NOW + 1000, "2023-11-14T22:13:20Z", "1699999999", -1]
    ),
    ("source",): st.sampled_from(["website", "app", "physical_store", "other", "Web"]),
    ("url",): st.sampled_from(["https://a.example/x", " http://b.example ", "", "javascript:x"]),
    ("referrer",): st.sampled_from(["https://r.example/", "", "r.example"]),
    ("test_code",): st.sampled_from(["T1", "", "t" * 101]),
    ("user", "email"): st.sampled_from(["A@B.co", " a@b.co ", "not-mail", "", "f" * 64]),
    ("user", "phone"): st.sampled_from(
        ["+44 20 7946 0958", "650-555-1212", "abc", "+1", "030 1234567", "06 12 34 56 78"]
    ),
    ("user", "first_name"): st.sampled_from(["Zoë", "  ", "J.-P."]),
    ("user", "country"): st.sampled_from(["US", "Deutschland", "gb", "FR", "Narnia", "f" * 64]),
    ("user", "date_of_birth"): st.sampled_from(["1990-02-01", "01/02/1990", "x"]),
    ("user", "gender"): st.sampled_from(["female", "M", "x"]),
    ("user", "ip"): st.sampled_from(["10.0.0.1", " 1.2.3.4 ", "::1", "fe80::1%eth0", "x"]),
    ("user", "fbc"): st.sampled_from(["fb.1.1596403881668.abc", "fb.1.1.x", ""]),
    ("user", "click_ids"): st.sampled_from([{}, {"gclid": "a.b"}, {"GCLID": "x"}, {"gclid": ""}]),
    ("user", "visitor_id"): st.sampled_from(["v", "", "v\x00"]),
    ("data", "value"): st.sampled_from([0, 1, 2.5, -3, 10**12, 10**13]),
    ("data", "currency"): st.sampled_from(["usd", " EUR ", "", "E1R"]),
    ("data", "order_id"): st.sampled_from(["o-1", " ", ""]),
    ("data", "contents"): st.sampled_from(
        [[], [{"id": "a"}], [{"id": "b", "quantity": 0, "price": 0}], [{"id": "c", "price": 1}]]
    ),
    ("data", "num_items"): st.sampled_from([0, 1, 10**6, 10**6 + 1]),
    ("data", "custom"): st.sampled_from([{}, {"a": 1}, {"a": "x", "b": False}, {"1a": 1}]),
}


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    events = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        event = copy.deepcopy(BASE)
        for _ in range(draw(st.integers(min_value=0, max_value=4))):
            path = draw(st.sampled_from(sorted(_PATHS)))
            value = draw(_PATHS[path] | _ODD | st.just(_DELETE))
            event = with_change(path, value, event)
        events.append(event)
    return {"events": events}


@settings(max_examples=400, deadline=None)
@given(documents())
def test_typed_path_equals_the_general_path(doc: dict[str, Any]) -> None:
    agree(doc)


def test_the_property_is_not_vacuous() -> None:
    """Plenty of generated documents are decided by the typed path (and so compared)."""
    decided = 0

    @settings(max_examples=400, deadline=None, database=None)
    @given(documents())
    def count(doc: dict[str, Any]) -> None:
        nonlocal decided
        decided += agree(doc)

    count()
    assert decided >= 25  # about 60 on average (15%); 200 examples once gave 19 of the 20 asked


# -- clean bodies ---------------------------------------------------------------------------------

_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=12,
)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_strings(v))]
    return []


@settings(max_examples=300, deadline=None)
@given(_JSON_VALUES, st.booleans(), st.booleans())
def test_a_clean_body_holds_only_printable_strings(
    value: Any, compact: bool, ascii_only: bool
) -> None:
    separators = (",", ":") if compact else (", ", ": ")
    raw = json.dumps(value, separators=separators, ensure_ascii=ascii_only).encode()
    if is_clean(raw):
        for text in _strings(loads(raw)):
            assert text.isprintable(), text


def test_clean_bodies_read_as_the_general_path_reads_them() -> None:
    """Blank, boundary and odd values in compact ASCII bodies (the clean checks' cases)."""
    cases: list[tuple[tuple[str, ...], Any, bool]] = [
        (("event_id",), "", True),
        (("url",), "", False),
        (("referrer",), "", True),
        (("test_code",), "", True),
        (("user", "user_agent"), "", True),
        (("user", "visitor_id"), "", True),
        (("user", "fbp"), "", True),
        (("user", "fbc"), "", True),
        (("user", "fbc"), "fb.1.1596403881668.AbC", True),
        (("user", "fbc"), "fb.1.15.AbC", False),
        (("user", "ip"), "", True),
        (("user", "ip"), "2001:DB8::0:1", True),
        (("user", "ip"), "::ffff:1.2.3.4", True),
        (("user", "ip"), "999.1.1.1", False),
        (("user", "ip"), "1.2.3.4x", False),
        (("data", "order_id"), "", True),
        (("data", "currency"), "", False),
        (("data", "content_name"), "", True),
        (("data", "contents"), [{"id": ""}], False),
        (("data", "contents"), [{"id": "a", "price": 1e13}], False),
        (("data", "contents"), [{"id": "a", "price": -1e13}], False),
        (("data", "contents"), [{"id": "a", "price": 1e12, "quantity": 10**6}], True),
        (("data", "contents"), [{"id": "a", "quantity": 10**6 + 1}], False),
        (("data", "contents"), [{"id": "a", "quantity": -1}], False),
        (("data", "contents"), [{"id": "a" * 300}], False),
        (("event_id",), "a" * 300, False),
    ]
    for path, value, decided in cases:
        doc = {"events": [with_change(path, value)]}
        assert is_clean(json.dumps(doc, separators=(",", ":")).encode()), (path, value)
        assert agree(doc) is decided, (path, value)


def test_is_clean_accepts_ascii_without_escapes_and_refuses_the_rest() -> None:
    for raw in (
        b'{"events":[{"event":"Purchase","url":"https://a.example/x y"}]}',
        b'{"events": [{"event": " Purchase "}]}',
    ):
        assert is_clean(raw), raw
    for raw in (
        b'{"events":[{"event":"Pur\\u0063hase"}]}',  # an escape
        b'{"events":[{"event":"Purchase\x7f"}]}',
        '{"events":[{"event":"Purchäse"}]}'.encode(),
    ):
        assert not is_clean(raw), raw
