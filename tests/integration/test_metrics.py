"""GET /metrics: exact figures after a scripted traffic mix through the real app.

Backend batches (with a refused item, a consent-denied event and a duplicate), loader hits (one
under GPC, one refused), proxied Meta pixel hits (one under GPC, one automatic event) and a Meta
sandbox that rejects one order and answers one request 429; every figure is read back through
prometheus_client's own text parser.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from conftest import (
    ADMIN_TOKEN,
    API_KEY,
    PLANTED,
    PLANTED_EMAIL,
    PLANTED_PHONE,
    FakeClock,
    auth,
    base_doc,
    runtime_of,
)
from platform_harness import drain, platform_config, proxy_upstreams, purchase, sandbox_fixture
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from gateway.config import PROXY_VENDORS
from gateway.config import parse as parse_config
from gateway.core.event import STANDARD_EVENTS
from gateway.core.tally import IDENTIFIERS, LATENCY_BUCKETS
from gateway.sandbox.cdn import FakeCdn
from gateway.sandbox.meta import MetaSandbox
from gateway.sandbox.tiktok import TikTokSandbox
from gateway.store.availability import StoreUnavailableError
from gateway.store.base import DeadReason

HOST = "www.shop.test"
ORIGIN = f"https://{HOST}"
UA = "Mozilla/5.0 (metrics test)"
EM = "b" * 64

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape by (sample name, sorted labels), via prometheus_client."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series is absent (a counter never incremented)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and all((k, val) in ls for k, val in labels.items())
    )


@dataclass
class Shop:
    client: Any
    sandbox: MetaSandbox
    cdn: FakeCdn
    clock: FakeClock

    async def scrape(self) -> tuple[str, Samples]:
        resp = await self.client.get("/metrics", headers=auth(ADMIN_TOKEN))
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
        return text, parse(text)

    async def backend(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        resp = await self.client.post("/v1/events", json={"events": events}, headers=auth())
        body: dict[str, Any] = await resp.json()
        assert resp.status == 202, body
        return body

    async def loader(self, doc: Mapping[str, Any], **headers: str) -> int:
        resp = await self.client.post(
            "/e",
            data=json.dumps(doc),
            headers={
                "Host": HOST,
                "Origin": ORIGIN,
                "Content-Type": "text/plain",
                "User-Agent": UA,
                **headers,
            },
        )
        return resp.status

    async def hit(self, *, gpc: bool = False, **params: str) -> int:
        query = urlencode(
            {
                "id": "1234567890",
                "dl": f"{ORIGIN}/thanks",
                "cd[value]": "25.5",
                "cd[currency]": "EUR",
                "ud[em]": EM,
                "rqm": "GET",
                **params,
            },
            quote_via=quote,
            safe="[]",
        )
        headers = {"Host": HOST, "User-Agent": UA, "X-Forwarded-For": "203.0.113.9"}
        if gpc:
            headers["Sec-GPC"] = "1"
        url = URL(f"/p/m/tr/?{query}", encoded=True)
        resp = await self.client.get(url, headers=headers)
        return resp.status

    async def drain(self) -> None:
        worker = runtime_of(self.client).workers["shop:meta"]
        for _ in range(20):
            if await worker.drain() == 0:
                break


@pytest.fixture
async def shop(make_config: Any, gateway: Any, meta_sandbox: Any, cdn: tuple[FakeCdn, str]) -> Shop:
    sandbox, api_base = meta_sandbox
    fake, url = cdn
    upstreams = {f"{v}_upstream": url for v in PROXY_VENDORS}
    site = {
        "hosts": [HOST],
        "allowed_origins": [ORIGIN],
        "proxy": {"enabled": True, **upstreams, "meta_hits_upstream": url},
    }
    clock = FakeClock(float(int(time.time()) - 120))  # the sandbox checks times on real time
    config = make_config(api_base, site=site, server={"trusted_proxies": ["127.0.0.1/32"]})
    client = await gateway(config, clock=clock, run_workers=False)
    return Shop(client, sandbox, fake, clock)


def lead(event_id: str) -> dict[str, Any]:
    user = {"email": PLANTED_EMAIL, "phone": PLANTED_PHONE, "ip": "203.0.113.7", "user_agent": UA}
    return {"event": "Lead", "event_id": event_id, "url": f"{ORIGIN}/form", "user": user}


DENIED = {"ad_storage": False, "analytics_storage": False, "ad_user_data": False,
          "ad_personalization": False}  # fmt: skip


async def play(shop: Shop) -> None:
    """The scripted mix (module docstring); nothing delivered yet."""
    custom = {**lead("custom-1"), "event": "GiftWrapChosen"}
    no_value = purchase(5)
    del no_value["data"]["value"]
    first = await shop.backend(
        [
            purchase(1),
            purchase(2),
            purchase(3),
            lead("lead-1"),
            custom,
            no_value,
            purchase(4, consent=DENIED),
        ]
    )
    assert (first["accepted"], len(first["rejected"])) == (6, 1)
    again = await shop.backend([purchase(1)])
    assert again["deduplicated"] == 1
    assert await shop.loader({"event": "PageView", "url": f"{ORIGIN}/a"}) == 204
    assert await shop.loader({"event": "PageView", "url": f"{ORIGIN}/b"}) == 204
    assert await shop.loader({"event": "PageView", "url": f"{ORIGIN}/c"}, **{"Sec-GPC": "1"}) == 204
    assert await shop.loader({"event": 5}) == 400
    assert await shop.hit(ev="Purchase", eid="order-42") == 200
    assert await shop.hit(ev="Microdata", eid="md-1") == 200  # an automatic event: not mirrored
    assert await shop.hit(ev="Purchase", eid="order-43", gpc=True) == 200


async def test_metrics_after_a_scripted_traffic_mix(shop: Shop) -> None:
    shop.sandbox.faults.reject_event_ids = {"order-3"}
    await play(shop)
    shop.clock.advance(5)
    _, before = await shop.scrape()
    route = {"site": "shop", "destination": "meta"}
    # Received by source: accepted + rejected.
    assert value(before, "signalgate_events_received_total", site="shop", source="backend") == 8
    assert value(before, "signalgate_events_received_total", site="shop", source="loader") == 4
    assert value(before, "signalgate_events_received_total", site="shop", source="hit:meta") == 2
    accepted = "signalgate_events_accepted_total"
    assert value(before, accepted, site="shop", source="backend", event="Purchase") == 5
    assert value(before, accepted, site="shop", source="backend", event="Lead") == 1
    assert value(before, accepted, site="shop", source="backend", event="custom") == 1
    assert value(before, accepted, site="shop", source="loader", event="PageView") == 3
    assert value(before, accepted, site="shop", source="hit:meta", event="Purchase") == 2
    rejected = "signalgate_events_rejected_total"
    assert value(before, rejected, site="shop", source="backend", reason="invalid") == 1
    assert value(before, rejected, site="shop", source="loader", reason="invalid") == 1
    # Into the outbox: per destination and event.
    queued = "signalgate_events_queued_total"
    assert value(before, queued, **route, event="Purchase") == 4  # orders 1, 2, 3 and 42
    assert value(before, queued, **route, event="Lead") == 1
    assert value(before, queued, **route, event="custom") == 1
    assert value(before, queued, **route, event="PageView") == 2
    assert value(before, "signalgate_events_deduplicated_total", **route, event="Purchase") == 1
    # Order 4 (stated denial), the GPC page view and the GPC pixel hit never reach Meta.
    assert value(before, "signalgate_events_consent_dropped_total", **route) == 3
    assert value(before, "signalgate_outbox_depth", **route) == 8
    assert value(before, "signalgate_outbox_oldest_age_seconds", **route) == pytest.approx(5.0)
    assert total(before, "signalgate_events_delivered_total") == 0
    # The proxy's own counters.
    assert value(before, "signalgate_proxy_hits_total", vendor="meta") == 3
    assert value(before, "signalgate_proxy_hits_forwarded_total") == 3
    assert value(before, "signalgate_proxy_hits_mirrored_total") == 1
    assert value(before, "signalgate_proxy_mirror_failures_total") == 0
    assert value(before, "signalgate_proxy_hit_upstream_errors_total") == 0

    shop.clock.advance(10)  # every event is now exactly 15 s old
    await shop.drain()
    _, after = await shop.scrape()
    delivered = "signalgate_events_delivered_total"
    assert value(after, delivered, **route, event="Purchase") == 3  # 1, 2 and 42; 3 rejected
    assert value(after, delivered, **route, event="Lead") == 1
    assert value(after, delivered, **route, event="custom") == 1
    assert value(after, delivered, **route, event="PageView") == 2
    dead = "signalgate_events_dead_lettered_total"
    assert value(after, dead, **route, event="Purchase", reason="invalid_field") == 1
    assert total(after, dead) == 1
    assert total(after, "signalgate_events_retried_total") == 0
    assert len(shop.sandbox.recorder.accepted) == 7
    # Latency: 7 acceptances, each 15 s after its event's time.
    latency = "signalgate_delivery_latency_seconds"
    assert value(after, latency + "_count", **route) == 7
    assert value(after, latency + "_sum", **route) == pytest.approx(7 * 15.0)
    assert value(after, latency + "_bucket", **route, le="5.0") == 0
    assert value(after, latency + "_bucket", **route, le="15.0") == 7
    assert value(after, latency + "_bucket", **route, le="+Inf") == 7
    # Identifier coverage: the backend Purchases and Lead/custom carry e-mail and phone; the
    # pixel Purchase its own e-mail digest; page views from the loader carry visitor ids.
    ids = "signalgate_delivered_identifiers_total"
    assert value(after, ids, **route, event="Purchase", identifier="em") == 3
    assert value(after, ids, **route, event="Purchase", identifier="ph") == 2
    assert value(after, ids, **route, event="Lead", identifier="em") == 1
    assert value(after, ids, **route, event="PageView", identifier="visitor_id") == 2
    assert value(after, ids, **route, event="PageView", identifier="em") == 0
    # Drained: nothing waits.
    assert value(after, "signalgate_outbox_depth", **route) == 0
    assert value(after, "signalgate_outbox_oldest_age_seconds", **route) == 0
    assert value(after, "signalgate_delivery_requests_total", **route) >= 1
    assert value(after, "signalgate_destination_paused", **route) == 0

    # A request answered 429 as a whole: its one row is retried, then delivered.
    shop.sandbox.faults.burst_429 = 1
    shop.sandbox.faults.retry_after = 0.0
    await shop.backend([purchase(7)])
    await runtime_of(shop.client).workers["shop:meta"].run_once()
    _, retry = await shop.scrape()
    assert value(retry, "signalgate_events_retried_total", **route, event="Purchase") == 1
    assert value(retry, "signalgate_destination_circuit_open", **route) == 1
    assert value(retry, "signalgate_outbox_depth", **route) == 1
    shop.clock.advance(60)
    await shop.drain()
    _, last = await shop.scrape()
    assert value(last, delivered, **route, event="Purchase") == 4
    assert value(last, "signalgate_events_retried_total", **route, event="Purchase") == 1
    assert value(last, "signalgate_destination_circuit_open", **route) == 0
    assert value(last, latency + "_count", **route) == 8


async def test_label_values_are_bounded_and_carry_no_pii(shop: Shop) -> None:
    # An event name that *is* PII: the name collapses to `custom`, the value never shows.
    named = {**lead("pii-name"), "event": f"Signup {PLANTED_EMAIL}"}
    await shop.backend([named, lead("lead-2")])
    await play(shop)
    shop.clock.advance(10)
    await shop.drain()
    text, samples = await shop.scrape()
    for name, planted in PLANTED.items():
        assert planted.lower() not in text.lower(), f"{name} in /metrics"
    assert "Signup" not in text
    allowed = {
        "event": STANDARD_EVENTS | {"custom"},
        "identifier": IDENTIFIERS,
        "site": {"shop"},
        "destination": {"meta"},
        "source": {"backend", "loader", *(f"hit:{v}" for v in PROXY_VENDORS)},
        "le": {*(repr(b) for b in LATENCY_BUCKETS), "+Inf"},
    }
    seen: dict[str, set[str]] = {}
    for _, labels in samples:
        for key, label_value in labels:
            seen.setdefault(key, set()).add(label_value)
            if key in allowed:
                assert label_value in allowed[key], (key, label_value)
    assert "custom" in seen["event"]
    assert seen["reason"] <= {"invalid", "rate_limited", *(r.value for r in DeadReason)}


async def test_metrics_require_the_admin_token(shop: Shop) -> None:
    assert (await shop.client.get("/metrics")).status == 401
    resp = await shop.client.get("/metrics", headers=auth("wrong-token"))
    assert resp.status == 401
    assert (await resp.json())["error"] == "unauthorized"
    assert (await shop.client.get("/metrics", headers=auth(API_KEY))).status == 401
    assert (await shop.client.get("/metrics", headers=auth(ADMIN_TOKEN))).status == 200


async def test_without_an_admin_token_metrics_are_off(make_config: Any, gateway: Any) -> None:
    client = await gateway(make_config(server={"admin_token": None}), run_workers=False)
    assert (await client.get("/metrics", headers=auth(ADMIN_TOKEN))).status == 403


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_a_separate_listener_serves_metrics_without_a_token(
    gateway: Any, tmp_path: Path
) -> None:
    port = free_port()
    doc = base_doc(tmp_path)
    doc["metrics"] = {"host": "127.0.0.1", "port": port}
    client = await gateway(parse_config(doc, {}, tmp_path), run_workers=False)
    resp = await client.post("/v1/events", json={"events": [purchase(1)]}, headers=auth())
    assert resp.status == 202
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as side:
            assert side.status == 200
            samples = parse(await side.text())
        async with session.get(f"http://127.0.0.1:{port}/v1/debug/recent") as other:
            assert other.status == 404, "the metrics listener serves /metrics only"
    key = ("signalgate_events_queued_total",
           (("destination", "meta"), ("event", "Purchase"), ("site", "shop")))  # fmt: skip
    assert samples[key] == 1
    # The main listener still asks for the token.
    assert (await client.get("/metrics")).status == 401


async def test_rate_limited_events_are_counted_rejected(make_config: Any, gateway: Any) -> None:
    config = make_config(server={"max_events_per_request": 10}, site={"rate_limit_per_second": 1.0})
    client = await gateway(config, clock=FakeClock(), run_workers=False)  # no refill
    resp = await client.post(
        "/v1/events", json={"events": [purchase(i) for i in range(10)]}, headers=auth()
    )
    assert resp.status == 202
    resp = await client.post(
        "/v1/events", json={"events": [purchase(i) for i in range(10, 13)]}, headers=auth()
    )
    assert resp.status == 429
    resp = await client.get("/metrics", headers=auth(ADMIN_TOKEN))
    samples = parse(await resp.text())
    rejected = "signalgate_events_rejected_total"
    assert value(samples, rejected, site="shop", source="backend", reason="rate_limited") == 3
    assert value(samples, "signalgate_events_received_total", site="shop", source="backend") == 13
    queued = "signalgate_events_queued_total"
    assert value(samples, queued, site="shop", destination="meta", event="Purchase") == 10


TIKTOK_TOKEN = "tiktok-test-token"
TIKTOK_PIXEL = "CABCDEFGHIJ1234567KL"
tiktok_sandbox = sandbox_fixture(
    "tiktok_sandbox", lambda: TikTokSandbox(access_tokens={TIKTOK_TOKEN}, seed=4321)
)


async def test_per_destination_counts_when_a_pixel_copy_went_to_one_destination_only(
    tmp_path: Path,
    gateway: Any,
    meta_sandbox: Any,
    tiktok_sandbox: Any,
    cdn: tuple[FakeCdn, str],
) -> None:
    """A Meta pixel hit is mirrored to Meta only; the backend copy of the same order goes to
    Meta and TikTok: a duplicate on Meta, new on TikTok (a partial duplicate, counted exactly)."""
    meta, meta_base = meta_sandbox
    tiktok, tiktok_base = tiktok_sandbox
    _, url = cdn
    clock = FakeClock(float(int(time.time()) - 120))
    config = platform_config(
        tmp_path,
        "tiktok",
        {
            "pixel_code": "CABCDEFGHIJ1234567KL",
            "access_token": TIKTOK_TOKEN,
            "api_base": tiktok_base,
        },
        meta_base=meta_base,
        site={"hosts": [HOST], "proxy": {"enabled": True, **proxy_upstreams(url)}},
        server={"trusted_proxies": ["127.0.0.1/32"]},
    )
    client = await gateway(config, clock=clock, run_workers=False)
    shop = Shop(client, meta, cdn[0], clock)
    assert await shop.hit(ev="Purchase", eid="order-50") == 200
    body = await shop.backend([purchase(50), purchase(51)])
    assert (body["accepted"], body["deduplicated"]) == (2, 0)  # order-50 still reaches TikTok
    clock.advance(20)
    await drain(client, "shop:meta", "shop:tiktok")
    _, samples = await shop.scrape()
    queued = "signalgate_events_queued_total"
    dedup = "signalgate_events_deduplicated_total"
    delivered = "signalgate_events_delivered_total"
    meta_route = {"site": "shop", "destination": "meta", "event": "Purchase"}
    tiktok_route = {"site": "shop", "destination": "tiktok", "event": "Purchase"}
    assert value(samples, queued, **meta_route) == 2  # the pixel copy of 50, then 51
    assert value(samples, dedup, **meta_route) == 1  # the backend copy of 50, merged
    assert value(samples, queued, **tiktok_route) == 2  # 50 and 51 from the backend
    assert value(samples, dedup, **tiktok_route) == 0
    assert value(samples, delivered, **meta_route) == 2
    assert value(samples, delivered, **tiktok_route) == 2
    assert len(meta.recorder.accepted) == 2
    assert len(tiktok.recorder.accepted) == 2
    received = "signalgate_events_received_total"
    assert value(samples, received, site="shop", source="hit:meta") == 1
    assert value(samples, received, site="shop", source="backend") == 2
    for destination in ("meta", "tiktok"):
        route = {"site": "shop", "destination": destination}
        assert value(samples, "signalgate_outbox_depth", **route) == 0
        assert value(samples, "signalgate_delivery_latency_seconds_count", **route) == 2


async def test_a_store_that_cannot_answer_costs_only_the_outbox_gauges(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    await shop.backend([purchase(1)])
    _, ok = await shop.scrape()
    assert value(ok, "signalgate_store_readable") == 1

    async def broken(routes: Any, limit: int) -> Any:
        raise StoreUnavailableError("disk full")

    monkeypatch.setattr(runtime_of(shop.client).store, "backlog", broken)
    text, samples = await shop.scrape()
    assert value(samples, "signalgate_store_readable") == 0
    assert "signalgate_outbox_depth{" not in text
    queued = "signalgate_events_queued_total"
    assert value(samples, queued, site="shop", destination="meta", event="Purchase") == 1
