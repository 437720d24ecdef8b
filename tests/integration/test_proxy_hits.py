"""Hit proxy: vendor pixel hits forwarded from the site's host and mirrored through the pipeline."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from conftest import FakeClock, auth, runtime_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

import gateway.web.pipeline as pipeline_module
from gateway.config import PROXY_VENDORS
from gateway.sandbox.cdn import FakeCdn, SeenHit
from gateway.sandbox.meta import MetaSandbox
from gateway.web.fastlane import LANE
from gateway.web.fastlane_server import FastServer
from gateway.web.hitanswers import HitAnswers
from gateway.web.hits import HITS, HitAnswer, HitProxy, HitRequest, decode_query

HOST = "www.shop.test"
UA = "Mozilla/5.0 (hit test)"
EM = "a" * 64
FBP = "fb.1.1700000000000.1234567890"
CLIENT = "203.0.113.7"
COOKIES = (
    f"_fbp={FBP}; _ga=GA1.1.123.456; _ga_ABC123=GS1.1.1; _ttp=abcdefghijklmnopqrst; "
    "_scid=abcdefghijklmnopqrstuvwx; _sgv=whatever; _sgc=gggg; other=1"
)
HIT_UPSTREAMS = ("meta", "tiktok", "snap", "google")


@dataclass
class Harness:
    client: Any
    cdn: FakeCdn
    sandbox: MetaSandbox
    clock: FakeClock

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Host": HOST, "User-Agent": UA, "X-Forwarded-For": CLIENT, **extra}

    async def get(self, path: str, **extra: str) -> aiohttp.ClientResponse:
        url = URL(path, encoded=True)  # the query goes out exactly as written
        return await self.client.get(url, headers=self.headers(**extra))

    async def post(self, path: str, data: Any, **extra: str) -> aiohttp.ClientResponse:
        url = URL(path, encoded=True)
        return await self.client.post(url, data=data, headers=self.headers(**extra))

    @property
    def hits(self) -> HitProxy:
        proxy: HitProxy = self.client.app[HITS]
        return proxy

    async def delivered(self) -> list[dict[str, Any]]:
        self.clock.advance(10)
        await runtime_of(self.client).workers["shop:meta"].drain()
        return list(self.sandbox.recorder.accepted)


Start = Callable[..., Awaitable[Harness]]


@pytest.fixture
def start(make_config: Any, gateway: Any, cdn: tuple[FakeCdn, str], meta_sandbox: Any) -> Start:
    async def factory(
        *, hits_base: str | None = None, proxy: dict[str, Any] | None = None, **config: Any
    ) -> Harness:
        fake, url = cdn
        sandbox, api_base = meta_sandbox
        upstreams = {f"{v}_upstream": url for v in PROXY_VENDORS}
        upstreams |= {f"{v}_hits_upstream": hits_base or url for v in HIT_UPSTREAMS}
        site = {"hosts": [HOST], "proxy": {"enabled": True, **upstreams, **(proxy or {})}}
        # The sandbox checks event times against the real clock.
        clock = FakeClock(time.time() - 120)
        cfg = make_config(
            api_base,
            site=site,
            server={"trusted_proxies": ["127.0.0.1/32"]},
            **config,
        )
        client = await gateway(cfg, clock=clock, run_workers=False)
        return Harness(client, fake, sandbox, clock)

    return factory


def meta_query(**extra: str) -> str:
    params = {
        "id": "1234567890",
        "ev": "Purchase",
        "eid": "order-42",
        "dl": "https://www.shop.test/thanks",
        "cd[value]": "25.5",
        "cd[currency]": "EUR",
        "ud[em]": EM,
        "fbp": FBP,
        "rqm": "GET",
        **extra,
    }
    return urlencode(params, quote_via=quote, safe="[]")


def assert_forwarded(seen: SeenHit, cookies: str) -> None:
    assert seen.headers["X-Forwarded-For"] == CLIENT
    assert seen.headers["User-Agent"] == UA
    assert seen.headers.get("Cookie", "") == cookies
    assert "Set-Cookie" not in seen.headers


def assert_meta_purchase(event: dict[str, Any], event_id: str) -> None:
    assert event["event_name"] == "Purchase"
    assert event["event_id"] == event_id
    user = event["user_data"]
    assert user["client_ip_address"] == CLIENT
    assert user["client_user_agent"] == UA


# --- Meta /tr ---------------------------------------------------------------------------------


async def test_meta_get_hit_is_forwarded_raw_and_mirrored_once(start: Start) -> None:
    h = await start()
    query = meta_query()
    resp = await h.get(f"/p/m/tr/?{query}", Cookie=COOKIES)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "image/gif"
    assert "Set-Cookie" not in resp.headers
    assert (await resp.read()).startswith(b"GIF89a")
    [seen] = h.cdn.hits
    assert (seen.method, seen.path, seen.query) == ("GET", "/tr/", query)
    assert_forwarded(seen, f"_fbp={FBP}")
    [event] = await h.delivered()
    assert_meta_purchase(event, "order-42")
    assert event["user_data"]["fbp"] == FBP
    assert event["user_data"]["em"] == EM, "a pixel digest is never hashed again"
    assert event["custom_data"]["value"] == 25.5
    assert event["custom_data"]["currency"] == "EUR"
    assert event["event_source_url"] == "https://www.shop.test/thanks"
    assert h.hits.stats.mirrored == 1


async def test_meta_post_form_hit_is_forwarded_and_mirrored(start: Start) -> None:
    h = await start()
    body = meta_query(eid="order-43", rqm="SB")
    resp = await h.post(
        "/p/m/tr?id=1234567890",
        body,
        **{"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 200
    [seen] = h.cdn.hits
    assert (seen.method, seen.path, seen.query) == ("POST", "/tr/", "id=1234567890")
    assert seen.body == body.encode()
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert_forwarded(seen, "")
    [event] = await h.delivered()
    assert_meta_purchase(event, "order-43")
    assert event["user_data"]["em"] == EM


async def test_meta_fbp_cookie_fills_a_hit_without_fbp(start: Start) -> None:
    h = await start()
    query = meta_query(eid="order-44")
    query = "&".join(p for p in query.split("&") if not p.startswith("fbp="))
    assert (await h.get(f"/p/m/tr?{query}", Cookie=COOKIES)).status == 200
    [event] = await h.delivered()
    assert event["user_data"]["fbp"] == FBP


async def test_privacy_sandbox_trigger_is_not_routed(start: Start) -> None:
    h = await start()
    for path in ("/p/m/privacy_sandbox/pixel/register/trigger/", "/p/m/privacy_sandbox/x"):
        resp = await h.get(f"{path}?{meta_query()}")
        assert resp.status in (400, 404)  # the script routes' answer: not a hit route
    assert h.cdn.hits == []
    assert await h.delivered() == []


async def test_automatic_meta_events_are_forwarded_not_mirrored(start: Start) -> None:
    h = await start()
    resp = await h.get(f"/p/m/tr/?{meta_query(ev='Microdata')}")
    assert resp.status == 200
    assert len(h.cdn.hits) == 1
    assert await h.delivered() == []
    assert h.hits.stats.not_events == 1


async def test_denied_consent_cookie_forwards_but_mirrors_nothing(start: Start) -> None:
    h = await start()
    resp = await h.get(f"/p/m/tr/?{meta_query()}", Cookie=f"_fbp={FBP}; _sgc=dddd")
    assert resp.status == 200
    [seen] = h.cdn.hits
    assert seen.headers["Cookie"] == f"_fbp={FBP}", "our consent cookie stays with us"
    assert await h.delivered() == []
    assert h.hits.stats.consent_dropped == 1


TRACKING_JAR = (
    f"_fbp={FBP}; _fbc=fb.1.1700000000000.AbC-123; _ttp=abcdefghijklmnopqrst; "
    "_scid=abcdefghijklmnopqrstuvwx; _gcl_aw=GCL.1700000000.Cj0KCQ; ttclid=E.C.P.x; "
    "_scclid=snapclick123; _uetmsclkid=_uet0123456789abcdef0123456789abcdef; _sgv=a.b; other=1"
)
TRACKING_NAMES = {
    "_fbp", "_fbc", "_ttp", "_scid", "_gcl_aw", "ttclid", "_scclid", "_uetmsclkid", "_sgv",
}  # fmt: skip


def assert_deletes_tracking_cookies(resp: aiohttp.ClientResponse) -> None:
    lines = resp.headers.getall("Set-Cookie", [])
    assert {line.split("=", 1)[0] for line in lines} == TRACKING_NAMES
    for line in lines:
        attrs = line.split("; ")
        assert attrs[0].endswith("="), line
        assert "Max-Age=0" in attrs
        assert "Path=/" in attrs
        assert "Domain=shop.test" in attrs, "deleted on the domain the collect endpoint set it on"


async def test_an_explicit_denial_on_a_hit_deletes_every_tracking_cookie(start: Start) -> None:
    h = await start()
    jar = TRACKING_JAR + "; _sgc=dddd"
    resp = await h.get(f"/p/m/tr/?{meta_query()}", Cookie=jar)  # the fast lane's road
    assert resp.status == 200
    assert_deletes_tracking_cookies(resp)
    assert (await resp.read()).startswith(b"GIF89a")
    # aiohttp's road (a compressed body is never the lane's) answers the same.
    body = gzip.compress(meta_query(eid="order-45", rqm="SB").encode())
    resp = await h.post(
        "/p/m/tr?id=1234567890",
        body,
        Cookie=jar,
        **{"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "gzip"},
    )
    assert resp.status == 200
    assert_deletes_tracking_cookies(resp)
    # The hit's own consent (GA4 gcs=G100) is an explicit denial too.
    query = "v=2&tid=G-ABC123&en=purchase&ep.transaction_id=T-3&epn.value=3&cu=USD&gcs=G100"
    resp = await h.get(f"/g/collect?{query}", Cookie=TRACKING_JAR)
    assert resp.status == 204
    assert_deletes_tracking_cookies(resp)
    assert await h.delivered() == []
    # Without a denial the proxy still sets no cookie, and the next answer's head is clean.
    resp = await h.get(f"/p/m/tr/?{meta_query(eid='order-46')}", Cookie=TRACKING_JAR)
    assert "Set-Cookie" not in resp.headers


async def test_a_gpc_hit_is_counted_consent_denied_never_dead(start: Start) -> None:
    h = await start()
    resp = await h.get(f"/p/m/tr/?{meta_query()}", Cookie=COOKIES, **{"Sec-GPC": "1"})
    assert resp.status == 200
    assert "Set-Cookie" not in resp.headers, "GPC is not an explicit denial of everything"
    assert await h.delivered() == []
    runtime = runtime_of(h.client)
    assert await runtime.store.dead_letters("shop:meta", 10) == []
    assert runtime.pipeline.consent_denied == {"shop:meta": 1}
    assert (h.hits.stats.consent_dropped, h.hits.stats.mirrored) == (1, 0)


# --- GA4, TikTok, Snap --------------------------------------------------------------------------


async def test_ga4_batched_purchase_is_forwarded_unchanged_and_mirrored(start: Start) -> None:
    h = await start(proxy={"mirror_to_all": True})  # only a Meta sandbox here
    query = "v=2&tid=G-ABC123&cid=123.456&dl=https%3A%2F%2Fwww.shop.test%2Fthanks&gcs=G111"
    body = (
        "en=page_view&_et=12\n"
        "en=purchase&ep.transaction_id=T-1001&epn.value=30&cu=USD&pr1=idSKU1~qt1~pr30\n"
    )
    resp = await h.post(
        f"/g/collect?{query}", body, Cookie=COOKIES, **{"Content-Type": "text/plain"}
    )
    assert resp.status == 204
    [seen] = h.cdn.hits
    assert (seen.method, seen.path, seen.query) == ("POST", "/g/collect", query)
    assert seen.body == body.encode()
    assert_forwarded(seen, "_ga=GA1.1.123.456; _ga_ABC123=GS1.1.1")
    events = await h.delivered()
    [purchase] = [e for e in events if e["event_name"] == "Purchase"]
    assert_meta_purchase(purchase, "T-1001")
    assert purchase["custom_data"]["value"] == 30
    assert {e["event_name"] for e in events} == {"PageView", "Purchase"}


async def test_ga4_denied_consent_in_the_hit_mirrors_nothing(start: Start) -> None:
    h = await start()
    query = "v=2&tid=G-ABC123&en=purchase&ep.transaction_id=T-2&epn.value=3&cu=USD&gcs=G100"
    assert (await h.get(f"/g/collect?{query}")).status == 204
    assert len(h.cdn.hits) == 1
    assert await h.delivered() == []
    assert h.hits.stats.consent_dropped == 1


async def test_tiktok_json_hit_is_forwarded_and_mirrored(start: Start) -> None:
    h = await start(proxy={"mirror_to_all": True})  # only a Meta sandbox here
    body = json.dumps({
        "event": "CompletePayment", "event_id": "tt-1", "context": {
            "pixel": {"code": "C4ABCDEF12"}, "page": {"url": "https://www.shop.test/thanks"},
            "user": {"email": EM}},
        "properties": {"value": 12, "currency": "EUR"},
    })  # fmt: skip
    resp = await h.post(
        "/p/t/api/v2/pixel", body, Cookie=COOKIES, **{"Content-Type": "application/json"}
    )
    assert resp.status == 200
    assert await resp.json() == {"code": 0, "message": "OK"}
    [seen] = h.cdn.hits
    assert (seen.path, seen.body) == ("/api/v2/pixel", body.encode())
    assert_forwarded(seen, "_ttp=abcdefghijklmnopqrst")
    [event] = await h.delivered()
    assert_meta_purchase(event, "tt-1")
    assert event["user_data"]["em"] == EM


async def test_snap_hit_is_forwarded_with_only_snap_cookies(start: Start) -> None:
    h = await start(proxy={"mirror_to_all": True})  # only a Meta sandbox here
    body = (
        "pid=abc-123&ev=PURCHASE&client_dedup_id=sn-1&e_pr=9&e_cur=EUR&pl=https%3A%2F%2Fx.test%2F"
    )
    resp = await h.post(
        "/p/s/p", body, Cookie=COOKIES, **{"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert resp.status == 200
    [seen] = h.cdn.hits
    assert_forwarded(seen, "_scid=abcdefghijklmnopqrstuvwx")
    [event] = await h.delivered()
    assert_meta_purchase(event, "sn-1")


# --- failures -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "content_type"),
    [
        ("/p/m/tr?ev=%FF%00&id=" + "x" * 300, b"\xff\xfe\x00garbage", "text/plain"),
        ("/p/t/api/v2/pixel", b"{not json", "application/json"),
        ("/p/t/api/v2/pixel", b'{"batch": [1, null, {"event": []}]}', "application/json"),
        ("/p/s/p", b"\x00\x01", "application/json"),
        ("/g/collect?v=2", b"en=%ZZ&&&\n\n=\xff", "text/plain"),
    ],
)
async def test_garbage_is_forwarded_and_never_mirrored(
    start: Start, path: str, body: bytes, content_type: str
) -> None:
    h = await start()
    resp = await h.post(path, body, **{"Content-Type": content_type})
    assert resp.status in (200, 204)
    [seen] = h.cdn.hits
    assert seen.body == body
    assert await h.delivered() == []
    assert h.hits.stats.mirror_errors == 0


async def test_a_mirror_crash_never_breaks_the_pass_through(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await start()

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("parser bug")

    monkeypatch.setattr("gateway.destinations.meta.hits.parse_meta_tr", boom)
    monkeypatch.setattr("gateway.web.hitreader.meta_hit", boom)  # the fast road (meta.hitwire)
    resp = await h.get(f"/p/m/tr/?{meta_query()}")
    assert resp.status == 200
    assert len(h.cdn.hits) == 1
    assert h.hits.stats.mirror_errors == 1


async def test_upstream_down_is_502_but_the_mirror_is_stored(start: Start) -> None:
    h = await start(hits_base="http://127.0.0.1:9")
    resp = await h.get(f"/p/m/tr/?{meta_query()}")
    assert resp.status == 502
    [event] = await h.delivered()
    assert_meta_purchase(event, "order-42")


async def test_upstream_status_passes_through_without_set_cookie(start: Start) -> None:
    h = await start()
    h.cdn.faults.update({"status": 503, "set_cookie": True})
    resp = await h.get(f"/p/m/tr/?{meta_query()}")
    assert resp.status == 503
    assert "Set-Cookie" not in resp.headers
    assert resp.headers["Cache-Control"] == "no-store"


async def test_size_limits(start: Start) -> None:
    h = await start()
    resp = await h.get("/p/m/tr?id=1&x=" + "a" * 8100)
    assert resp.status == 414
    resp = await h.get("/p/m/tr?id=1&x=" + "a" * 20_000)
    assert resp.status in (400, 414)  # aiohttp refuses request lines over 8190 bytes itself
    resp = await h.post("/p/m/tr", b"a" * (64 * 1024 + 1))
    assert resp.status == 413
    resp = await h.post("/p/m/tr", b"a" * (64 * 1024))
    assert resp.status == 200
    assert len(h.cdn.hits) == 1


@pytest.mark.parametrize(
    ("host", "target", "status"),
    [
        ("evil.test", "/p/m/tr?ev=PageView", 404),
        ("evil.test", "/g/collect?en=purchase", 404),
        (HOST, "/p/m/%74r?ev=PageView", 400),
        (HOST, "/p/m/x/../tr?ev=PageView", 400),
        (HOST, "/p/m/..%2ftr?ev=PageView", 400),
        (HOST, "/p/t/api/v2/pixel", 404),  # TikTok hits are POSTs; GET is a script path
        (HOST, "/p/x/tr", 404),
    ],
)
async def test_host_games_and_path_tricks_are_refused(
    start: Start, host: str, target: str, status: int
) -> None:
    h = await start()
    reader, writer = await asyncio.open_connection(h.client.host, h.client.port)
    request = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    writer.write(request.encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert int(data.split(b" ", 2)[1]) == status
    assert h.cdn.hits == []


async def test_admission_by_host_is_the_same_every_time(start: Start) -> None:
    """Each (route, path, Host) is looked up once and remembered: a repeat gets the same
    answer, and so does each spelling of a known host."""
    h = await start()
    route, path = h.hits.lane_route("GET", "/p/m/tr") or (None, "")
    assert route is not None
    hosts = [HOST, HOST.upper(), f"{HOST}:8080", f"{HOST}.", "evil.test", "", "[::1]:80"]
    for _ in range(3):
        admitted = [h.hits._admit(route, path, path, "ev=PageView", host) for host in hosts]
        assert [isinstance(a, HitAnswer) for a in admitted] == [False] * 4 + [True] * 3
        assert {id(a) for a in admitted[:4]} == {id(h.hits.collect.by_host[HOST])}
        assert all(a.status == 404 for a in admitted[4:] if isinstance(a, HitAnswer))
    refused = h.hits._admit(route, path, path, "ev=Page View", HOST)  # the query is still read
    assert isinstance(refused, HitAnswer)
    assert refused.status == 400


async def test_vendor_not_enabled_is_404(start: Start) -> None:
    h = await start(proxy={"vendors": ["meta"]})
    assert (await h.get("/g/collect?v=2&en=page_view")).status == 404
    assert (await h.post("/p/t/api/v2/pixel", b"{}")).status == 404
    assert (await h.get(f"/p/m/tr?{meta_query()}")).status == 200
    assert [s.path for s in h.cdn.hits] == ["/tr/"]


# --- merge with the backend copy ----------------------------------------------------------------


async def test_hit_and_backend_copy_of_one_order_deliver_once(start: Start) -> None:
    h = await start(delivery={"merge_seconds": 5.0})
    resp = await h.get(f"/p/m/tr/?{meta_query(eid='order-7')}")
    assert resp.status == 200
    h.clock.advance(1)
    backend = {"events": [{
        "event": "Purchase", "source": "website", "url": "https://www.shop.test/o/7",
        "user": {"email": "buyer@example.com", "ip": "10.0.0.1"},
        "data": {"value": 40, "currency": "USD", "order_id": "order-7"},
    }]}  # fmt: skip
    resp = await h.client.post("/v1/events", json=backend, headers=auth())
    assert resp.status == 202, await resp.text()
    [event] = await h.delivered()
    assert event["event_id"] == "order-7"
    assert event["user_data"]["client_ip_address"] == CLIENT, "the browser's address wins"
    assert event["user_data"]["fbp"] == FBP
    assert event["custom_data"]["value"] == 40, "the backend's value wins"


async def test_hits_mirror_only_to_their_own_vendor_by_default(start: Start) -> None:
    h = await start()
    body = json.dumps({
        "event": "CompletePayment", "event_id": "tt-own", "context": {
            "page": {"url": "https://www.shop.test/thanks"}, "user": {"email": EM}},
        "properties": {"value": 12, "currency": "EUR"},
    })  # fmt: skip
    resp = await h.post("/p/t/api/v2/pixel", body, **{"Content-Type": "application/json"})
    assert resp.status == 200
    assert len(h.cdn.hits) == 1
    assert await h.delivered() == [], "a TikTok hit must not reach the Meta destination"


HIT_PATHS = ["/p/m/tr", "/p/t/api/v2/pixel", "/p/s/p", "/g/collect"]
query_text = st.lists(st.tuples(st.text(max_size=12), st.text(max_size=40)), max_size=12).map(
    lambda pairs: urlencode(pairs)
)
raw_query = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=200)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=st.sampled_from(HIT_PATHS), query=query_text | raw_query, body=st.binary(max_size=600),
       method=st.sampled_from(["GET", "POST"]))  # fmt: skip
async def test_arbitrary_hits_never_raise_out_of_the_handler(
    start: Start, path: str, query: str, body: bytes, method: str
) -> None:
    h = await start(proxy={"mirror_to_all": True})
    target = f"{path}?{quote(query, safe='=&%')}" if query else path
    if method == "GET":
        resp = await h.get(target)
    else:
        resp = await h.post(target, body)
    assert resp.status < 500 or resp.status == 502  # 502 = upstream refused, never a crash
    assert h.hits.stats.mirror_errors == 0


# --- mirror batches (one per loop turn) ----------------------------------------------------------


def lane_hit(query: str) -> HitRequest:
    headers = {"host": HOST, "user-agent": UA, "x-forwarded-for": CLIENT}
    return HitRequest("GET", query, decode_query(query), HOST, headers, "127.0.0.1", (CLIENT,), b"")


async def answer_all(h: Harness, queries: list[str]) -> list[int]:
    """Answer the hits concurrently: their mirrors are queued in one loop turn."""
    proxy = h.hits
    found = proxy.lane_route("GET", "/p/m/tr")
    assert found is not None
    site = proxy.collect.by_host[HOST]
    answers = await asyncio.gather(*(proxy.answer(found[0], site, lane_hit(q)) for q in queries))
    return [a.status for a in answers]


def spy_appends(h: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of every store append the gateway makes from now on."""
    store = runtime_of(h.client).store
    appended: list[int] = []
    append = store.append

    async def spy(events: Any, now: float) -> Any:
        appended.append(len(events))
        return await append(events, now)

    monkeypatch.setattr(store, "append", spy)
    return appended


async def test_the_hits_of_one_loop_turn_are_committed_with_one_append(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await start()
    appended = spy_appends(h, monkeypatch)
    statuses = await answer_all(h, [meta_query(eid=f"turn-{i}") for i in range(5)])
    assert statuses == [200] * 5
    assert appended == [5]
    assert h.hits.stats.batches == 1
    assert h.hits.stats.mirrored == 5
    assert sorted(e["event_id"] for e in await h.delivered()) == [f"turn-{i}" for i in range(5)]


async def test_one_bad_event_does_not_lose_the_other_mirrors_of_its_turn(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await start()
    encode = pipeline_module.encode

    def picky(event: Any) -> bytes:
        if event.event_id == "poison":
            raise ValueError("cannot encode")
        return encode(event)

    monkeypatch.setattr(pipeline_module, "encode", picky)
    queries = [meta_query(eid="good-1"), meta_query(eid="poison"), meta_query(eid="good-2")]
    assert await answer_all(h, queries) == [200, 200, 200]
    assert h.hits.stats.mirror_errors == 1
    assert h.hits.stats.mirrored == 2
    assert sorted(e["event_id"] for e in await h.delivered()) == ["good-1", "good-2"]


async def test_a_failing_store_still_answers_every_hit(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await start()

    async def broken(events: Any, now: float) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(runtime_of(h.client).store, "append", broken)
    assert await answer_all(h, [meta_query(eid="a"), meta_query(eid="b")]) == [200, 200]
    assert h.hits.stats.mirror_errors == 2
    assert h.hits.stats.mirrored == 0
    resp = await h.get(f"/p/m/tr/?{meta_query(eid='c')}")  # the lane's road too
    assert resp.status == 200
    assert h.hits.stats.mirror_errors == 3


async def test_the_answer_waits_for_the_durable_commit_of_its_mirror(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await start()
    store = runtime_of(h.client).store
    gate = asyncio.Event()
    committed: list[str] = []
    append = store.append

    async def slow(events: Any, now: float) -> Any:
        await gate.wait()
        results = await append(events, now)
        committed.extend(e.event_id for e in events)
        return results

    resp = await h.get(f"/p/m/tr/?{meta_query(eid='warm')}")  # opens a kept-alive upstream
    assert resp.status == 200
    monkeypatch.setattr(store, "append", slow)
    answer = asyncio.ensure_future(h.get(f"/p/m/tr/?{meta_query(eid='slow-1')}"))
    try:
        for _ in range(200):  # the upstream answers meanwhile; the browser's answer must wait
            if len(h.cdn.hits) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(h.cdn.hits) == 2
        await asyncio.sleep(0.1)
        assert not answer.done()
        assert committed == []
    finally:
        gate.set()
    resp = await answer
    assert resp.status == 200
    assert committed == ["slow-1"]


async def test_under_load_a_batch_waits_for_the_hits_of_the_next_turns(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await start()
    appended = spy_appends(h, monkeypatch)
    await answer_all(h, [meta_query(eid=f"group-{i}") for i in range(3)])  # a group: under load
    proxy = h.hits
    found = proxy.lane_route("GET", "/p/m/tr")
    assert found is not None
    site = proxy.collect.by_host[HOST]
    first = asyncio.ensure_future(proxy.answer(found[0], site, lane_hit(meta_query(eid="late-1"))))
    # The second hit runs in the turn in which the first one's batch starts (and, the last
    # batch being a group, waits): it joins that batch, as hits of the next poll do.
    await asyncio.sleep(0)
    second = asyncio.ensure_future(proxy.answer(found[0], site, lane_hit(meta_query(eid="late-2"))))
    assert [a.status for a in await asyncio.gather(first, second)] == [200, 200]
    assert appended == [3, 2]
    assert proxy.stats.batches == 2


async def test_a_lane_hit_whose_upstream_answers_after_the_commit_is_answered_then(
    start: Start,
) -> None:
    h = await start()
    assert (await h.get(f"/p/m/tr/?{meta_query(eid='warm-up')}")).status == 200
    lane = h.client.app[LANE]
    h.cdn.faults.latency = 0.2  # the mirror is committed long before the upstream answers
    loop = asyncio.get_running_loop()
    begin = loop.time()
    resp = await h.get(f"/p/m/tr/?{meta_query(eid='late-upstream')}")
    assert resp.status == 200
    assert loop.time() - begin >= 0.2
    assert lane.fast == 2
    assert sorted(e["event_id"] for e in await h.delivered()) == ["late-upstream", "warm-up"]


async def test_a_lane_hit_whose_answer_fails_is_a_500_and_the_connection_goes_on(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await start()
    calls = 0
    answer_from = HitAnswers.answer_from

    def flaky(self: HitAnswers, result: Any, route: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bug")
        return answer_from(self, result, route)

    monkeypatch.setattr(HitAnswers, "answer_from", flaky)
    first = await h.get(f"/p/m/tr/?{meta_query(eid='bug-1')}")
    assert first.status == 500
    assert await first.json() == {"error": "internal", "message": "internal error"}
    second = await h.get(f"/p/m/tr/?{meta_query(eid='bug-2')}")
    assert second.status == 200
    assert h.hits.stats.mirrored == 2, "both mirrors were committed before the answers"


async def test_shutdown_waits_for_the_lane_hits_in_flight(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await start()
    assert (await h.get(f"/p/m/tr/?{meta_query(eid='warm')}")).status == 200
    server = h.client.server.runner.server
    assert isinstance(server, FastServer)
    store = runtime_of(h.client).store
    gate = asyncio.Event()
    append = store.append

    async def slow(events: Any, now: float) -> Any:
        await gate.wait()
        return await append(events, now)

    monkeypatch.setattr(store, "append", slow)
    answer = asyncio.ensure_future(h.get(f"/p/m/tr/?{meta_query(eid='in-flight')}"))
    try:
        for _ in range(200):
            if server.later:
                break
            await asyncio.sleep(0.01)
        assert server.later == 1, "the hit's answer is in flight (a Later)"
        shutdown = asyncio.ensure_future(server.shutdown(5.0))
        await asyncio.sleep(0.1)
        assert not shutdown.done(), "shutdown waits for the answer in flight"
    finally:
        gate.set()
    resp = await answer
    assert resp.status == 200
    await asyncio.wait_for(shutdown, 5.0)
    assert server.later == 0
    assert h.hits.stats.mirrored == 2
