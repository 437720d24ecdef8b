"""Two gateways on one PostgreSQL (`[storage] backend = "postgres"`) behave as one: browser and
backend copies of an order reach different gateways, each order is delivered once, merged."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from typing import Any

from conftest import FakeClock, auth, runtime_of
from pgserver import CuttableProxy, PgServer

from gateway.config import Config
from gateway.core.secret import Secret
from gateway.store.availability import RETRY_AFTER_SECONDS
from gateway.store.postgres import PostgresStore

ORIGIN = "https://www.shop.test"
HEADERS = {"Host": "track.shop.test", "Origin": ORIGIN, "Content-Type": "text/plain",
           "User-Agent": "Mozilla/5.0 (postgres test)"}  # fmt: skip
ORDERS = 120


def browser_copy(i: int) -> str:
    return json.dumps({
        "event": "Purchase",
        "url": f"https://www.shop.test/thank-you?order={i}&fbclid=Click{i}",
        "data": {"value": 1, "currency": "EUR", "order_id": f"order-{i}"},
    })  # fmt: skip


def backend_copy(i: int) -> dict[str, Any]:
    return {"events": [{
        "event": "Purchase", "source": "website", "url": f"https://www.shop.test/o/{i}",
        "user": {"email": f"buyer{i}@example.com", "ip": "10.0.0.1"},
        "data": {"value": 40 + i, "currency": "USD", "order_id": f"order-{i}"},
    }]}  # fmt: skip


def on_postgres(config: Config, dsn: str) -> Config:
    storage = dataclasses.replace(config.storage, backend="postgres", dsn=Secret(dsn), pool_min=1)
    server = dataclasses.replace(config.server, cookie_secret=Secret("cookie-secret-0123456789"))
    return dataclasses.replace(config, storage=storage, server=server)


async def test_two_gateways_on_one_postgres_deliver_each_order_once_merged(
    make_config: Any, gateway: Any, meta_sandbox: Any, pg_dsn: str
) -> None:
    sandbox, base = meta_sandbox
    clock = FakeClock(time.time() - 900)  # the sandbox checks event times against real time
    config = on_postgres(
        make_config(
            base,
            site={"hosts": ["track.shop.test"], "allowed_origins": [ORIGIN]},
            delivery={"merge_seconds": 5.0},
            meta={"max_batch": 50},
        ),
        pg_dsn,
    )
    first = await gateway(config, run_workers=False, clock=clock)
    second = await gateway(config, run_workers=False, clock=clock)
    assert isinstance(runtime_of(first).store, PostgresStore)
    for i in range(ORDERS):
        browser, backend = (first, second) if i % 2 else (second, first)
        posts = [
            browser.post("/e", data=browser_copy(i), headers=HEADERS),
            backend.post("/v1/events", json=backend_copy(i), headers=auth()),
        ]
        if i % 3 == 0:
            posts.reverse()
        for resp in await asyncio.gather(*posts):  # both copies at the same moment
            assert resp.status in (202, 204), await resp.text()
    clock.advance(10)  # past the merge window
    workers = [runtime_of(c).workers["shop:meta"] for c in (first, second)]
    await asyncio.gather(*(w.drain() for w in workers))  # both drain the one outbox together
    purchases = [e for e in sandbox.recorder.accepted if e["event_name"] == "Purchase"]
    assert sorted(e["event_id"] for e in purchases) == sorted(f"order-{i}" for i in range(ORDERS))
    for event in purchases:
        i = int(event["event_id"].split("-")[1])
        user = event["user_data"]
        assert user["fbc"].endswith(f".Click{i}"), "the browser's click id is kept"
        assert "em" in user, "the backend's e-mail is kept"
        assert event["custom_data"]["value"] == 40 + i, "the backend's value wins"
    store = runtime_of(second).store
    counts = await store.dedup_counts()
    assert counts == {("shop:meta", "api+loader"): ORDERS}
    assert await store.dead_letters("shop:meta", 5) == []
    # a reload of a thank-you page after delivery, at either gateway: counted, never re-sent
    for i in range(10):
        resp = await (first, second)[i % 2].post("/e", data=browser_copy(i), headers=HEADERS)
        assert resp.status == 204
    clock.advance(10)
    await asyncio.gather(*(w.drain() for w in workers))
    assert len([e for e in sandbox.recorder.accepted if e["event_name"] == "Purchase"]) == ORDERS
    assert (await store.dedup_counts())[("shop:meta", "api+loader")] == ORDERS + 10


async def test_an_unreachable_database_answers_503_then_recovers_without_a_restart(
    make_config: Any, gateway: Any, pg_server: PgServer, pg_dsn: str, caplog: Any
) -> None:
    caplog.set_level(logging.INFO)
    proxy = CuttableProxy(pg_server.host, pg_server.port)
    await proxy.start()
    database = pg_dsn.rsplit("/", 1)[1]
    config = on_postgres(make_config(), f"postgresql://postgres@127.0.0.1:{proxy.port}/{database}")
    try:
        client = await gateway(config, run_workers=False)
        assert (await client.post("/v1/events", json=backend_copy(1), headers=auth())).status == 202
        await proxy.cut()
        for i in range(3):
            resp = await client.post("/v1/events", json=backend_copy(100 + i), headers=auth())
            assert resp.status == 503, await resp.text()
            assert resp.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
            assert (await resp.json())["message"] == "store unavailable: database unreachable"
        ready = await client.get("/readyz")
        assert ready.status == 503
        assert "store unavailable: database unreachable" in (await ready.json())["problems"]
        await proxy.start()  # the database is back, on the same address
        for _ in range(50):  # the readiness probe reconnects by itself
            ready = await client.get("/readyz")
            if ready.status == 200:
                break
            await asyncio.sleep(0.1)
        assert ready.status == 200, await ready.json()
        resp = await client.post("/v1/events", json=backend_copy(2), headers=auth())
        assert resp.status == 202, await resp.text()
        lines = [r.getMessage() for r in caplog.records if r.name == "signalgate.store"]
        assert lines == ["store unavailable: database unreachable", "store recovered"]
        counts = await runtime_of(client).store.counts()
        assert sum(counts.values()) == 2  # what was refused was not stored
    finally:
        await client.close()  # before its database link goes (the fixture's close is a no-op)
        await proxy.cut()
