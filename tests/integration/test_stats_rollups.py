"""Per-minute stats rollups through the real app: exact rows after the scripted traffic mix of
test_metrics.py, minute boundaries, retention, a restart, and GET /v1/admin/stats' auth and
parameters.

The app's clock is a FakeClock that starts 10 s into a minute; the tests flush by hand right
after each minute boundary, as the flusher's own ticks do.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN_TOKEN, API_KEY, FakeClock, auth, base_doc, runtime_of
from platform_harness import purchase
from test_metrics import HOST, ORIGIN, Shop, play

import gateway.web.rollups as rollups_module
from gateway.config import PROXY_VENDORS
from gateway.config import parse as parse_config
from gateway.core.rollup import StatRow, minute_of
from gateway.sandbox.cdn import FakeCdn
from gateway.store.base import StatsQuery
from gateway.web.rollups import ROLLUPS

Client = Any


def start_clock() -> FakeClock:
    """10 s into a minute, a few minutes ago (the Meta sandbox checks times on real time)."""
    return FakeClock(float(minute_of(time.time()) - 240 + 10))


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
    clock = start_clock()
    config = make_config(api_base, site=site, server={"trusted_proxies": ["127.0.0.1/32"]})
    client = await gateway(config, clock=clock, run_workers=False)
    return Shop(client, sandbox, fake, clock)


async def flush(client: Client) -> int:
    written: int = await client.app[ROLLUPS].flush()
    return written


async def stats(client: Client, token: str = ADMIN_TOKEN, **params: Any) -> Any:
    resp = await client.get(
        "/v1/admin/stats", params={k: str(v) for k, v in params.items()}, headers=auth(token)
    )
    body = await resp.json()
    assert resp.status == 200, body
    return body


def by_key(body: Any) -> dict[tuple[Any, ...], list[int]]:
    """Every series of an answer by (site, destination, event, metric, detail)."""
    keys = ("site", "destination", "event", "metric", "detail")
    return {tuple(s[k] for k in keys): s["values"] for s in body["series"]}


def pick(body: Any, metric: str, **key: str | None) -> list[int]:
    """The values of the one series of `metric` whose fields equal `key` (zeros when none)."""
    found = [
        s["values"]
        for s in body["series"]
        if s["metric"] == metric and all(s.get(k) == v for k, v in key.items())
    ]
    assert len(found) <= 1, found
    return found[0] if found else [0] * len(body["times"])


async def test_rollups_hold_exact_figures_per_minute(shop: Shop) -> None:
    m0 = minute_of(shop.clock())
    shop.sandbox.faults.reject_event_ids = {"order-3"}
    await play(shop)  # minute m0, nothing delivered
    shop.clock.now = m0 + 60.05
    assert await flush(shop.client) > 0  # books minute m0
    await shop.drain()  # minute m0 + 60: every event is 50.05 s old
    shop.clock.now = m0 + 120.05
    await flush(shop.client)
    body = await stats(shop.client, site="shop", **{"from": m0, "to": m0 + 120})
    assert body["times"] == [m0, m0 + 60]
    assert (body["from"], body["to"], body["step"]) == (m0, m0 + 120, 60)
    site = {"site": "shop", "destination": None}
    # Site-wide ingest families in m0 (the same figures /metrics shows after this mix).
    assert pick(body, "received", **site, detail="backend") == [8, 0]
    assert pick(body, "received", **site, detail="loader") == [4, 0]
    assert pick(body, "received", **site, detail="hit:meta") == [2, 0]
    assert pick(body, "accepted", **site, event="Purchase", detail="backend") == [5, 0]
    assert pick(body, "accepted", **site, event="Lead", detail="backend") == [1, 0]
    assert pick(body, "accepted", **site, event="custom", detail="backend") == [1, 0]
    assert pick(body, "accepted", **site, event="PageView", detail="loader") == [3, 0]
    assert pick(body, "accepted", **site, event="Purchase", detail="hit:meta") == [2, 0]
    assert pick(body, "rejected", **site, detail="invalid") == [2, 0]
    # Per destination: into the outbox in m0, delivered in m0 + 60.
    meta = {"site": "shop", "destination": "meta"}
    assert pick(body, "queued", **meta, event="Purchase") == [4, 0]
    assert pick(body, "queued", **meta, event="Lead") == [1, 0]
    assert pick(body, "queued", **meta, event="custom") == [1, 0]
    assert pick(body, "queued", **meta, event="PageView") == [2, 0]
    assert pick(body, "deduplicated", **meta, event="Purchase") == [1, 0]
    assert pick(body, "consent_dropped", **meta, event=None) == [3, 0]
    assert pick(body, "delivered", **meta, event="Purchase") == [0, 3]
    assert pick(body, "delivered", **meta, event="Lead") == [0, 1]
    assert pick(body, "delivered", **meta, event="custom") == [0, 1]
    assert pick(body, "delivered", **meta, event="PageView") == [0, 2]
    assert pick(body, "dead", **meta, event="Purchase", detail="invalid_field") == [0, 1]
    assert pick(body, "retried", **meta, event="Purchase") == [0, 0]
    assert pick(body, "identifier", **meta, event="Purchase", detail="em") == [0, 3]
    assert pick(body, "identifier", **meta, event="Purchase", detail="ph") == [0, 2]
    assert pick(body, "identifier", **meta, event="PageView", detail="visitor_id") == [0, 2]
    assert pick(body, "latency", **meta, detail="60.0") == [0, 7]
    assert pick(body, "latency_ms_sum", **meta) == [0, 7 * 50050]
    (route,) = body["latency"]
    assert (route["site"], route["destination"], route["count"]) == ("shop", "meta", [0, 7])
    assert route["p50"] == [None, pytest.approx(45.0)]  # 7 in (30, 60]: interpolated
    assert route["p95"] == [None, pytest.approx(58.5)]
    # One step of two minutes sums them.
    wide = await stats(shop.client, site="shop", step=120, **{"from": m0, "to": m0 + 120})
    if m0 % 120 == 0:
        assert wide["times"] == [m0]
        assert pick(wide, "delivered", **meta, event="Purchase") == [3]
        assert pick(wide, "queued", **meta, event="Purchase") == [4]
    else:  # the grid is Unix time: m0 is the second minute of its step
        assert wide["times"] == [m0 - 60, m0 + 60]
        assert pick(wide, "queued", **meta, event="Purchase") == [4, 0]
        assert pick(wide, "delivered", **meta, event="Purchase") == [0, 3]
    # Only some metrics: the rest is left out.
    some = await stats(shop.client, metric="delivered,latency", **{"from": m0, "to": m0 + 120})
    assert {s["metric"] for s in some["series"]} == {"delivered", "latency"}
    assert pick(some, "delivered", **meta, event="Purchase") == [0, 3]
    assert some["latency"] == body["latency"]
    # Every series is also in the store, the same on any backend.
    rows = await runtime_of(shop.client).store.read_stats(StatsQuery(m0, m0 + 120))
    assert sum(r.value for r in rows if r.metric == "delivered") == 7


async def test_flushes_inside_a_minute_add_up_and_boundaries_split(shop: Shop) -> None:
    m0 = minute_of(shop.clock())
    await shop.backend([purchase(1)])
    shop.clock.now = m0 + 30
    await flush(shop.client)  # mid-minute: booked to m0
    await shop.backend([purchase(2), purchase(3)])
    shop.clock.now = m0 + 60.05
    await flush(shop.client)  # the interval began at m0 + 30: m0 again
    await shop.backend([purchase(4)])  # minute m0 + 60
    shop.clock.now = m0 + 180.05
    await flush(shop.client)  # the interval began in m0 + 60
    assert await flush(shop.client) == 0  # nothing new, nothing written
    body = await stats(shop.client, **{"from": m0 - 60, "to": m0 + 179})
    assert body["times"] == [m0 - 60, m0, m0 + 60, m0 + 120]
    meta = {"site": "shop", "destination": "meta", "event": "Purchase"}
    assert pick(body, "queued", **meta) == [0, 3, 1, 0]
    assert pick(body, "received", site="shop", detail="backend") == [0, 3, 1, 0]


async def test_a_store_that_refuses_a_flush_gets_the_rows_next_time(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    m0 = minute_of(shop.clock())
    store = runtime_of(shop.client).store
    await shop.backend([purchase(1)])
    real = store.write_stats

    async def broken(rows: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "write_stats", broken)
    shop.clock.now = m0 + 60.05
    assert await flush(shop.client) == 0
    monkeypatch.setattr(store, "write_stats", real)
    await shop.backend([purchase(2)])
    shop.clock.now = m0 + 120.05
    assert await flush(shop.client) > 0
    body = await stats(shop.client, **{"from": m0, "to": m0 + 120})
    assert pick(body, "queued", site="shop", destination="meta", event="Purchase") == [1, 1]


async def test_the_series_survive_a_restart(gateway: Any, tmp_path: Path) -> None:
    config = parse_config(base_doc(tmp_path), {}, tmp_path)
    clock = start_clock()
    m0 = minute_of(clock())
    first = await gateway(config, clock=clock, run_workers=False)
    resp = await first.post(
        "/v1/events", json={"events": [purchase(1), purchase(2)]}, headers=auth()
    )
    assert resp.status == 202
    clock.now = m0 + 30
    await flush(first)
    before = await stats(first, **{"from": m0, "to": m0 + 60})
    resp = await first.post("/v1/events", json={"events": [purchase(3)]}, headers=auth())
    assert resp.status == 202
    await first.close()  # a graceful stop flushes what the last tick had not written
    second = await gateway(config, clock=clock, run_workers=False)
    after = await stats(second, **{"from": m0, "to": m0 + 60})
    purchases = {"site": "shop", "destination": "meta", "event": "Purchase"}
    assert pick(before, "queued", **purchases) == [2]
    # The same series after the restart, plus the one event the stop's flush booked.
    b, a = by_key(before), by_key(after)
    assert a.keys() == b.keys()
    grew = {k for k in b if a[k] != b[k]}
    assert grew == {
        ("shop", "meta", "Purchase", "queued", None),
        ("shop", None, "Purchase", "accepted", "backend"),
        ("shop", None, None, "received", "backend"),
    }
    assert all(a[k] == [b[k][0] + 1] for k in grew)
    # The new process counts from zero again and adds to the same minute.
    resp = await second.post("/v1/events", json={"events": [purchase(4)]}, headers=auth())
    assert resp.status == 202
    clock.now = m0 + 60.05
    await flush(second)
    again = await stats(second, **{"from": m0, "to": m0 + 60})
    assert pick(again, "queued", **purchases) == [4]


async def test_retention_deletes_old_minutes(gateway: Any, tmp_path: Path) -> None:
    doc = base_doc(tmp_path)
    doc["audit"] = {"retention_days": 1}
    clock = start_clock()
    now_minute = minute_of(clock())
    client = await gateway(parse_config(doc, {}, tmp_path), clock=clock, run_workers=False)
    store = runtime_of(client).store
    flusher = client.app[ROLLUPS]
    day = 86400
    old, kept = now_minute - day - 60, now_minute - day + 60
    await store.write_stats(
        [
            StatRow(old, "shop", "meta", "Purchase", "delivered", "", 1),
            StatRow(kept, "shop", "meta", "Purchase", "delivered", "", 2),
        ]
    )
    assert await flusher.compact() == 1
    body = await stats(client, **{"from": old, "to": kept + 60, "step": 3600})
    assert sum(pick(body, "delivered", site="shop", destination="meta", event="Purchase")) == 2


async def test_rollups_off_write_nothing(gateway: Any, tmp_path: Path) -> None:
    doc = base_doc(tmp_path)
    doc["audit"] = {"rollups": False}
    clock = start_clock()
    client = await gateway(parse_config(doc, {}, tmp_path), clock=clock, run_workers=False)
    assert ROLLUPS not in client.app
    resp = await client.post("/v1/events", json={"events": [purchase(1)]}, headers=auth())
    assert resp.status == 202
    await client.close()
    again = await gateway(parse_config(doc, {}, tmp_path), clock=clock, run_workers=False)
    body = await stats(again)
    assert body["series"] == []
    assert body["latency"] == []
    assert len(body["times"]) == 61  # by default the last hour, through the current minute


async def test_stats_require_the_admin_token(make_config: Any, gateway: Any) -> None:
    client = await gateway(make_config(), clock=start_clock(), run_workers=False)
    assert (await client.get("/v1/admin/stats")).status == 401
    for token in ("wrong-token", API_KEY):
        resp = await client.get("/v1/admin/stats", headers=auth(token))
        assert resp.status == 401
        assert (await resp.json())["error"] == "unauthorized"
    assert (await client.get("/v1/admin/stats", headers=auth(ADMIN_TOKEN))).status == 200
    await client.close()
    off = await gateway(make_config(server={"admin_token": None}), run_workers=False)
    assert (await off.get("/v1/admin/stats", headers=auth(ADMIN_TOKEN))).status == 403


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"site": "blog"}, "site"),
        ({"destination": "tiktok"}, "destination"),
        ({"site": "shop", "destination": "snap"}, "destination"),
        ({"metric": "delivered,nope"}, "metric"),
        ({"step": "90"}, "step"),
        ({"step": "0"}, "step"),
        ({"step": "abc"}, "step"),
        ({"from": "yesterday"}, "from"),
        ({"to": "nan"}, "to"),
        ({"to": "-5"}, "to"),
        ({"from": "2030-01-02T00:00:00Z", "to": "2030-01-01T00:00:00Z"}, "to"),
        ({"from": "0", "to": "1000000"}, "step"),  # 16,667 minutes: too many steps
    ],
)
async def test_bad_parameters_are_named(
    make_config: Any, gateway: Any, params: dict[str, str], path: str
) -> None:
    client = await gateway(make_config(), clock=start_clock(), run_workers=False)
    resp = await client.get("/v1/admin/stats", params=params, headers=auth(ADMIN_TOKEN))
    assert resp.status == 400
    body = await resp.json()
    assert [e["path"] for e in body["errors"]] == [path], body


async def test_iso_times_and_defaults(make_config: Any, gateway: Any) -> None:
    clock = start_clock()
    client = await gateway(make_config(), clock=clock, run_workers=False)
    body = await stats(client, **{"from": "2030-01-01T00:00:30", "to": "2030-01-01T01:00:00+00:00"})
    start = 1_893_456_000  # 2030-01-01T00:00:00Z
    assert (body["from"], body["to"]) == (start, start + 3600)
    assert len(body["times"]) == 60
    default = await stats(client)
    now = int(clock())
    assert default["to"] >= now > default["from"] >= now - 3600 - 60
    assert (default["site"], default["destination"]) == (None, None)


async def test_a_big_flush_goes_in_chunks_and_a_failed_chunk_waits(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows go WRITE_CHUNK at a time; when the store refuses one chunk, the chunks written
    stay written and the rest goes with the next flush, nothing twice."""
    monkeypatch.setattr(rollups_module, "WRITE_CHUNK", 3)
    m0 = minute_of(shop.clock())
    store = runtime_of(shop.client).store
    real = store.write_stats
    sizes: list[int] = []
    fail_at = [2]

    async def flaky(rows: Any) -> None:
        sizes.append(len(rows))
        if len(sizes) == fail_at[0]:
            raise OSError("disk full")
        await real(rows)

    monkeypatch.setattr(store, "write_stats", flaky)
    await play(shop)
    shop.clock.now = m0 + 60.05
    written = await flush(shop.client)
    assert written == 3 + 1  # the first chunk (the second failed) and the store's pair row
    assert sizes == [3, 3]
    left = len(client_flusher(shop).rollup.rows())
    assert left > 3
    fail_at[0] = 0
    assert await flush(shop.client) == left  # nothing new booked: the rest, once
    assert sizes[2:] == [3] * (left // 3) + ([left % 3] if left % 3 else [])
    body = await stats(shop.client, site="shop", **{"from": m0, "to": m0 + 60})
    assert pick(body, "received", site="shop", destination=None, detail="backend") == [8]
    assert pick(body, "queued", site="shop", destination="meta", event="Purchase") == [4]
    assert client_flusher(shop).rollup.rows() == []


def client_flusher(shop: Shop) -> Any:
    return shop.client.app[ROLLUPS]


async def test_the_flusher_writes_on_its_own_ticks(gateway: Any, tmp_path: Path) -> None:
    """Real clock, `flush_seconds = 1`: rows reach the store without a hand flush, and the
    first tick runs the retention compaction too."""
    doc = base_doc(tmp_path)
    doc["audit"] = {"flush_seconds": 1, "retention_days": 1}
    client = await gateway(parse_config(doc, {}, tmp_path), run_workers=False)
    store = runtime_of(client).store
    now = minute_of(time.time())
    ancient = now - 3 * 86400
    await store.write_stats([StatRow(ancient, "shop", "meta", "Purchase", "delivered", "", 1)])
    resp = await client.post("/v1/events", json={"events": [purchase(1)]}, headers=auth())
    assert resp.status == 202
    query = StatsQuery(now - 120, now + 180)
    deadline = time.monotonic() + 15
    found: list[StatRow] = []
    old: list[StatRow] = []
    while time.monotonic() < deadline:
        found = [r for r in await store.read_stats(query) if r.metric == "queued"]
        old = await store.read_stats(StatsQuery(ancient, ancient + 60))
        if found and not old:
            break
        await asyncio.sleep(0.05)
    assert [(r.destination, r.event, r.value) for r in found] == [("meta", "Purchase", 1)]
    assert old == []


async def test_two_processes_on_one_store_book_each_duplicate_once(
    gateway: Any, tmp_path: Path
) -> None:
    """Two gateways on one SQLite file (as `run --workers 2`): duplicates posted to either are
    counted once by the store, and the dedup_pair figure both answer is the number of
    duplicates sent, not twice it, before and after both flush, and after more of them."""
    config = parse_config(base_doc(tmp_path), {}, tmp_path)
    clock = start_clock()
    m0 = minute_of(clock())
    one = await gateway(config, clock=clock, run_workers=False)
    two = await gateway(config, clock=clock, run_workers=False)
    pair = {"site": "shop", "destination": "meta", "detail": "api+api"}
    window = {"metric": "dedup_pair", "from": m0, "to": m0 + 120}

    async def post(client: Client, *orders: int) -> None:
        events = [purchase(i) for i in orders]
        resp = await client.post("/v1/events", json={"events": events}, headers=auth())
        assert resp.status == 202

    await post(one, 1, 2)
    await post(two, 1)  # a duplicate at meta, counted by the shared store
    await post(one, 1, 2)  # two more
    sent = 3
    for client in (one, two):  # not flushed yet: the dashboard's window shows the unbooked
        rows = await client.app[ROLLUPS].window(StatsQuery(m0, m0 + 120))
        assert sum(r.value for r in rows if r.metric == "dedup_pair") == sent
    clock.now = m0 + 60.05
    await asyncio.gather(flush(one), flush(two))  # both flush after the same duplicates
    await flush(one)
    for client in (one, two):
        assert pick(await stats(client, **window), "dedup_pair", **pair) == [sent, 0]
    await post(two, 2)
    sent += 1
    clock.now = m0 + 120.05
    await flush(two)
    await flush(one)
    for client in (one, two):
        body = await stats(client, **window)
        assert pick(body, "dedup_pair", **pair) == [sent - 1, 1]
        assert [s["metric"] for s in body["series"]] == ["dedup_pair"]
    counts = await runtime_of(one).store.dedup_counts()
    assert counts == {("shop:meta", "api+api"): sent}
