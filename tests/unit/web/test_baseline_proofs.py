"""The stored-event proofs of the 202-warning check (web.baseline_proofs) against the general road.

General road: decode the stored record into an Event and ask each destination's `validate`
(`Baseline(sites, proofs=False)`). Fast road: a destination whose proof holds for the record is
not asked, and a record no destination has to be asked about is not decoded. A proof may only
decline (False), never answer True for an event its destination would refuse; the warnings of a
request must be equal, path, reason and order.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.app import RUNTIME, create_app
from gateway.config import parse
from gateway.core.event import Consent, Content, Data, Event, Source, User
from gateway.core.record import Stored, decode, encode, encode_stored
from gateway.core.routing import NO_RULES, renamed
from gateway.destinations import DESTINATIONS
from gateway.web import baseline as baseline_module
from gateway.web.api import EventsApi
from gateway.web.baseline import Baseline
from gateway.web.baseline_proofs import proof_for
from gateway.web.pipeline import Site

BENCH = Path(__file__).resolve().parents[3] / "bench"
sys.path.insert(0, str(BENCH))

import benchload  # noqa: E402 - bench/ is not a package
from platforms import CLICK_IDS, PLATFORMS, UNREACHABLE  # noqa: E402

PROVEN = ("snap", "pinterest", "reddit", "linkedin", "microsoft", "x", "ga4")
"""The destinations with a proof."""

D1, D2 = "1" * 64, "2" * 64
API_KEY = "sg_test_key_0123456789abcdef"

# Per destination: settings on top of the bench's, some naming events a destination refuses
# at send time (a Snap/Pinterest name that is no platform event, a rule id that is not one).
_VARIANTS: Mapping[str, Sequence[Mapping[str, Any]]] = {
    "snap": ({}, {"custom_events": {"order_paid": "PURCHASE", "Contact": "NOPE"}}),
    "pinterest": ({}, {"custom_events": {"order_paid": "checkout", "Contact": "nope"}}),
    "reddit": ({}, {"custom_events": {"order_paid": "Purchase", "my_custom": "c" * 70}}),
    "linkedin": (
        {},
        {"send_limited_data_use": True},
        {"conversion_rules": {"Lead": "123", "my_custom": "abc", "order_paid": "77"}},
    ),
    "microsoft": ({}, {"custom_events": {"my_custom": "pageLoad", "order_paid": "purchase"}}),
    "x": ({}, {"event_ids": {"Lead": "o87nf", "my_custom": "tw-o8z6j-o87ng"}}),
    "ga4": ({},),
}
_ROUTING: Sequence[Mapping[str, Any]] = (
    {},
    {},
    {"event_names": {"order_paid": "Purchase", "my_custom": "PageView"}},
    {"events": ["Purchase", "Lead", "my_custom"]},
    {"exclude_events": ["Purchase"]},
)
_NAMES = (
    "Purchase",
    "PageView",
    "Lead",
    "Contact",
    "AddToCart",
    "Search",
    "CompleteRegistration",
    "order_paid",
    "my_custom",
    "session_start",
    "firebase_thing",
    "Sign Up",
    "n" * 70,
)


def site_of(destinations: Mapping[str, Mapping[str, Any]]) -> Site:
    doc = {"sites": [{"id": "s", "api_keys": ["sg_test_key_0123456789abcdef"]}]}
    doc["sites"][0]["destinations"] = destinations
    (config,) = parse(doc, {}, Path(".")).sites
    return Site.from_config(config)


@st.composite
def sites(draw: st.DrawFn) -> Site:
    chosen: dict[str, dict[str, Any]] = {}
    for name in PLATFORMS:
        if draw(st.integers(0, 4)) == 0:
            continue  # now and then a destination is not configured
        table = PLATFORMS[name].settings(name, UNREACHABLE)
        table.update(draw(st.sampled_from(_VARIANTS.get(name, ({},)))))
        table.update(draw(st.sampled_from(_ROUTING)))
        chosen[name] = table
    return site_of(chosen)


def _opt(*values: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from(values)


_HASHED = st.fixed_dictionaries(
    {},
    optional={
        key: _opt((D1,), (D1, D2), ()) for key in ("em", "ph", "external_id", "fn", "ln", "ct")
    },
)
_CLICK_IDS = st.fixed_dictionaries(
    {},
    optional={
        "ga": _opt("1234567890.1700000000", "GA1.1.1234567890.1700000000", "bad", ""),
        "twclid": _opt("tw1", ""),
        "li_fat_id": _opt("li1", ""),
        "rdt_cid": _opt("rd1", ""),
        "msclkid": _opt("0123456789abcdef0123456789abcdef", "bad", ""),
        "fbclid": _opt("fb1"),
        "gclid": _opt("g1", ""),
        "ttclid": _opt("tt1"),
    },
)
_CONTENTS = _opt(
    (),
    (Content("SKU-1", 2, 9.5), Content("SKU-2")),
    tuple(Content(f"i{i}") for i in range(201)),
    (Content("i" * 101, 1),),
)
_CUSTOM = _opt(
    {}, {"size": "m"}, {"_private": 1}, {f"p{i}": i for i in range(30)}, {"x": "v" * 101}
)


@st.composite
def events(draw: st.DrawFn) -> Event:
    user = User(
        hashed=draw(st.dictionaries(_opt("meta", "tiktok", "reddit", "google"), _HASHED)),
        ip=draw(_opt(None, "203.0.113.7", "")),
        user_agent=draw(_opt(None, "UA/1", "")),
        visitor_id=draw(_opt(None, "v1")),
        fbc=draw(_opt(None, "fb.1.1700000000000.abc")),
        fbp=draw(_opt(None, "fb.1.1700000000000.123")),
        click_ids=draw(_CLICK_IDS),
    )
    data = Data(
        value=draw(_opt(None, 0.0, 149.85)),
        currency=draw(_opt(None, "", "EUR", "E" * 101)),
        order_id=draw(_opt(None, "o-1", "o" * 101)),
        contents=draw(_CONTENTS),
        search_string=draw(_opt(None, "shoes", "s" * 101)),
        content_name=draw(_opt(None, "c" * 101)),
        custom=draw(_CUSTOM),
    )
    return Event(
        event=draw(st.sampled_from(_NAMES)),
        event_id=draw(_opt("e-1", "e" * 101)),
        time=1_700_000_000,
        source=draw(st.sampled_from(list(Source))),
        url=draw(_opt(None, "", "https://shop.example/x", "https://shop.example/" + "p" * 1200)),
        referrer=draw(_opt(None, "https://r.example/" + "r" * 500)),
        user=user,
        data=data,
        consent=draw(_opt(None, Consent(ad_user_data=False))),
        test_code=draw(_opt(None, None, "TEST1")),
        ldu=draw(st.booleans()),
        channel=draw(_opt("api", "api", "loader", "pixel")),
    )


def stored_of(event: Event) -> Stored:
    return msgspec.json.decode(encode(event), type=Stored)


# -- each proof on its own ------------------------------------------------------------------------


def judged(site: Site, batch: list[Event]) -> tuple[int, int]:
    """Hold every proof of the site to its destination's `validate` on the batch; return how
    many (destination, event) pairs were proven and how many refused."""
    proven = refused = 0
    for name, table in site.config.destinations.items():
        destination = DESTINATIONS[name].factory(table)
        proof = proof_for(destination)
        assert (proof is not None) == (name in PROVEN)
        if proof is None:
            continue
        rules = site.config.routing.get(name, NO_RULES)
        for event in batch:
            record = stored_of(event)
            seen = renamed(decode(encode_stored(record)), rules.event_names)
            problem = destination.validate(seen)
            if proof.proves(record, rules.rename(record.e)):
                proven += 1
                assert problem is None, (name, problem, event)
            elif problem is not None:
                refused += 1
    return proven, refused


@settings(max_examples=300, deadline=None)
@given(sites(), st.lists(events(), min_size=1, max_size=4))
def test_a_proof_holds_only_for_events_the_destination_takes(
    site: Site, batch: list[Event]
) -> None:
    judged(site, batch)


def test_the_proofs_are_not_vacuous() -> None:
    """Generated events are proven often, and refused often (so both roads are compared)."""
    proven = refused = 0

    @settings(max_examples=200, deadline=None, database=None)
    @given(sites(), st.lists(events(), min_size=1, max_size=4))
    def count(site: Site, batch: list[Event]) -> None:
        nonlocal proven, refused
        p, r = judged(site, batch)
        proven, refused = proven + p, refused + r

    count()
    assert proven >= 100
    assert refused >= 100


# -- the whole check ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(sites(), st.lists(events(), min_size=1, max_size=5))
def test_warnings_equal_the_general_road(site: Site, batch: list[Event]) -> None:
    records = [stored_of(e) for e in batch]
    fast = Baseline([site]).stored(site, records, "events")
    general = Baseline([site], proofs=False).stored(site, records, "events")
    assert fast == general


def bench_records(count: int) -> list[Stored]:
    template = benchload.event_template(1_700_000_000, CLICK_IDS)
    parts = template.split(benchload.ID_MARK)
    doc = json.loads(benchload.body_for(parts, "t", 0, count))
    out = []
    for i, item in enumerate(doc["events"]):
        user = item["user"]
        hashed = {r: {"em": (f"{i:064x}",), "ph": (D2,)} for r in ("meta", "tiktok", "reddit")}
        hashed["google"] = hashed["meta"]
        d = item["data"]
        event = Event(
            event=item["event"],
            event_id=item["event_id"],
            time=item["time"],
            source=Source(item["source"]),
            url=item["url"],
            user=User(
                hashed=hashed,
                ip=user["ip"],
                user_agent=user["user_agent"],
                fbp=user["fbp"],
                click_ids=user["click_ids"],
            ),
            data=Data(
                value=d["value"],
                currency=d["currency"],
                order_id=d["order_id"],
                contents=tuple(Content(c["id"], c["quantity"], c["price"]) for c in d["contents"]),
            ),
        )
        out.append(stored_of(event))
    return out


def test_the_bench_events_are_proven_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    site = site_of({n: PLATFORMS[n].settings(n, UNREACHABLE) for n in PLATFORMS})
    records = bench_records(20)
    assert Baseline([site], proofs=False).stored(site, records, "events") == []

    def no_decode(raw: bytes) -> Event:
        raise AssertionError("a proven record was decoded")

    monkeypatch.setattr(baseline_module, "decode", no_decode)
    assert Baseline([site]).stored(site, records, "events") == []


def test_an_unproven_event_still_gets_its_warning() -> None:
    site = site_of({n: PLATFORMS[n].settings(n, UNREACHABLE) for n in ("x", "ga4", "linkedin")})
    (record,) = bench_records(1)
    record.tc = "TEST1"  # X and LinkedIn have no test mode
    record.u.cid = {}  # no GA client id
    warnings = Baseline([site]).stored(site, [record], "events")
    assert warnings == Baseline([site], proofs=False).stored(site, [record], "events")
    assert [w.reason.split(" ", 1)[0] for w in warnings] == ["x", "ga4", "linkedin"]


# -- through the API ------------------------------------------------------------------------------


def _posted(i: int, now: int) -> dict[str, Any]:
    """Event i of a mixed document: mostly like the bench's, every few one a destination would
    refuse (test code, no GA client id, an app event, an unmapped custom name, no e-mail or
    phone, a long order id)."""
    event: dict[str, Any] = json.loads(
        benchload.event_template(now, CLICK_IDS).replace(benchload.ID_MARK, f"m{i}")
    )
    kind = i % 8
    if kind == 1:
        event["test_code"] = "TEST1"
    elif kind == 2:
        del event["user"]["click_ids"]
    elif kind == 3:
        event["source"] = "app"
    elif kind == 4:
        event["event"] = "my_custom"
    elif kind == 5:
        del event["user"]["email"], event["user"]["phone"]
    elif kind == 6:
        event["data"]["order_id"] = "o" * 101
    return event


async def test_the_api_answers_as_with_the_unproven_road(
    aiohttp_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = int(time.time())
    body = json.dumps({"events": [_posted(i, now) for i in range(40)]}).encode()
    decoded = 0
    real_decode = baseline_module.decode

    def counting(raw: bytes) -> Event:
        nonlocal decoded
        decoded += 1
        return real_decode(raw)

    monkeypatch.setattr(baseline_module, "decode", counting)
    answers = []
    for proofs in (True, False):
        destinations = {n: PLATFORMS[n].settings(n, UNREACHABLE) for n in PLATFORMS}
        doc = {
            "storage": {"path": str(tmp_path / f"{proofs}.sqlite")},
            "sites": [{"id": "s", "api_keys": [API_KEY], "destinations": destinations}],
        }
        app = create_app(parse(doc, {}, tmp_path), run_workers=False)
        if not proofs:
            (api,) = {
                route.handler.__self__
                for route in app.router.routes()
                if isinstance(getattr(route.handler, "__self__", None), EventsApi)
            }
            api.baseline = Baseline(app[RUNTIME].sites, proofs=False)
        client = await aiohttp_client(app)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        resp = await client.post("/v1/events", data=body, headers=headers)
        answers.append((resp.status, await resp.read()))
        if proofs:
            assert decoded == 30  # the 10 plain bench events of 40 are proven, never decoded
    assert answers[0] == answers[1]
    status, raw = answers[0]
    assert status == 202
    warned = {w["path"].split(".")[0] for w in json.loads(raw)["warnings"]}
    assert warned == {f"events[{i}]" for i in range(40) if i % 8 not in (0, 7)}
