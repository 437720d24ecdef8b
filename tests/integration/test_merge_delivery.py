"""Browser and backend copies of one order merge into one delivery; reloads never re-send."""

from __future__ import annotations

import json
import random
import time
from typing import Any
from urllib.parse import urlencode

from conftest import FakeClock, auth, runtime_of

ORIGIN = "https://www.shop.test"
HEADERS = {"Host": "track.shop.test", "Origin": ORIGIN, "Content-Type": "text/plain",
           "User-Agent": "Mozilla/5.0 (merge test)"}  # fmt: skip


def browser_copy(i: int) -> str:
    return json.dumps({
        "event": "Purchase",
        "url": f"https://www.shop.test/thank-you?order={i}&fbclid=Click{i}",
        "data": {"value": 1, "currency": "EUR", "order_id": f"order-{i}"},
    })  # fmt: skip


def pixel_hit(i: int) -> str:
    """A Meta pixel /tr hit for the order, as fbevents.js sends it through the gateway."""
    query = urlencode({
        "id": "1234567890", "ev": "Purchase", "eid": f"order-{i}",
        "dl": f"https://www.shop.test/thank-you?order={i}&fbclid=Click{i}",
        "cd[value]": "1", "cd[currency]": "EUR", "cd[order_id]": f"order-{i}",
    })  # fmt: skip
    return f"/p/m/tr?{query}"


def backend_copy(i: int) -> dict[str, Any]:
    return {"events": [{
        "event": "Purchase", "source": "website", "url": f"https://www.shop.test/o/{i}",
        "user": {"email": f"buyer{i}@example.com", "ip": "10.0.0.1"},
        "data": {"value": 40 + i, "currency": "USD", "order_id": f"order-{i}",
                 "contents": [{"id": "SKU", "quantity": 1, "price": 40 + i}]},
    }]}  # fmt: skip


async def test_200_orders_from_browser_and_backend_deliver_once_with_the_union(
    make_config: Any, gateway: Any, meta_sandbox: Any
) -> None:
    sandbox, base = meta_sandbox
    rng = random.Random(7)
    # The sandbox checks event times against the real clock: start in the past so that the
    # ~7 minutes this test advances never reach the future.
    clock = FakeClock(time.time() - 900)
    config = make_config(
        base,
        site={
            "hosts": ["track.shop.test"],
            "allowed_origins": [ORIGIN],
            # Pixel hits go to an upstream that is down: the browser gets 502, the mirror runs.
            "proxy": {"enabled": True, "meta_hits_upstream": "http://127.0.0.1:9"},
        },
        delivery={"merge_seconds": 5.0},
        meta={"max_batch": 500},
    )
    client = await gateway(config, run_workers=False, clock=clock)
    for i in range(200):
        first_browser = rng.random() < 0.5
        for step in range(2):
            if (step == 0) == first_browser and i % 2 == 0:
                resp = await client.post("/e", data=browser_copy(i), headers=HEADERS)
                assert resp.status == 204, await resp.text()
            elif (step == 0) == first_browser:
                resp = await client.get(pixel_hit(i), headers=HEADERS)
                assert resp.status == 502, await resp.text()
            else:
                resp = await client.post("/v1/events", json=backend_copy(i), headers=auth())
                assert resp.status == 202, await resp.text()
            clock.advance(rng.uniform(0.0, 2.0))
    clock.advance(10)
    worker = runtime_of(client).workers["shop:meta"]
    await worker.drain()
    purchases = [e for e in sandbox.recorder.accepted if e["event_name"] == "Purchase"]
    dead = await runtime_of(client).store.dead_letters("shop:meta", 5)
    assert dead == [], dead
    assert sorted(e["event_id"] for e in purchases) == sorted(f"order-{i}" for i in range(200))
    for event in purchases:
        i = int(event["event_id"].split("-")[1])
        user = event["user_data"]
        assert user["fbc"].endswith(f".Click{i}"), "the browser's click id is kept"
        assert "em" in user, "the backend's e-mail is kept"
        assert user["client_ip_address"] == "127.0.0.1", "the browser's address wins"
        assert event["custom_data"]["value"] == 40 + i, "the backend's value wins"
        assert event["custom_data"]["currency"] == "USD"

    # Thank-you page reloads after delivery: counted, never sent again.
    for i in range(50):
        resp = await client.post("/e", data=browser_copy(i), headers=HEADERS)
        assert resp.status == 204
    clock.advance(10)
    await worker.drain()
    assert len([e for e in sandbox.recorder.accepted if e["event_name"] == "Purchase"]) == 200
    counts = await runtime_of(client).store.dedup_counts()
    assert sum(n for (route, _), n in counts.items() if route == "shop:meta") == 250
    # Even orders came from the loader, odd ones from the pixel; a reload duplicates the merged
    # (backend + loader) delivery, so it counts as that pair too.
    assert counts[("shop:meta", "api+loader")] == 100 + 50
    assert counts[("shop:meta", "api+pixel")] == 100
