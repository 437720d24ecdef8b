"""Merging duplicate copies of one conversion (browser + backend)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.event import Content, Data, Event, Source, User
from gateway.core.merge import merge, source_pair

H1, H2, H3 = "a" * 64, "b" * 64, "c" * 64


def ev(**kw: object) -> Event:
    base: dict[str, object] = {"event": "Purchase", "event_id": "o1", "time": 1000,
                               "source": Source.WEBSITE}  # fmt: skip
    base.update(kw)
    return Event(**base)  # type: ignore[arg-type]


BROWSER = ev(
    time=1000,
    url="https://shop.example/thanks",
    user=User(hashed={"meta": {"em": (H1,)}}, ip="203.0.113.7", user_agent="UA",
              fbc="fb.1.1554763741205.X", fbp="fb.1.1.2", click_ids={"fbclid": "X"}),
    data=Data(value=10.0, currency="EUR", order_id="o1"),
)  # fmt: skip
BACKEND = ev(
    time=1005,
    user=User(hashed={"meta": {"em": (H2,), "ph": (H3,)}}, ip="10.0.0.1"),
    data=Data(value=12.5, currency="USD", order_id="o1", contents=(Content("sku", 1, 12.5),)),
)


def test_union_of_identifiers_browser_plain_ids_backend_values() -> None:
    merged = merge(BROWSER, BACKEND, "loader", "api")
    assert set(merged.user.hashed["meta"]["em"]) == {H1, H2}
    assert merged.user.hashed["meta"]["ph"] == (H3,)
    assert merged.user.ip == "203.0.113.7"
    assert merged.user.fbc == BROWSER.user.fbc
    assert merged.user.click_ids == {"fbclid": "X"}
    assert (merged.data.value, merged.data.currency) == (12.5, "USD")
    assert merged.data.contents == BACKEND.data.contents
    assert merged.url == BROWSER.url
    assert merged.time == 1000


def test_order_of_arrival_does_not_change_the_result() -> None:
    assert merge(BROWSER, BACKEND, "loader", "api") == merge(BACKEND, BROWSER, "api", "loader")


def test_source_pair_is_order_free() -> None:
    assert source_pair("loader", "api") == source_pair("api", "loader") == "api+loader"


digests = st.lists(st.sampled_from([H1, H2, H3]), min_size=0, max_size=3, unique=True)


@settings(max_examples=100, deadline=None)
@given(digests, digests, st.integers(0, 10_000), st.integers(0, 10_000))
def test_merge_never_loses_an_identifier_and_keeps_the_earliest_time(
    a: list[str], b: list[str], ta: int, tb: int
) -> None:
    x = ev(time=ta, user=User(hashed={"meta": {"em": tuple(a)}} if a else {}))
    y = ev(time=tb, user=User(hashed={"meta": {"em": tuple(b)}} if b else {}))
    merged = merge(x, y, "pixel", "api")
    assert set(merged.user.hashed.get("meta", {}).get("em", ())) == set(a) | set(b)
    assert merged.time == min(ta, tb)
