"""The fast road of a Meta hit's mirror (destinations.meta.hitwire) against the general road.

General road: `parse_meta_tr` → event object → server fields (`read`) → `Pipeline.prepare`.
Fast road: `HitReader._fast_doc` (gateway/web/hitreader.py), which builds the Event straight
from the query. For any hit and request, both must give the same Events, consent decisions,
visitor ids and counters; the fast road may only decline (None), never decide differently.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from conftest import FakeClock, make_config  # noqa: F401 - fixture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.app import create_app
from gateway.core.event import Event
from gateway.core.eventschema import ParseLimits
from gateway.core.record import encode
from gateway.destinations.meta.hitwire import meta_hit
from gateway.web.cookies import sign_visitor_id
from gateway.web.hits import HITS, HitProxy, HitStats, Observed, decode_query

NOW = 1_790_000_000.0
HOST = "www.shop.test"
FBP = "fb.1.1789999990000.1234567890"
FBC = "fb.1.1789999990000.IwAR2xyz"
EM = "a" * 64
LONG_FBC = "fb.1.1789999990000." + "x" * 400 + ".AQ"  # a valid _fbc the event parser refuses


@pytest.fixture
def hits(make_config: Any, tmp_path: Path) -> HitProxy:  # noqa: F811 - fixture
    url = "http://127.0.0.1:9"
    upstreams = {f"{v}_hits_upstream": url for v in ("meta", "tiktok", "snap", "google")}
    site = {"hosts": [HOST], "proxy": {"enabled": True, **upstreams}}
    app = create_app(make_config(site=site), clock=FakeClock(NOW), run_workers=False)
    proxy: HitProxy = app[HITS]
    return proxy


def _ids() -> Callable[[], str]:
    counter = itertools.count()
    return lambda: f"generated-{next(counter)}"


def observed(
    proxy: HitProxy,
    query: list[tuple[str, str]],
    *,
    cookies: dict[str, str] | None = None,
    referer: str | None = "https://www.shop.test/page",
    ip: str | None = "203.0.113.7",
    user_agent: str | None = "Mozilla/5.0 (test)",
    gpc: bool = False,
    region: str | None = None,
    body: bytes = b"",
) -> Observed:
    site = proxy.collect.by_host[HOST]
    return Observed(
        "meta",
        site,
        "GET",
        query,
        body,
        "",
        cookies or {},
        ip,
        user_agent,
        referer,
        gpc,
        region,
        NOW,
    )


def road(proxy: HitProxy, obs: Observed, *, fast: bool) -> tuple[Any, ...]:
    """Everything a batch makes of one hit by one road."""
    mirror = proxy.mirror
    mirror.reader.fast_hits = fast
    mirror.stats = proxy.stats = HitStats()
    mirror.collect.pipeline.new_id = _ids()
    docs = mirror.reader.read(obs)
    events: list[Event] = mirror._events(docs, {}) if docs else []
    stats = proxy.stats
    decided = [d.event is not None for d in docs]
    return (
        events,
        [encode(e) for e in events],  # the stored record: same fields in the same order
        [(d.decision, d.vid, d.own) for d in docs],
        (stats.invalid, stats.consent_dropped, stats.mirror_errors),
        decided,
    )


def agree(proxy: HitProxy, obs: Observed) -> bool:
    """Assert both roads agree; return whether the fast road decided."""
    *general, general_fast = road(proxy, obs, fast=False)
    *fast, decided = road(proxy, obs, fast=True)
    assert not any(general_fast)
    assert fast == general
    return any(decided)


BASE = {
    "id": "1234567890",
    "ev": "PageView",
    "eid": "evt-1",
    "dl": "https://www.shop.test/",
    "ts": str(int(NOW * 1000) - 5000),
    "v": "2.9.1",
    "it": "1789999990000",
}


def test_the_usual_hits_take_the_fast_road_and_agree(hits: HitProxy) -> None:
    cases: list[list[tuple[str, str]]] = [
        list(BASE.items()),
        [*BASE.items(), ("fbp", FBP), ("fbc", FBC)],
        [(k, v) for k, v in BASE.items() if k not in ("eid", "dl")],
        [
            *BASE.items(),
            ("cd[value]", "25.5"),
            ("cd[currency]", "eur"),
            ("cd[content_ids]", '["SKU1","SKU2"]'),
            ("cd[custom_flag]", "yes"),
            ("ud[em]", EM),
            ("ud[country]", "de"),
        ],
        [
            ("ev", "Purchase"),
            ("cd[value]", "10"),
            ("cd[currency]", "USD"),
            ("cd[order_id]", "o-1"),
            ("cd[contents]", '[{"id":"A","quantity":2,"item_price":5}]'),
        ],
    ]
    key = hits.collect.key
    requests: list[dict[str, Any]] = [
        {},
        {"cookies": {"_fbp": FBP, "_sgv": sign_visitor_id("v" * 32, key)}},
        {"referer": "https://www.shop.test/p?fbclid=IwAR0abc&gclid=Cj0abc", "ip": "2001:db8::1"},
        {"cookies": {"_sgc": "dddd"}},
        {"gpc": True},
        {"referer": None, "user_agent": None, "ip": None},
    ]
    for query in cases:
        for extra in requests:
            assert agree(hits, observed(hits, query, **extra)), (query, extra)


def test_unusual_hits_leave_the_decision_to_the_general_road(hits: HitProxy) -> None:
    base = list(BASE.items())
    declined = [
        [("ev", "Purchase")],  # no value: the pipeline refuses it and counts it
        [*base, ("es", "automatic")],
        [("ev", "Microdata")],
        [*base, ("rqm", "OTHER")],
        [*base, ("eid", "x" * 5000)],
        [("ev", "PageView"), ("eid", "caf\u00e9\u200b")],  # not printable: the precise parser
        [("ev", "PageView"), ("ts", str(int(NOW * 1000) - 10 * 86_400_000))],
    ]
    for query in declined:
        obs = observed(hits, query)
        agree(hits, obs)
        hits.mirror.reader.fast_hits = True
        if query[0] == ("ev", "Purchase") or query[-1][0] == "eid":
            assert hits.mirror.reader._fast_doc(obs) is None, query
    # A body (POSTed hit) always takes the general road.
    obs = observed(hits, base, body=b"ev=Lead")
    assert not agree(hits, obs)
    # A valid _fbc cookie too long for the event parser: the general road refuses the event.
    obs = observed(hits, base, cookies={"_fbc": LONG_FBC})
    assert not agree(hits, obs)
    # A Referer the event parser would refuse as a URL: the general road decides.
    obs = observed(hits, [("ev", "PageView")], referer="https:///nohost")
    assert not agree(hits, obs)


def test_meta_hit_declines_over_long_and_too_many_parameters() -> None:
    limits = ParseLimits()
    assert meta_hit([("ev", "PageView")], now=NOW, limits=limits) is not None
    assert meta_hit([("ev", "PageView"), ("x", "y" * 5000)], now=NOW, limits=limits) is None
    many = [("ev", "PageView"), *((f"k{i}", "v") for i in range(300))]
    assert meta_hit(many, now=NOW, limits=limits) is None
    assert meta_hit([("ev", "PageView"), ("k" * 300, "v")], now=NOW, limits=limits) is None


# --- property: any query, any request ------------------------------------------------------

_FIXTURE = [HealthCheck.function_scoped_fixture]
_texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
_odd = st.sampled_from(
    [
        "",
        " ",
        "  padded  ",
        "tab\there",
        "line\nbreak",
        "caf\u00e9",
        "zero\u200bwidth",
        "\x7f",
        "x" * 300,
        "1e3",
        "-5",
        "nan",
        "inf",
        "12.50",
        "007",
    ]
)
_values: dict[str, st.SearchStrategy[str]] = {
    "ev": st.sampled_from(
        ["PageView", "Purchase", "Lead", "ViewContent", "Microdata", "bad name!", " Lead", "Lead\n"]
    )
    | _texts,
    "eid": st.sampled_from(["evt-1", " evt ", "ord-1", "x" * 257]) | _odd | _texts,
    "ts": st.sampled_from(
        [
            str(int(NOW * 1000) - 5000),
            str(int(NOW) - 60),
            str(int(NOW * 1000) + 10**7),
            str(int(NOW * 1000) - 2 * 86_400_000),
            str(int(NOW) - 86_400),
            "1.7e12",
        ]
    )
    | _odd,
    "dl": st.sampled_from(
        [
            "https://www.shop.test/",
            "http://x.example/a?fbclid=IwAR1&gclid=g1",
            " https://pad.example/ ",
            "https://",
            "https:///x",
            "javascript:alert(1)",
            "HTTPS://UPPER.example/\u00e4",
            "https://a.example/\u200b",
            "https://a.example/\x01",
        ]
    )
    | _odd,
    "fbp": st.sampled_from([FBP, " " + FBP, "fb.1.123.x", "fb.1.1789999990000." + "x" * 300])
    | _odd,
    "fbc": st.sampled_from([FBC, LONG_FBC, FBC + "\u00e9", "fb.2.1789999990000.abc"]) | _odd,
    "rqm": st.sampled_from(["GET", "get ", "SB", "POST", "FGET", "OTHER"]),
    "es": st.sampled_from(["automatic", "manual"]),
    "cd[value]": st.sampled_from(["25.5", "1e13", "abc", " 3 "]) | _odd,
    "cd[currency]": st.sampled_from(["EUR", "eur", "EURO", "E1R", " usd "]) | _odd,
    "cd[order_id]": st.sampled_from(["o-1", " o ", "x" * 300]) | _odd,
    "cd[content_ids]": st.sampled_from(['["a","b"]', "solo", "[1, 2]", "[{}]", "[", '[" "]']),
    "cd[contents]": st.sampled_from(
        ['[{"id":"A","quantity":2,"item_price":5}]', '[{"id":1,"quantity":-1}]', "[]", "{}"]
    ),
    "cd[num_items]": st.sampled_from(["2", "2.5", "-1", "1000001"]) | _odd,
    "cd[content_type]": _odd | _texts,
    "cd[search_string]": _odd | _texts,
    "cd[weird key]": _texts,
    "cd[flag]": _odd | _texts,
    "ud[em]": st.sampled_from([EM, "Someone@Example.com", " a@b.c ", "not-an-email"]) | _odd,
    "ud[ph]": st.sampled_from(["+1 650 555 1212", "123"]) | _odd,
    "ud[fn]": _odd | _texts,
    "ud[country]": st.sampled_from(["de", "USA", "zz"]),
    "ud[external_id]": _odd | _texts,
    "ud[zz]": _texts,
    "id": st.sampled_from(["1234567890", "bad id"]),
    "rl": st.sampled_from(["https://ref.example/?gclid=abc", "https://r.example/\u200b", "nope"])
    | _odd,
    "v": _texts,
}
_pair = st.sampled_from(sorted(_values)).flatmap(lambda k: st.tuples(st.just(k), _values[k]))
_queries = st.lists(_pair, max_size=12).map(
    lambda pairs: [("ev", "PageView"), *pairs] if len(pairs) % 3 == 0 else pairs
)
_cookie_sets = st.sampled_from(
    [
        {},
        {"_fbp": FBP},
        {"_fbp": "junk", "_fbc": FBC},
        {"_fbc": LONG_FBC},
        {"_sgc": "gggg"},
        {"_sgc": "dddd"},
        {"_sgc": "gdgu"},
        {"_gcl_aw": "GCL.1789999990.Cj0abc"},
        {"_sgv": "forged.value"},
        {"euconsent-v2": "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA"},
    ]
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    query=_queries,
    cookies=_cookie_sets,
    referer=st.sampled_from(
        [
            None,
            "https://www.shop.test/p?fbclid=IwAR0abc",
            "http://",
            "https:///x",
            "HTTPS://www.shop.test/\u00e4",
            "https://www.shop.test/\u200b",
            "ftp://x.example/",
        ]
    ),
    ip=st.sampled_from([None, "", "203.0.113.7", "2001:DB8::1", "::ffff:1.2.3.4", "bad"]),
    user_agent=st.sampled_from([None, "Mozilla/5.0", "tab\tua", "zero\u200bwidth"]),
    gpc=st.booleans(),
    region=st.sampled_from([None, "US-CA", "DE"]),
    visitor=st.booleans(),
)
def test_both_roads_agree_on_any_hit(
    hits: HitProxy,
    query: list[tuple[str, str]],
    cookies: dict[str, str],
    referer: str | None,
    ip: str | None,
    user_agent: str | None,
    gpc: bool,
    region: str | None,
    visitor: bool,
) -> None:
    if visitor:
        cookies = {**cookies, "_sgv": sign_visitor_id("b" * 32, hits.collect.key)}
    obs = observed(
        hits,
        query,
        cookies=cookies,
        referer=referer,
        ip=ip,
        user_agent=user_agent,
        gpc=gpc,
        region=region,
    )
    agree(hits, obs)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(query=_queries)
def test_both_roads_agree_on_decoded_raw_queries(
    hits: HitProxy, query: list[tuple[str, str]]
) -> None:
    raw = "&".join(f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in query)
    agree(hits, observed(hits, decode_query(raw)))


def test_a_short_event_window_is_the_pipeline_s(hits: HitProxy) -> None:
    """A site that keeps events for less than a day refuses a hit the parser kept."""
    site = hits.collect.by_host[HOST]
    short = replace(site, limits=ParseLimits(max_age_seconds=900, max_age_offline_seconds=900))
    for age in (60, 3_600):
        query = [("ev", "PageView"), ("ts", str(int((NOW - age) * 1000)))]
        obs = observed(hits, query)
        obs.site = short
        decided = agree(hits, obs)
        assert decided == (age == 60)


def test_lane_answers_from_the_head_memo_are_the_slow_road_s(hits: HitProxy) -> None:
    from gateway.web.hits import HIT_ROUTES, HitRequest
    from gateway.web.upstream import UpstreamAnswer

    site = hits.collect.by_host[HOST]
    route = HIT_ROUTES[0]
    answers = [
        (200, {"content-type": "image/gif", "content-length": "3"}, b"GIF"),
        (200, {"content-type": "text/plain", "content-encoding": "gzip"}, b"zz"),
        (204, {"content-type": "image/gif"}, b"?"),  # (a body the answer must not carry)
        (404, {"content-type": "bad\x01type"}, b"nope"),
        (200, {}, b"raw"),
        (302, {"location": "https://elsewhere.example/"}, b""),
    ]
    for origin in (None, "https://www.shop.test", "https://evil.example"):
        headers = {"host": HOST, "accept-encoding": "gzip"}  # (the gzip answer passes as is)
        if origin is not None:
            headers["origin"] = origin
        hit = HitRequest("GET", "", [], HOST, headers, None, (), b"")
        for status, fields, body in answers:
            for _ in range(2):  # the second one comes from the memo (when it may)
                result = UpstreamAnswer(status, "", fields, body)
                made = hits.answers
                expected = made.final(made.answer_from(result, route), site, hit).encode()
                forwarded = hits.stats.forwarded
                assert made.lane_answer(result, route, site, hit) == expected
                assert hits.stats.forwarded - forwarded == (0 if status == 302 else 1)
    assert (302, None, None) not in hits.answers._answer_heads
