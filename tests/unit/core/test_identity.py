"""Hashing PII while parsing: one hasher per request, memoised, warnings with each event's path."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.event import Event, ParseLimits, parse_event
from gateway.core.identity import PiiHasher, hash_identifiers

NOW = 1_700_000_000.0
RULES = ("meta", "google")


def event(**user: Any) -> dict[str, Any]:
    return {"event": "Lead", "source": "app", "user": user}


def parse(obj: Any, hasher: PiiHasher | None = None, path: str = "") -> Event | list[Any]:
    return parse_event(
        obj, now=NOW, new_id=lambda: "x", path=path, limits=ParseLimits(), hasher=hasher
    )


def test_hashing_while_parsing_equals_hashing_after() -> None:
    obj = event(email=" Jane.Doe+x@GMail.com ", phone="+1 (650) 555-1212", country="Germany")
    hasher = PiiHasher(RULES, default_country="us", path="events[0]")
    fused = parse(obj, hasher)
    plain = parse(obj)
    assert isinstance(fused, Event)
    assert isinstance(plain, Event)
    after, warnings = hash_identifiers(plain, RULES, default_country="us", path="events[0]")
    assert fused == after
    assert fused.user.pii == {}
    assert fused.user.hashed["google"]["em"] != fused.user.hashed["meta"]["em"]  # gmail rule
    assert hasher.warnings == warnings == []


def test_one_hasher_for_a_batch_reports_each_events_own_paths() -> None:
    hasher = PiiHasher(("meta",), default_country=None)
    out = []
    for i, phone in enumerate(["650 555 1212", "+1 650 555 1212", "650 555 1212"]):
        hasher.path = f"events[{i}]"
        out.append(parse(event(phone=phone, email="a@b.co"), hasher, hasher.path))
    assert [w.path for w in hasher.warnings] == ["events[0].user.phone", "events[2].user.phone"]
    assert all(isinstance(e, Event) for e in out)
    hashed = [e.user.hashed["meta"] for e in out if isinstance(e, Event)]
    assert "ph" not in hashed[0]
    assert "ph" in hashed[1]
    assert hashed[0]["em"] == hashed[1]["em"] == hashed[2]["em"]  # memoised, same digest


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "email": st.sampled_from(["a@b.co", "A@B.CO ", "bad", "", "x" * 300 + "@b.co"]),
                "phone": st.sampled_from(["+44 20 7946 0958", "12", "+1 650 555 1212", "ab"]),
                "city": st.sampled_from(["Berlin", "São Paulo", "!!"]),
                "external_id": st.sampled_from(["u1", "u2"]),
            },
        ),
        max_size=6,
    )
)
def test_a_shared_memoising_hasher_gives_what_a_fresh_one_gives(
    users: list[dict[str, str]],
) -> None:
    shared = PiiHasher(RULES, default_country="de")
    for i, user in enumerate(users):
        obj = event(**user)
        shared.path = f"events[{i}]"
        seen = len(shared.warnings)
        fresh = PiiHasher(RULES, default_country="de", path=f"events[{i}]")
        assert parse(obj, shared, shared.path) == parse(obj, fresh, fresh.path)
        assert shared.warnings[seen:] == fresh.warnings
