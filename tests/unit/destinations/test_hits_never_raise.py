"""Every vendor's hit parser, fuzzed: never raises, always gives events parse_event accepts."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from unittest import mock
from urllib.parse import urlencode

from hitsamples import (
    FBC,
    FBP,
    H_EMAIL,
    NOW,
    NOW_MS,
    ga4_line,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.eventparse import parse_event
from gateway.core.hits import Hit
from gateway.destinations.ga4 import hits as ga4_hits
from gateway.destinations.ga4.hits import parse_ga4
from gateway.destinations.meta import hits as meta_hits
from gateway.destinations.meta.hits import parse_meta_tr
from gateway.destinations.snap import hits as snap_hits
from gateway.destinations.snap.hits import parse_snap
from gateway.destinations.tiktok import hits as tiktok_hits
from gateway.destinations.tiktok.hits import parse_tiktok


def meta(pairs: list[tuple[str, str]], form: list[tuple[str, str]] | None = None) -> Hit | None:
    return parse_meta_tr(pairs, form or (), now=NOW)


# --- robustness ---------------------------------------------------------------------------------

_R = TypeVar("_R")


@contextmanager
def unguarded() -> Iterator[None]:
    """Run the parsers without their last-resort guard, so that any bug surfaces."""

    def run(parse: Callable[[], _R], default: _R) -> _R:
        return parse()

    with (
        mock.patch.object(meta_hits, "guarded", run),
        mock.patch.object(tiktok_hits, "guarded", run),
        mock.patch.object(snap_hits, "guarded", run),
        mock.patch.object(ga4_hits, "guarded", run),
    ):
        yield


def assert_acceptable(hit: Hit) -> None:
    """Every produced event parses; only a Purchase may lack its value/currency."""
    result = parse_event(hit.event, now=NOW, new_id=lambda: "x")
    if isinstance(result, list):
        assert hit.event["event"] == "Purchase", result
        assert {e.path for e in result} <= {".data.value", ".data.currency"}, result
        assert all("required" in e.reason for e in result)


FUZZ = settings(max_examples=150, deadline=None)
FUZZ_JSON = settings(max_examples=100, deadline=None)
META_KEYS = [
    *("id", "ev", "eid", "dl", "rl", "ts", "fbp", "fbc", "rqm", "es"),
    *(f"cd[{k}]" for k in ("value", "currency", "contents", "content_ids", "num_items", "x")),
    *(f"ud[{k}]" for k in ("em", "ph", "external_id", "country")),
]
NAMES = ["Purchase", "PageView", "Lead", "CompletePayment", "Pageview", "PURCHASE", "ADD_CART"]
NAMES += ["page_view", "purchase", "scroll", "user_engagement", "", "bad name\n", "A" * 101]
texts = st.text(max_size=40)
values = st.one_of(
    texts,
    st.sampled_from(
        [
            *NAMES,
            "https://shop.example/",
            "EUR",
            "12.5",
            "-3",
            "1e12",
            str(NOW_MS),
            str(NOW_MS + 10**9),
            FBP,
            FBC,
            H_EMAIL,
            "A-1",
            "idSKU~qt2~pr3.5",
            '[{"id": "a", "quantity": 1, "item_price": 2}]',
            '[{"id": " ", "quantity": -1, "item_price": "1e400"}]',
            '["a", 1, null]',
            "nan",
            "\ud800",
            "x" * 300,
        ]
    ),
)
pairs = st.lists(st.tuples(st.sampled_from(META_KEYS) | texts, values), max_size=25)
named_pairs = st.tuples(st.sampled_from(NAMES), pairs).map(lambda t: [("ev", t[0]), *t[1]])
anything = st.one_of(
    st.none(),
    st.integers(),
    st.floats(),
    texts,
    st.binary(max_size=50),
    st.lists(st.one_of(st.tuples(texts), st.tuples(texts, st.integers()), texts)),
    st.dictionaries(texts, st.one_of(texts, st.integers(), st.none())),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), values)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=10,
)


def loose(keys: list[str], leaf: st.SearchStrategy[Any] = json_values) -> st.SearchStrategy[Any]:
    """A JSON object with any subset of `keys` (or sometimes something else entirely)."""
    obj = st.fixed_dictionaries({}, optional=dict.fromkeys(keys, leaf))
    return st.integers(0, 3).flatmap(lambda i: obj if i else json_values)


TT_CONTENT = loose(["content_id", "quantity", "price", "content_name"], scalars)
TT_PROPERTIES = loose(
    ["value", "currency", "contents", "content_ids", "order_id", "query", "num_items", "extra"],
    st.one_of(scalars, st.lists(TT_CONTENT, max_size=3)),
)
TT_CONTEXT = st.fixed_dictionaries(
    {},
    optional={
        "page": loose(["url", "referrer"]),
        "ad": loose(["callback"]),
        "user": loose(["email", "phone_number", "external_id"]),
        "pixel": loose(["code"]),
    },
)
TT_EVENT = st.fixed_dictionaries(
    {"event": st.one_of(st.sampled_from(NAMES), json_values)},
    optional={
        "event_id": json_values,
        "timestamp": st.one_of(json_values, st.sampled_from(["2026-09-21T14:13:00Z", "2026"])),
        "context": TT_CONTEXT,
        "properties": TT_PROPERTIES,
    },
)
TT_BODY = st.one_of(
    TT_EVENT,
    st.lists(TT_EVENT, max_size=3),
    st.lists(TT_EVENT, max_size=3).map(lambda b: {"batch": b}),
).map(lambda doc: json.dumps(doc).encode())
SNAP_KEYS = ["pid", "ev", "pl", "rf", "ts", "u_hem", "u_hpn", "e_cur", "e_pr", "e_tid", "e_iids"]
SNAP_KEYS += ["e_ni", "e_ss", "client_dedup_id"]
SNAP_NAMES = st.sampled_from([*NAMES, *snap_hits.SNAP_EVENTS, "SAVE"])
GA4_KEYS = ["en", "tid", "dl", "dr", "cu", "gcs", "cid", "sid", "uid", "ep.event_id"]
GA4_KEYS += ["ep.transaction_id", "epn.value", "ep.value", "ep.x", "epn.y", "pr1", "pr2", "pr201"]
ga4_pairs = st.lists(st.tuples(st.sampled_from(GA4_KEYS) | texts, values), max_size=8)
ga4_lines = st.lists(
    st.tuples(st.sampled_from(NAMES), ga4_pairs).map(lambda t: ga4_line([("en", t[0]), *t[1]]))
    | ga4_pairs.map(ga4_line)
    | texts,
    max_size=5,
).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))


class TestNeverRaises:
    @FUZZ
    @given(st.one_of(named_pairs, pairs), pairs)
    def test_meta_pairs(self, query: list[tuple[str, str]], form: list[tuple[str, str]]) -> None:
        with unguarded():
            hit = parse_meta_tr(query, form, now=NOW)
        if hit is not None:
            assert_acceptable(hit)

    @FUZZ
    @given(anything, anything)
    def test_meta_wrong_types(self, query: Any, form: Any) -> None:
        with unguarded():
            hit = parse_meta_tr(query, form, now=NOW)
        if hit is not None:
            assert_acceptable(hit)

    @FUZZ_JSON
    @given(st.one_of(TT_BODY, TT_BODY, st.binary(max_size=200)))
    def test_tiktok(self, body: bytes) -> None:
        with unguarded():
            found = parse_tiktok(body, now=NOW)
        for hit in found:
            assert_acceptable(hit)

    @FUZZ
    @given(
        pairs,
        st.one_of(
            st.binary(max_size=200),
            st.tuples(SNAP_NAMES, st.lists(st.tuples(st.sampled_from(SNAP_KEYS), values))).map(
                lambda t: urlencode([("ev", t[0]), *t[1]], errors="surrogatepass").encode()
            ),
        ),
        st.sampled_from(["", "application/json", "application/x-www-form-urlencoded", "x/y"]),
    )
    def test_snap(self, query: list[tuple[str, str]], body: bytes, content_type: str) -> None:
        with unguarded():
            hit = parse_snap(query, body, content_type, now=NOW)
        if hit is not None:
            assert_acceptable(hit)

    @FUZZ_JSON
    @given(
        st.lists(st.tuples(st.sampled_from(SNAP_KEYS), values), max_size=5),
        st.tuples(
            SNAP_NAMES, loose(SNAP_KEYS, st.one_of(scalars, st.lists(scalars, max_size=3)))
        ).map(lambda t: {**t[1], "ev": t[0]} if isinstance(t[1], dict) else t[1]),
    )
    def test_snap_json(self, query: list[tuple[str, str]], doc: Any) -> None:
        body = json.dumps(doc).encode()
        with unguarded():
            hit = parse_snap(query, body, "application/json", now=NOW)
        if hit is not None:
            assert_acceptable(hit)

    @FUZZ
    @given(st.one_of(ga4_pairs, st.just([("en", "purchase")])), ga4_lines)
    def test_ga4(self, query: list[tuple[str, str]], body: bytes) -> None:
        with unguarded():
            found = parse_ga4(query, body, now=NOW)
        for hit in found:
            assert_acceptable(hit)

    @FUZZ
    @given(anything, st.one_of(st.binary(max_size=300), anything))
    def test_ga4_wrong_types(self, query: Any, body: Any) -> None:
        with unguarded():
            found = parse_ga4(query, body, now=NOW)
        for hit in found:
            assert_acceptable(hit)

    @FUZZ
    @given(anything, anything, anything)
    def test_wrong_types_everywhere(self, a: Any, b: Any, c: Any) -> None:
        with unguarded():
            assert parse_tiktok(a, now=NOW) == [] or isinstance(a, bytes)
            parse_snap(a, b, c, now=NOW)

    def test_guard_turns_a_bug_into_no_result(self) -> None:
        def boom(*_: object) -> None:
            raise RuntimeError("bug")

        with (
            mock.patch.object(meta_hits, "_meta_tr", boom),
            mock.patch.object(ga4_hits, "_ga4", boom),
        ):
            assert parse_meta_tr([("ev", "PageView")], now=NOW) is None
            assert parse_ga4([("en", "page_view")], b"", now=NOW) == []
