"""Routing end to end (issue #11 item 6): per-event fan-out through POST /v1/events, `/e` and
proxied hits; `routed_away` counted in /v1/debug/recent; `event_names` overrides in what the
platforms receive; the 202 warnings follow the lists and the names."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ACCESS_TOKEN, ADMIN_TOKEN, FakeClock, auth, base_doc, runtime_of
from platform_harness import (
    ORIGIN,
    TRACK_HOST,
    browser_headers,
    drain,
    proxy_upstreams,
    purchase,
    sandbox_fixture,
    visit,
)

from gateway.config import Config, parse
from gateway.sandbox.cdn import FakeCdn
from gateway.sandbox.meta import MetaSandbox
from gateway.sandbox.tiktok import TikTokSandbox

TIKTOK_TOKEN = "tiktok-routing-token"
TIKTOK_PIXEL = "CABCDEFGHIJ1234567KL"
UA = "Mozilla/5.0 (routing test)"

tiktok_sandbox = sandbox_fixture(
    "tiktok_sandbox", lambda: TikTokSandbox(access_tokens={TIKTOK_TOKEN}, seed=77)
)
meta_any = sandbox_fixture("meta_any", lambda: MetaSandbox(access_tokens={ACCESS_TOKEN}, seed=78))

META_ROUTING: dict[str, Any] = {
    "exclude_events": ["internal_ping"],
    "event_names": {"order_paid": "Purchase"},
}
TIKTOK_ROUTING: dict[str, Any] = {
    "events": ["Purchase", "AddToCart", "order_paid"],
    "event_names": {"order_paid": "Purchase"},
}


def config(
    tmp_path: Path,
    meta_base: str = "http://127.0.0.1:9",
    tiktok_base: str = "http://127.0.0.1:9",
    *,
    meta: dict[str, Any] | None = None,
    tiktok: dict[str, Any] | None = None,
    site: dict[str, Any] | None = None,
    **sections: dict[str, Any],
) -> Config:
    doc = copy.deepcopy(base_doc(tmp_path, meta_base))
    destinations = doc["sites"][0]["destinations"]
    destinations["meta"].update(META_ROUTING if meta is None else meta)
    destinations["tiktok"] = {
        "pixel_code": TIKTOK_PIXEL,
        "access_token": TIKTOK_TOKEN,
        "api_base": tiktok_base,
        **(TIKTOK_ROUTING if tiktok is None else tiktok),
    }
    doc["sites"][0].update(site or {})
    for name, values in sections.items():
        doc.setdefault(name, {}).update(values)
    return parse(doc, {}, tmp_path)


def mixed(start: int = 0) -> list[dict[str, Any]]:
    """Five events of one request: names → ids `<name>-<start>`."""
    out = []
    for i, name in enumerate(("Purchase", "PageView", "AddToCart", "internal_ping", "order_paid")):
        event = purchase(start + i, user_agent=UA)
        event["event"] = name
        event["event_id"] = f"{name}-{start}"
        if name != "Purchase":  # keep order ids unique: the event id is what counts here
            event["data"]["order_id"] = f"{name}-order-{start}"
        out.append(event)
    return out


async def rows(client: Any, route: str) -> dict[str, str]:
    """Outbox rows of `route`: event id → stored (canonical) event name."""
    found = await runtime_of(client).store.recent(1000, route)
    return {r.event_id: r.event_name for r in found}


async def debug_recent(client: Any) -> dict[str, Any]:
    resp = await client.get("/v1/debug/recent", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert resp.status == 200
    doc: dict[str, Any] = await resp.json()
    return doc


async def post(client: Any, events: list[dict[str, Any]]) -> dict[str, Any]:
    resp = await client.post("/v1/events", json={"events": events}, headers=auth())
    body: dict[str, Any] = await resp.json()
    assert resp.status == 202, body
    assert body["rejected"] == []
    return body


def assert_fanned_out(meta: dict[str, str], tiktok: dict[str, str], start: int) -> None:
    assert meta == {
        f"Purchase-{start}": "Purchase",
        f"PageView-{start}": "PageView",
        f"AddToCart-{start}": "AddToCart",
        f"order_paid-{start}": "order_paid",  # stored canonical; renamed at delivery
    }
    assert tiktok == {
        f"Purchase-{start}": "Purchase",
        f"AddToCart-{start}": "AddToCart",
        f"order_paid-{start}": "order_paid",
    }


async def test_each_event_of_a_request_goes_to_its_own_routes(tmp_path: Path, gateway: Any) -> None:
    client = await gateway(config(tmp_path), run_workers=False)
    body = await post(client, mixed())
    assert body["accepted"] == 5, "an event no destination takes is still accepted"
    assert_fanned_out(await rows(client, "shop:meta"), await rows(client, "shop:tiktok"), 0)
    recent = await debug_recent(client)
    assert recent["routed_away"] == {"shop:meta": 1, "shop:tiktok": 2}
    assert recent["consent_denied"] == {}


async def test_the_profile_road_routes_alike(tmp_path: Path, gateway: Any) -> None:
    site = {"hosts": [TRACK_HOST], "allowed_origins": [ORIGIN]}
    client = await gateway(config(tmp_path, site=site), run_workers=False)
    vid = await visit(client, "https://www.shop.test/", browser_headers(UA))
    assert await runtime_of(client).pipeline.needs_enrich(runtime_of(client).sites[0])
    events = mixed(10)
    for event in events:
        event["user"]["visitor_id"] = vid
    await post(client, events)
    meta, tiktok = await rows(client, "shop:meta"), await rows(client, "shop:tiktok")
    meta_visit = {k: v for k, v in meta.items() if not k.endswith("-10")}
    assert list(meta_visit.values()) == ["PageView"], "the visit reached meta only"
    assert_fanned_out({k: v for k, v in meta.items() if k.endswith("-10")}, tiktok, 10)
    assert runtime_of(client).pipeline.routed_away == {"shop:meta": 1, "shop:tiktok": 3}


async def test_a_request_nothing_is_routed_to_is_accepted_and_counted(
    tmp_path: Path, gateway: Any
) -> None:
    client = await gateway(config(tmp_path), run_workers=False)
    pings = [dict(mixed(i)[3]) for i in range(0, 30, 10)]
    body = await post(client, pings)
    assert body["accepted"] == 3
    assert await rows(client, "shop:meta") == {}
    assert await rows(client, "shop:tiktok") == {}
    assert (await debug_recent(client))["routed_away"] == {"shop:meta": 3, "shop:tiktok": 3}


async def test_consent_is_decided_first_then_the_lists(tmp_path: Path, gateway: Any) -> None:
    client = await gateway(config(tmp_path), run_workers=False)
    denied = {"ad_storage": "denied", "analytics_storage": "denied", "ad_user_data": "denied"}
    events = mixed()
    for event in events:
        event["consent"] = denied
    await post(client, events)
    recent = await debug_recent(client)
    assert recent["consent_denied"] == {"shop:meta": 5, "shop:tiktok": 5}
    assert recent["routed_away"] == {}, "an event consent kept back is not also routed away"


@pytest.mark.parametrize("writer", ["loop", "thread"])
async def test_loader_events_obey_the_lists(tmp_path: Path, gateway: Any, writer: str) -> None:
    site = {"hosts": [TRACK_HOST], "allowed_origins": [ORIGIN]}
    cfg = config(tmp_path, site=site, storage={"writer": writer})
    client = await gateway(cfg, run_workers=False)
    headers = browser_headers(UA)
    await visit(client, "https://www.shop.test/", headers)  # a first visit: profile road
    for name in ("AddToCart", "internal_ping"):
        body = json.dumps({"event": name, "event_id": f"{name}-e", "url": "https://www.shop.test/"})
        resp = await client.post("/e", data=body, headers=headers)
        assert resp.status == 204
    meta, tiktok = await rows(client, "shop:meta"), await rows(client, "shop:tiktok")
    assert sorted(meta.values()) == ["AddToCart", "PageView"]
    assert list(tiktok.values()) == ["AddToCart"]
    assert runtime_of(client).pipeline.routed_away == {"shop:meta": 1, "shop:tiktok": 2}


async def test_overrides_reach_each_platform_under_its_name(
    tmp_path: Path, gateway: Any, meta_any: Any, tiktok_sandbox: Any
) -> None:
    meta, meta_base = meta_any
    tiktok, tiktok_base = tiktok_sandbox
    client = await gateway(config(tmp_path, meta_base, tiktok_base), run_workers=False)
    await post(client, mixed())
    await drain(client, "shop:meta", "shop:tiktok")
    at_meta = {e["event_id"]: e["event_name"] for e in meta.recorder.accepted}
    assert at_meta == {
        "Purchase-0": "Purchase",
        "PageView-0": "PageView",
        "AddToCart-0": "AddToCart",
        "order_paid-0": "Purchase",
    }
    at_tiktok = {e["event_id"]: e["event"] for e in tiktok.recorder.accepted}
    assert at_tiktok == {
        "Purchase-0": "Purchase",
        "AddToCart-0": "AddToCart",
        "order_paid-0": "Purchase",
    }
    [renamed] = [e for e in meta.recorder.accepted if e["event_id"] == "order_paid-0"]
    assert renamed["custom_data"]["value"] == 14, "only the name changes"


async def test_a_rename_is_checked_as_the_platform_will_see_it(
    tmp_path: Path, gateway: Any
) -> None:
    client = await gateway(config(tmp_path), run_workers=False)
    paid = mixed()[4]
    del paid["data"]["value"]  # order_paid is Meta's Purchase there: Purchase needs a value
    body = await post(client, [paid])
    assert [w["path"] for w in body["warnings"]] == ["events[0].data"], body
    assert "meta would refuse" in body["warnings"][0]["reason"]


@pytest.mark.parametrize(
    ("snap_routing", "warned"),
    [
        ({}, True),
        ({"exclude_events": ["quiz_done"]}, False),
        ({"event_names": {"quiz_done": "SIGN_UP"}}, False),
    ],
    ids=["no-routing", "excluded", "renamed"],
)
async def test_warnings_follow_the_lists_and_names(
    tmp_path: Path, gateway: Any, snap_routing: dict[str, Any], warned: bool
) -> None:
    doc = copy.deepcopy(base_doc(tmp_path))
    doc["sites"][0]["destinations"]["snap"] = {
        "pixel_id": "5bf81ee1-15b1-4dc1-b636-d7dae49b950e",
        "access_token": "snap-token",
        "api_base": "http://127.0.0.1:9",
        **snap_routing,
    }
    client = await gateway(parse(doc, {}, tmp_path), run_workers=False)
    quiz = purchase(1, user_agent=UA)
    quiz["event"] = "quiz_done"
    body = await post(client, [quiz])
    reasons = [w["reason"] for w in body.get("warnings", [])]
    assert any(r.startswith("snap would refuse") for r in reasons) is warned, reasons


# --- proxied hits ---------------------------------------------------------------------------------


async def send_tiktok_hit(client: Any) -> None:
    body = json.dumps(
        {
            "event": "CompletePayment",
            "event_id": "tt-hit-1",
            "context": {
                "pixel": {"code": TIKTOK_PIXEL},
                "page": {"url": "https://www.shop.test/t"},
            },
            "properties": {"value": 12, "currency": "EUR"},
        }
    )
    headers = {
        "Host": "www.shop.test",
        "User-Agent": UA,
        "X-Forwarded-For": "203.0.113.7",
        "Content-Type": "application/json",
    }
    resp = await client.post("/p/t/api/v2/pixel", data=body, headers=headers)
    assert resp.status == 200


@pytest.mark.parametrize(
    ("tiktok_routing", "mirrored"),
    [
        ({"events": ["Purchase"]}, True),
        ({"events": ["AddToCart"]}, False),
        ({"exclude_events": ["Purchase"]}, False),
    ],
    ids=["included", "not-included", "excluded"],
)
async def test_mirrored_hits_obey_the_lists(
    tmp_path: Path,
    gateway: Any,
    cdn: tuple[FakeCdn, str],
    tiktok_routing: dict[str, Any],
    mirrored: bool,
) -> None:
    _, url = cdn
    site = {"hosts": ["www.shop.test"], "proxy": {"enabled": True, **proxy_upstreams(url)}}
    cfg = config(
        tmp_path,
        tiktok=tiktok_routing,
        site=site,
        server={"trusted_proxies": ["127.0.0.1/32"]},
    )
    client = await gateway(cfg, clock=FakeClock(time.time()), run_workers=False)
    await send_tiktok_hit(client)  # answered once its mirror is committed
    tiktok_rows = await rows(client, "shop:tiktok")
    assert await rows(client, "shop:meta") == {}, "a TikTok hit goes to TikTok only"
    if mirrored:
        assert tiktok_rows == {"tt-hit-1": "Purchase"}
        assert runtime_of(client).pipeline.routed_away == {}
    else:
        assert tiktok_rows == {}
        assert runtime_of(client).pipeline.routed_away == {"shop:tiktok": 1}
