"""End-to-end delivery to the TikTok sandbox: faults, bisection, pause, rate limit, pixel mirror."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from operator import itemgetter
from pathlib import Path
from typing import Any

from conftest import FakeClock, auth, runtime_of
from platform_harness import (
    HEX64,
    assert_bad_event_isolated,
    assert_retry_after_honoured,
    drain,
    platform_config,
    proxy_upstreams,
    sandbox_fixture,
    wait_done,
    wait_for,
)
from platform_harness import purchase as harness_purchase

from gateway.config import Config
from gateway.sandbox.cdn import FakeCdn
from gateway.sandbox.meta import MetaSandbox
from gateway.sandbox.tiktok import TikTokSandbox
from gateway.store.base import DeliveryState

TOKEN = "tiktok-test-token"
PIXEL = "CABCDEFGHIJ1234567KL"
HOST = "www.shop.test"
UA = "Mozilla/5.0 (tiktok test)"
CLIENT = "203.0.113.7"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def purchase(i: int, **extra: Any) -> dict[str, Any]:
    click_ids = {"ttclid": f"tt-click-{i}", "fbclid": f"fb-click-{i}"}
    return harness_purchase(i, user_agent=UA, click_ids=click_ids, **extra)


tiktok_sandbox = sandbox_fixture(
    "tiktok_sandbox", lambda: TikTokSandbox(access_tokens={TOKEN}, seed=4321)
)


def config(
    tmp_path: Path, tiktok_base: str, meta_base: str = "http://127.0.0.1:9", **kwargs: Any
) -> Config:
    """A config with a TikTok destination next to Meta's (at `meta_base`)."""
    settings = {"pixel_code": PIXEL, "access_token": TOKEN, "api_base": tiktok_base}
    return platform_config(tmp_path, "tiktok", settings, meta_base=meta_base, **kwargs)


async def test_2000_events_with_5xx_and_rate_limits_arrive_exactly_once(
    tmp_path: Path, gateway: Any, tiktok_sandbox: Any
) -> None:
    sandbox, base = tiktok_sandbox
    sandbox.faults.error_rate = 0.10
    sandbox.faults.burst_429 = 3
    sandbox.faults.retry_after = 0.2
    client = await gateway(config(tmp_path, base, tiktok={"max_batch": 200}))

    async def post(events: list[dict[str, Any]]) -> int:
        resp = await client.post("/v1/events", json={"events": events}, headers=auth())
        body = await resp.json()
        assert resp.status == 202, body
        assert body["rejected"] == []
        return int(body["accepted"])

    accepted = 0
    for start in range(0, 2000, 100):
        accepted += await post([purchase(i) for i in range(start, start + 100)])
    assert accepted == 2000

    def all_arrived() -> bool:
        return len({e["event_id"] for e in sandbox.recorder.accepted}) >= 2000

    await wait_for(all_arrived, timeout=90)
    keys = Counter((e["event"], e["event_id"]) for e in sandbox.recorder.accepted)
    assert set(keys) == {("Purchase", f"order-{i}") for i in range(2000)}
    assert max(keys.values()) == 1, "an event reached the sandbox twice"
    for event in sandbox.recorder.accepted:
        user = event["user"]
        assert HEX64.match(user["email"])
        assert HEX64.match(user["phone"])
        assert event["_event_source"] == "web"
        assert event["_event_source_id"] == PIXEL
    first = next(e for e in sandbox.recorder.accepted if e["event_id"] == "order-7")
    assert first["user"]["phone"] == sha("+16505550007"), "TikTok's E.164-with-plus rule"
    assert first["user"]["email"] == sha("customer.7@example.com")
    assert first["user"]["ttclid"] == "tt-click-7"
    assert "fb-click-7" not in json.dumps(first)
    assert first["properties"] == {"value": 17, "currency": "EUR", "order_id": "order-7"}
    assert any(r["code"] == 40100 for r in sandbox.recorder.rejected)
    assert any(r["status"] >= 500 for r in sandbox.recorder.rejected)
    counts = await wait_done(client, "shop:tiktok", 2000)
    assert counts.get(("shop:tiktok", DeliveryState.DEAD), 0) == 0


async def test_bad_event_in_a_batch_is_bisected_out_and_dead_lettered(
    tmp_path: Path, gateway: Any, tiktok_sandbox: Any
) -> None:
    sandbox, base = tiktok_sandbox
    sandbox.faults.reject_event_ids = {"order-37"}
    client = await gateway(config(tmp_path, base, tiktok={"max_batch": 100}), run_workers=False)
    events = [purchase(i) for i in range(100)]
    worker = await assert_bad_event_isolated(
        client, sandbox, "shop:tiktok", events, itemgetter("event_id"), "order-37", "40002"
    )
    assert worker.stats.bisections > 0
    assert all(r["status"] == 200 and r["code"] == 40002 for r in sandbox.recorder.rejected)


async def test_no_permission_under_http_200_pauses_the_route(
    tmp_path: Path, gateway: Any, tiktok_sandbox: Any
) -> None:
    sandbox, base = tiktok_sandbox
    sandbox.faults.token_expired = True
    clock = FakeClock(time.time())
    cfg = config(tmp_path, base, delivery={"pause_seconds": 60})
    client = await gateway(cfg, run_workers=False, clock=clock)
    await client.post("/v1/events", json={"events": [purchase(1), purchase(2)]}, headers=auth())
    worker = runtime_of(client).workers["shop:tiktok"]
    await worker.drain()
    await worker.drain()
    assert sandbox.recorder.requests == 1
    assert sandbox.recorder.rejected[0] | {"_received_at": 0} == {
        "status": 200,
        "code": 40001,
        "message": "No permission: the access token has expired.",
        "event_ids": ["order-1", "order-2"],
        "_received_at": 0,
    }
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert "paused" in json.dumps(await ready.json())
    sandbox.faults.token_expired = False
    clock.advance(61)
    await worker.drain()
    assert len(sandbox.recorder.accepted) == 2


async def test_wrong_token_pauses_and_nothing_is_dead(
    tmp_path: Path, gateway: Any, tiktok_sandbox: Any
) -> None:
    sandbox, base = tiktok_sandbox
    cfg = config(tmp_path, base, tiktok={"access_token": "not-the-token"})
    client = await gateway(cfg, run_workers=False)
    await client.post("/v1/events", json={"events": [purchase(1)]}, headers=auth())
    await runtime_of(client).workers["shop:tiktok"].drain()
    assert sandbox.recorder.accepted == []
    assert sandbox.recorder.rejected[0]["code"] == 40001
    assert await runtime_of(client).store.dead_letters("shop:tiktok", 10) == []


async def test_rate_limit_retry_after_is_honoured(
    tmp_path: Path, gateway: Any, tiktok_sandbox: Any
) -> None:
    sandbox, base = tiktok_sandbox
    await assert_retry_after_honoured(gateway, sandbox, config(tmp_path, base), "shop:tiktok")


async def test_test_event_code_and_ldu_reach_tiktok(
    tmp_path: Path, gateway: Any, tiktok_sandbox: Any
) -> None:
    sandbox, base = tiktok_sandbox
    cfg = config(tmp_path, base, tiktok={"test_event_code": "TEST12345"})
    client = await gateway(cfg, run_workers=False)
    await client.post("/v1/events", json={"events": [purchase(1)]}, headers=auth())
    await runtime_of(client).workers["shop:tiktok"].drain()
    [event] = sandbox.recorder.accepted
    assert event["_test_event_code"] == "TEST12345"
    assert "limited_data_use" not in event


# --- a proxied TikTok pixel hit -------------------------------------------------------------------

PHONE_TIKTOK = sha("+16505551212")  # what TikTok's pixel sends: E.164 with '+', hashed
EMAIL = sha("buyer@example.com")


async def proxied(
    tmp_path: Path,
    gateway: Any,
    cdn: tuple[FakeCdn, str],
    tiktok_base: str,
    meta_base: str,
    proxy: dict[str, Any] | None = None,
) -> tuple[Any, FakeClock]:
    _, url = cdn
    site = {"hosts": [HOST], "proxy": {"enabled": True, **proxy_upstreams(url), **(proxy or {})}}
    cfg = config(
        tmp_path, tiktok_base, meta_base, site=site, server={"trusted_proxies": ["127.0.0.1/32"]}
    )
    clock = FakeClock(time.time() - 120)  # the sandboxes check event times on the real clock
    client = await gateway(cfg, clock=clock, run_workers=False)
    return client, clock


async def send_tiktok_hit(client: Any) -> None:
    body = json.dumps(
        {
            "event": "CompletePayment",
            "event_id": "tt-hit-9",
            "context": {
                "pixel": {"code": PIXEL},
                "page": {"url": "https://www.shop.test/thanks", "referrer": "https://x.test/"},
                "ad": {"callback": "E.C.P.click-9"},
                "user": {"email": EMAIL, "phone_number": PHONE_TIKTOK},
            },
            "properties": {"value": 12, "currency": "EUR"},
        }
    )
    headers = {
        "Host": HOST,
        "User-Agent": UA,
        "X-Forwarded-For": CLIENT,
        "Content-Type": "application/json",
        "Cookie": "_ttp=2F7h37YkS1j57AYSKTI7IHhJPYH",
    }
    resp = await client.post("/p/t/api/v2/pixel", data=body, headers=headers)
    assert resp.status == 200


meta_sandbox_any = sandbox_fixture("meta_sandbox_any", lambda: MetaSandbox(seed=99))


async def test_a_proxied_tiktok_hit_reaches_tiktok_with_its_event_id_and_not_meta(
    tmp_path: Path,
    gateway: Any,
    cdn: tuple[FakeCdn, str],
    tiktok_sandbox: Any,
    meta_sandbox_any: Any,
) -> None:
    sandbox, base = tiktok_sandbox
    meta, meta_base = meta_sandbox_any
    client, clock = await proxied(tmp_path, gateway, cdn, base, meta_base)
    await send_tiktok_hit(client)
    clock.advance(10)
    await drain(client, "shop:tiktok", "shop:meta")
    [event] = sandbox.recorder.accepted
    assert event["event"] == "Purchase"
    assert event["event_id"] == "tt-hit-9", "TikTok dedups pixel and server on event_id"
    assert event["user"]["phone"] == PHONE_TIKTOK
    assert event["user"]["email"] == EMAIL
    assert event["user"]["ttclid"] == "E.C.P.click-9"
    assert event["user"]["ttp"] == "2F7h37YkS1j57AYSKTI7IHhJPYH"
    assert event["user"]["ip"] == CLIENT
    assert event["page"]["url"] == "https://www.shop.test/thanks"
    assert meta.recorder.requests == 0, "a TikTok hit must not reach Meta by default"


async def test_mirror_to_all_never_gives_meta_tiktoks_phone_digest(
    tmp_path: Path,
    gateway: Any,
    cdn: tuple[FakeCdn, str],
    tiktok_sandbox: Any,
    meta_sandbox_any: Any,
) -> None:
    sandbox, base = tiktok_sandbox
    meta, meta_base = meta_sandbox_any
    client, clock = await proxied(
        tmp_path, gateway, cdn, base, meta_base, proxy={"mirror_to_all": True}
    )
    await send_tiktok_hit(client)
    clock.advance(10)
    await drain(client, "shop:tiktok", "shop:meta")
    [at_tiktok] = sandbox.recorder.accepted
    assert at_tiktok["user"]["phone"] == PHONE_TIKTOK
    [at_meta] = meta.recorder.accepted
    assert at_meta["event_id"] == "tt-hit-9"
    assert at_meta["user_data"]["em"] == EMAIL, "e-mail is normalised alike: kept"
    assert "ph" not in at_meta["user_data"], "a '+' phone digest is not Meta's phone digest"
    text = json.dumps(at_meta)
    for foreign in (PHONE_TIKTOK, "E.C.P.click-9", "2F7h37YkS1j57AYSKTI7IHhJPYH"):
        assert foreign not in text


async def test_mirror_to_all_never_gives_tiktok_metas_phone_digest(
    tmp_path: Path,
    gateway: Any,
    cdn: tuple[FakeCdn, str],
    tiktok_sandbox: Any,
    meta_sandbox_any: Any,
) -> None:
    sandbox, base = tiktok_sandbox
    meta, meta_base = meta_sandbox_any
    client, clock = await proxied(
        tmp_path, gateway, cdn, base, meta_base, proxy={"mirror_to_all": True}
    )
    phone_meta = sha("16505551212")  # Meta's pixel: digits without '+'
    query = (
        "id=1234567890&ev=Purchase&eid=order-77&dl=https%3A%2F%2Fwww.shop.test%2Fthanks"
        f"&cd[value]=5&cd[currency]=EUR&ud[em]={EMAIL}&ud[ph]={phone_meta}&rqm=GET"
    )
    headers = {"Host": HOST, "User-Agent": UA, "X-Forwarded-For": CLIENT}
    resp = await client.get(f"/p/m/tr/?{query}", headers=headers)
    assert resp.status == 200
    clock.advance(10)
    await drain(client, "shop:tiktok", "shop:meta")
    [at_meta] = meta.recorder.accepted
    assert at_meta["user_data"]["ph"] == phone_meta
    [at_tiktok] = sandbox.recorder.accepted
    assert at_tiktok["event_id"] == "order-77"
    assert at_tiktok["user"]["email"] == EMAIL
    assert "phone" not in at_tiktok["user"], "a digits-only digest is not TikTok's phone digest"
