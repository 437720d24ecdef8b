"""Machinery of the mixed-stream test (tests/integration/test_mixed_stream.py).

The test keeps its platform table; this module keeps what works on any table: the `Platform`
entry type and its routing rule, the 2,000-event stream (backend batches, loader `/e` events and
proxied hits of every vendor, interleaved in rounds), the config of the one site that sends to
every platform, posting the rounds with each event's post time, reading what each sandbox
accepted as (event name, dedup key) pairs with arrival times, and the p95 delivery delay.

A stream event is a `Sent`: its channel (`backend`, `loader`, or the hit vendor), its canonical
event name and its dedup key. A platform's expected arrivals are computed from the stream and its
table entry alone, so a routing rule is data: `Platform.routes` is the whole rule.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from aiohttp import web
from conftest import PIXEL_ID, auth, base_doc
from platform_harness import Client, proxy_upstreams, serve

from gateway.config import Config, parse

BACKEND = "backend"
LOADER = "loader"
HIT_VENDORS = ("meta", "tiktok", "snap", "ga4")
"""Every proxied hit vendor route: Meta /tr, TikTok pixel, Snap /p, GA4 /g/collect."""

SHOP_HOST = "www.shop.test"
TRACK_HOST = "track.shop.test"
ORIGIN = f"https://{SHOP_HOST}"
CLIENT_IP = "203.0.113.7"
UA = "Mozilla/5.0 (mixed stream)"
TIKTOK_PIXEL = "CMIXED0000000000000A"
SNAP_PIXEL = "5bf81ee1-15b1-4dc1-b636-d7dae49b950e"
GA4_ID = "G-MIXED12345"

CLICK_IDS: Mapping[str, str] = {
    "fbclid": "IwAR-mixed-{i}",
    "ttclid": "E.C.P.mixed-{i}",
    "sccid": "sc-mixed-{i}",
    "epik": "dj0yJnU9mixed{i}",
    "rdt_cid": "rdt-mixed-{i}",
    "li_fat_id": "li-mixed-{i}",
    "msclkid": "{i:032x}",
    "gclid": "Cj0KCQ-mixed-{i}",
    "gbraid": "0AAAAA-mixed-{i}",
    "twclid": "tw-mixed-{i}",
    "ga": "{i}.1700000000",
}
"""Each platform's click id (as `user.click_ids` takes it) for backend event number i."""


def click_id_values(keys: Iterable[str], numbers: Iterable[int]) -> set[str]:
    """The CLICK_IDS values under `keys` of the backend events numbered `numbers`."""
    return {CLICK_IDS[k].format(i=i) for k in keys for i in numbers}


class Recorded(Protocol):
    accepted: list[dict[str, Any]]
    requests: int


class Knobs(Protocol):
    down: bool
    latency: float


class Sandbox(Protocol):
    """What the mixed stream needs of a platform sandbox."""

    @property
    def recorder(self) -> Recorded: ...

    @property
    def faults(self) -> Knobs: ...

    def app(self) -> web.Application: ...


@dataclass(frozen=True, slots=True)
class Sent:
    """One event of the stream: how it was posted, its canonical name and its dedup key."""

    channel: str
    name: str
    key: str
    marks: tuple[str, ...] = ()
    """Values only this hit carries (its digest, click id, cookie): for its own platform only."""


@dataclass(frozen=True, slots=True)
class Platform:
    """One row of the platform table: how to run, configure, read and route one destination."""

    name: str
    """Destination name (the key under `[sites.destinations]`)."""
    sandbox: Callable[[], Sandbox]
    settings: Callable[[str], dict[str, Any]]
    """Sandbox base URL → the destination's settings (credentials the sandbox accepts)."""
    received: Callable[[dict[str, Any]], tuple[str, str]]
    """An event the sandbox accepted → (the platform's event name, its dedup key)."""
    names: Mapping[str, str]
    """Canonical event name → the platform's name for it, as `received` reads it."""
    hits_from: frozenset[str] = frozenset()
    """Hit vendors whose proxied hits are mirrored to this platform."""
    click_ids: frozenset[str] = frozenset()
    """Keys of CLICK_IDS that are this platform's own: no other platform may get their values."""
    from_loader: bool = True
    """Whether loader `/e` events reach it (GA4's default `sources` is the backend only)."""
    events: frozenset[str] | None = None
    """Canonical names of the events routed to it (None: every event). When set,
    the destination is configured with the same list as its `events` include list, so the
    gateway's routing and the test's expectation come from this one field."""

    def destination(self, base: str) -> dict[str, Any]:
        """The destination's settings for a sandbox at `base`, with its routing."""
        settings = self.settings(base)
        if self.events is not None:
            settings["events"] = sorted(self.events)
        return settings

    def routes(self, sent: Sent) -> bool:
        """Return whether routing sends `sent` to this platform.

        The event-name list applies to every channel; a hit goes only to the platforms its vendor
        mirrors to.
        """
        if self.events is not None and sent.name not in self.events:
            return False
        if sent.channel == LOADER:
            return self.from_loader
        return sent.channel == BACKEND or sent.channel in self.hits_from

    def expected(self, stream: Iterable[Sent]) -> set[tuple[str, str]]:
        """The (platform event name, dedup key) pairs it must receive from `stream`, once each."""
        return {(self.names[s.name], s.key) for s in stream if self.routes(s)}


# --- the stream -------------------------------------------------------------------------------


@dataclass(slots=True)
class Request:
    """One HTTP request of the stream and the events it carries."""

    method: str
    path: str
    headers: dict[str, str]
    sent: list[Sent]
    json_body: Any = None
    data: str | None = None


@dataclass(slots=True)
class Stream:
    """The whole stream: rounds of requests, posted in order."""

    rounds: list[list[Request]] = field(default_factory=list)

    @property
    def events(self) -> list[Sent]:
        return [s for r in self.rounds for req in r for s in req.sent]


BACKEND_NAMES = ("Purchase", "Lead", "AddToCart")
LOADER_NAMES = ("AddToCart", "Lead", "Purchase")
HIT_NAMES: Mapping[str, tuple[tuple[str, str], ...]] = {
    "meta": (("Purchase", "Purchase"), ("Lead", "Lead"), ("AddToCart", "AddToCart")),
    "tiktok": (("CompletePayment", "Purchase"), ("SubmitForm", "Lead"), ("AddToCart", "AddToCart")),
    "snap": (
        ("PURCHASE", "Purchase"),
        ("SIGN_UP", "CompleteRegistration"),
        ("ADD_CART", "AddToCart"),
    ),
    "ga4": (("purchase", "Purchase"), ("generate_lead", "Lead"), ("add_to_cart", "AddToCart")),
}
"""Per hit vendor: (the vendor's own event name in the hit, its canonical name)."""

PER_ROUND: Mapping[str, int] = {
    BACKEND: 50,
    LOADER: 15,
    "meta": 10,
    "tiktok": 10,
    "snap": 10,
    "ga4": 5,
}
"""Events per round by channel (100 a round; 20 rounds make 2,000)."""


def backend_event(i: int, name: str) -> dict[str, Any]:
    """Backend event number i: identifiers, every platform's click id, a value when it needs one."""
    click_ids = {k: v.format(i=i) for k, v in CLICK_IDS.items()}
    event: dict[str, Any] = {
        "event": name,
        "event_id": f"be-{i}",
        "url": f"{ORIGIN}/p/{i}",
        "user": {
            "email": f"Buyer.{i}@Example.com",
            "phone": f"+1 650 555 {i % 10000:04d}",
            "ip": CLIENT_IP,
            "user_agent": UA,
            "click_ids": click_ids,
        },
        "data": {"value": 10 + i % 90, "currency": "EUR"},
    }
    if name == "Purchase":
        event["data"]["order_id"] = f"be-{i}"
    return event


def loader_request(i: int, name: str) -> Request:
    """A loader `/e` event from a visitor who gave an e-mail, with its own event id."""
    body = {
        "event": name,
        "event_id": f"ld-{i}",
        "url": f"{ORIGIN}/l/{i}?ttclid=E.C.P.ld-{i}&ScCid=sc-ld-{i}&rdt_cid=rdt-ld-{i}",
        "user": {"email": f"visitor.{i}@example.com", "phone": f"+1 415 555 {i % 10000:04d}"},
        "data": {"value": 5 + i % 50, "currency": "EUR"},
    }
    headers = {
        "Host": TRACK_HOST,
        "Origin": ORIGIN,
        "Content-Type": "text/plain",
        "User-Agent": UA,
        "X-Forwarded-For": CLIENT_IP,
    }
    return Request("POST", "/e", headers, [Sent(LOADER, name, f"ld-{i}")], data=json.dumps(body))


def _hit_headers(content_type: str | None = None, cookie: str | None = None) -> dict[str, str]:
    headers = {"Host": SHOP_HOST, "User-Agent": UA, "X-Forwarded-For": CLIENT_IP}
    if content_type:
        headers["Content-Type"] = content_type
    if cookie:
        headers["Cookie"] = cookie
    return headers


def _digest(i: int, vendor: str) -> str:
    """A pixel-side e-mail digest (64 hex), distinct per vendor and hit."""
    return hashlib.sha256(f"hit.{vendor}.{i}@example.com".encode()).hexdigest()


def _shuffle_key(req: Request) -> str:
    return hashlib.sha256(req.sent[0].key.encode()).hexdigest()


def hit_request(vendor: str, i: int) -> Request:
    """Proxied hit number i of `vendor`; its dedup key is `<vendor>-hit-<i>`."""
    names = HIT_NAMES[vendor]
    own, canonical = names[i % len(names)]
    key = f"{vendor}-hit-{i}"
    email = _digest(i, vendor)
    marks = {
        "meta": (email, f"fb.1.1700000000000.{1000 + i}"),
        "tiktok": (email, f"E.C.P.hit-{i}", f"ttp-mixed-cookie-{i:08d}"),
        "snap": (email, f"sc-hit-{i}", f"8c2e5a0b-3d4f-4a6b-9c8d-{i:012x}"),
        "ga4": (f"Cj0KCQ-ga4hit-{i}",),  # the gclid of its _gcl_aw cookie: Google Ads' own
    }[vendor]
    sent = [Sent(vendor, canonical, key, marks)]
    if vendor == "meta":
        query = urlencode(
            {
                "id": PIXEL_ID,
                "ev": own,
                "eid": key,
                "dl": f"{ORIGIN}/m/{i}",
                "cd[value]": str(7 + i % 30),
                "cd[currency]": "EUR",
                "ud[em]": email,
                "fbp": f"fb.1.1700000000000.{1000 + i}",
                "rqm": "GET",
            },
            quote_via=quote,
            safe="[]",
        )
        return Request("GET", f"/p/m/tr/?{query}", _hit_headers(), sent)
    if vendor == "tiktok":
        body = {
            "event": own,
            "event_id": key,
            "context": {
                "pixel": {"code": TIKTOK_PIXEL},
                "page": {"url": f"{ORIGIN}/t/{i}"},
                "ad": {"callback": f"E.C.P.hit-{i}"},
                "user": {"email": email},
            },
            "properties": {"value": 3 + i % 20, "currency": "EUR"},
        }
        headers = _hit_headers("application/json", f"_ttp=ttp-mixed-cookie-{i:08d}")
        return Request("POST", "/p/t/api/v2/pixel", headers, sent, data=json.dumps(body))
    if vendor == "snap":
        form = urlencode(
            {
                "pid": SNAP_PIXEL,
                "ev": own,
                "client_dedup_id": key,
                "e_pr": str(4 + i % 20),
                "e_cur": "EUR",
                "pl": f"{ORIGIN}/s/{i}?ScCid=sc-hit-{i}",
                "u_hem": email,
            }
        )
        headers = _hit_headers(
            "application/x-www-form-urlencoded", f"_scid=8c2e5a0b-3d4f-4a6b-9c8d-{i:012x}"
        )
        return Request("POST", "/p/s/p", headers, sent, data=form)
    if vendor == "ga4":
        query = urlencode(
            {
                "v": "2",
                "tid": GA4_ID,
                "cid": f"{1000 + i}.1700000000",
                "dl": f"{ORIGIN}/g/{i}",
                "gcs": "G111",
                "en": own,
                "ep.event_id": key,  # the tag's own event id parameter; purchases add theirs
                "epn.value": str(6 + i % 20),
                "cu": "EUR",
            }
            | ({"ep.transaction_id": key} if own == "purchase" else {})
        )
        cookie = f"_ga=GA1.1.{1000 + i}.1700000000; _gcl_aw=GCL.1700000000.Cj0KCQ-ga4hit-{i}"
        return Request("GET", f"/g/collect?{query}", _hit_headers(cookie=cookie), sent)
    raise AssertionError(f"no hit format for {vendor}")


def build_stream(rounds: int = 20) -> Stream:
    """The mixed stream: `rounds` rounds of PER_ROUND events, channels interleaved."""
    stream = Stream()
    counters = Counter[str]()
    backend_chunk = PER_ROUND[BACKEND]
    for _ in range(rounds):
        requests: list[Request] = []
        start = counters[BACKEND]
        batch = [
            backend_event(i, BACKEND_NAMES[i % len(BACKEND_NAMES)])
            for i in range(start, start + backend_chunk)
        ]
        counters[BACKEND] += backend_chunk
        sent = [Sent(BACKEND, e["event"], e["event_id"]) for e in batch]
        requests.append(Request("POST", "/v1/events", auth(), sent, json_body={"events": batch}))
        others: list[Request] = []
        for _ in range(PER_ROUND[LOADER]):
            i = counters[LOADER]
            counters[LOADER] += 1
            others.append(loader_request(i, LOADER_NAMES[i % len(LOADER_NAMES)]))
        for vendor in HIT_VENDORS:
            for _ in range(PER_ROUND[vendor]):
                others.append(hit_request(vendor, counters[vendor]))
                counters[vendor] += 1
        # Interleave: the vendors' hits and loader events alternate, the batch leads the round.
        others.sort(key=_shuffle_key)
        stream.rounds.append(requests + others)
    return stream


# --- the site ---------------------------------------------------------------------------------


def site_config(tmp_path: Path, bases: Mapping[str, tuple[Platform, str]], cdn_url: str) -> Config:
    """One site sending to every platform in `bases` (name → (row, sandbox base URL))."""
    doc = copy.deepcopy(base_doc(tmp_path))
    site = doc["sites"][0]
    site["destinations"] = {name: row.destination(base) for name, (row, base) in bases.items()}
    site["hosts"] = [SHOP_HOST, TRACK_HOST]
    site["allowed_origins"] = [ORIGIN]
    site["proxy"] = {"enabled": True, **proxy_upstreams(cdn_url)}
    doc["server"]["trusted_proxies"] = ["127.0.0.1/32"]
    # Idle workers poll every 0.1 s (not the suite's 0.01 s): batches grow, and the run needs
    # a third less CPU on a busy 2-core machine; delays stay far below the p95 floor.
    doc["delivery"]["poll_interval"] = 0.1
    return parse(doc, {}, tmp_path)


@asynccontextmanager
async def sandboxes(table: Sequence[Platform]) -> AsyncIterator[dict[str, tuple[Sandbox, str]]]:
    """Serve a fresh sandbox of every row; yield name → (sandbox, base URL)."""
    async with AsyncExitStack() as stack:
        out: dict[str, tuple[Sandbox, str]] = {}
        for row in table:
            sandbox = row.sandbox()
            out[row.name] = (sandbox, await stack.enter_async_context(serve(sandbox.app())))
        yield out


# --- posting and reading ----------------------------------------------------------------------


async def post_round(client: Client, requests: Sequence[Request], posted: dict[str, float]) -> None:
    """Send one round's requests in order; note each event's post time (wall clock) by key."""
    for req in requests:
        before = time.time()
        if req.method == "GET":
            resp = await client.get(req.path, headers=req.headers)
        elif req.json_body is not None:
            resp = await client.post(req.path, json=req.json_body, headers=req.headers)
        else:
            resp = await client.post(req.path, data=req.data, headers=req.headers)
        text = (await resp.read()).decode(errors="replace")
        assert resp.status in (200, 202, 204), (req.path, resp.status, text[:300])
        if req.json_body is not None:
            body = json.loads(text)
            assert body["rejected"] == [], body["rejected"][:3]
        for sent in req.sent:
            posted[sent.key] = before


def arrivals(row: Platform, sandbox: Sandbox) -> list[tuple[tuple[str, str], float]]:
    """What `sandbox` accepted, as ((platform event name, dedup key), arrival time)."""
    return [(row.received(e), float(e["_received_at"])) for e in sandbox.recorder.accepted]


def received_counts(row: Platform, sandbox: Sandbox) -> Counter[tuple[str, str]]:
    """How often each (platform event name, dedup key) pair reached `sandbox`."""
    return Counter(pair for pair, _ in arrivals(row, sandbox))


_TOKEN = re.compile(r"[A-Za-z0-9._-]+")


def tokens(records: Iterable[dict[str, Any]]) -> set[str]:
    """Every word-like token (ids, digests, click ids, cookie values) anywhere in `records`,
    and the part after the last dot of each (the click id inside Meta's `fb.1.<ms>.<fbclid>`)."""
    found = set(_TOKEN.findall(json.dumps(list(records))))
    return found | {t.rsplit(".", 1)[1] for t in found if "." in t}


def p95(values: Sequence[float]) -> float:
    """The 95th percentile (nearest rank) of `values`; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def delays(row: Platform, sandbox: Sandbox, posted: Mapping[str, float]) -> list[float]:
    """Per accepted event: sandbox arrival time minus the time its request was posted."""
    return [at - posted[key] for (_, key), at in arrivals(row, sandbox)]
