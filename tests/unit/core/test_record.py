"""The stored record: its documented JSON shape, and decode(encode(e)) == e for any event."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.event import Consent, Content, Data, Event, Source, User
from gateway.core.record import RawPIIError, decode, encode

_text = st.text(max_size=12)
_opt_text = st.none() | _text
_number = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
_digests = st.tuples(st.text("0123456789abcdef", min_size=64, max_size=64))


@st.composite
def events(draw: st.DrawFn) -> Event:
    hashed = draw(
        st.dictionaries(
            st.sampled_from(["meta", "google", "tiktok"]),
            st.dictionaries(st.sampled_from(["em", "ph", "fn", "external_id"]), _digests),
            max_size=2,
        )
    )
    user = User(
        hashed=hashed,
        ip=draw(st.none() | st.ip_addresses().map(str)),
        user_agent=draw(_opt_text),
        visitor_id=draw(_opt_text),
        fbc=draw(_opt_text),
        fbp=draw(_opt_text),
        click_ids=draw(st.dictionaries(st.sampled_from(["gclid", "ttclid"]), _text, max_size=2)),
    )
    data = Data(
        value=draw(st.none() | _number),
        currency=draw(st.none() | st.sampled_from(["EUR", "USD"])),
        order_id=draw(_opt_text),
        contents=tuple(
            draw(
                st.lists(
                    st.builds(
                        Content,
                        _text,
                        st.none() | st.integers(0, 10**6),
                        st.none() | _number,
                    ),
                    max_size=3,
                )
            )
        ),
        content_type=draw(_opt_text),
        content_name=draw(_opt_text),
        content_category=draw(_opt_text),
        num_items=draw(st.none() | st.integers(0, 10**6)),
        search_string=draw(_opt_text),
        status=draw(_opt_text),
        predicted_ltv=draw(st.none() | _number),
        custom=draw(
            st.dictionaries(
                st.from_regex(r"[a-z_]{1,8}", fullmatch=True),
                st.booleans() | _number | _text,
                max_size=3,
            )
        ),
    )
    consent = draw(
        st.none()
        | st.builds(
            Consent,
            st.none() | st.booleans(),
            st.none() | st.booleans(),
            st.none() | st.booleans(),
            st.none() | st.booleans(),
        )
    )
    return Event(
        event=draw(st.sampled_from(["Purchase", "PageView", "my event"])),
        event_id=draw(_text),
        time=draw(st.integers(0, 2 * 10**9)),
        source=draw(st.sampled_from(list(Source))),
        url=draw(_opt_text),
        referrer=draw(_opt_text),
        user=user,
        data=data,
        consent=consent,
        test_code=draw(_opt_text),
        ldu=draw(st.booleans()),
        channel=draw(st.sampled_from(["api", "loader", "pixel"])),
    )


def documented(event: Event) -> dict[str, Any]:
    """The record's shape as documented in gateway/core/record.py, built the plain way."""
    u, d = event.user, event.data
    user = {
        "ip": u.ip,
        "ua": u.user_agent,
        "vid": u.visitor_id,
        "fbc": u.fbc,
        "fbp": u.fbp,
        "h": {r: {k: list(v) for k, v in ids.items()} for r, ids in u.hashed.items()} or None,
        "cid": dict(u.click_ids) or None,
    }
    data = {
        "value": d.value,
        "currency": d.currency,
        "order_id": d.order_id,
        "content_type": d.content_type,
        "content_name": d.content_name,
        "content_category": d.content_category,
        "num_items": d.num_items,
        "search_string": d.search_string,
        "status": d.status,
        "predicted_ltv": d.predicted_ltv,
        "contents": [[c.id, c.quantity, c.price] for c in d.contents] or None,
        "custom": dict(d.custom) or None,
    }
    c = event.consent
    rec = {
        "e": event.event,
        "id": event.event_id,
        "t": event.time,
        "s": event.source.value,
        "u": {k: v for k, v in user.items() if v is not None},
        "d": {k: v for k, v in data.items() if v is not None},
        "url": event.url,
        "ref": event.referrer,
        "tc": event.test_code,
        "ldu": 1 if event.ldu else None,
        "ch": event.channel if event.channel != "api" else None,
        "c": None
        if c is None
        else [c.ad_storage, c.analytics_storage, c.ad_user_data, c.ad_personalization],
    }
    return {k: v for k, v in rec.items() if v is not None}


@settings(max_examples=300, deadline=None)
@given(events())
def test_records_have_the_documented_shape_and_decode_to_the_same_event(event: Event) -> None:
    raw = encode(event)
    assert json.loads(raw) == documented(event)
    assert decode(raw) == event


def test_an_event_with_raw_pii_is_never_encoded() -> None:
    event = Event("Lead", "x", 1, Source.OTHER, user=User(pii={"em": ("a@b.co",)}))
    with pytest.raises(RawPIIError):
        encode(event)


def test_mappings_that_are_not_dicts_are_stored_as_objects() -> None:
    from types import MappingProxyType

    event = Event(
        "Lead",
        "x",
        1,
        Source.OTHER,
        user=User(
            hashed=MappingProxyType({"meta": MappingProxyType({"em": ("a" * 64,)})}),
            click_ids=MappingProxyType({"gclid": "g"}),
        ),
        data=Data(custom=MappingProxyType({"k": 1.5})),
    )
    assert json.loads(encode(event)) == {
        "e": "Lead",
        "id": "x",
        "t": 1,
        "s": "other",
        "u": {"h": {"meta": {"em": ["a" * 64]}}, "cid": {"gclid": "g"}},
        "d": {"custom": {"k": 1.5}},
    }
