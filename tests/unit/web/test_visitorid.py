"""user.visitor_id as a backend passes it: a signed `_sgv` value is verified, a plain id kept."""

from __future__ import annotations

import pytest

from gateway.core.event import Event, Source, User
from gateway.web.cookies import sign_visitor_id
from gateway.web.visitorid import BAD_SIGNATURE, resolve, resolve_events

KEY = b"k" * 32


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (sign_visitor_id("1790000000000-abc", KEY), ("1790000000000-abc", False)),
        (sign_visitor_id("v1", b"x" * 32), (None, True)),  # signed by another key
        ("v1." + "A" * 22, (None, True)),  # the shape of a signed value, a wrong signature
        ("plain-id", ("plain-id", False)),
        ("user.123", ("user.123", False)),  # a plain id with a dot is not a cookie value
        (None, (None, False)),
    ],
)
def test_resolve(value: str | None, expected: tuple[str | None, bool]) -> None:
    assert resolve(value, KEY) == expected


def test_without_a_key_a_signed_value_cannot_be_trusted() -> None:
    assert resolve(sign_visitor_id("v1", KEY), None) == (None, True)


def test_resolve_events_names_the_request_index() -> None:
    def event(vid: str | None) -> Event:
        return Event("Purchase", "e", 1, Source.WEBSITE, user=User(visitor_id=vid))

    events = [event(sign_visitor_id("v1", KEY)), event("v2." + "B" * 22), event(None)]
    out, warnings = resolve_events(events, [0, 3, 4], KEY, "events")
    assert [e.user.visitor_id for e in out] == ["v1", None, None]
    assert [(w.path, w.reason) for w in warnings] == [("events[3].user.visitor_id", BAD_SIGNATURE)]
    assert out[2] is events[2]
