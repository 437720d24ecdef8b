"""Issue #13: draining the outbox does not pile up garbage that only the cycle collector frees.

The server raises the young-generation GC threshold (gateway/cli.py), so anything the delivery
path leaves in a reference cycle waits for a rare collection, and a deep outbox drained that way
kept every request body sent (bench/drain_rss.py measures the RSS). Here the cycle collector is
off while a route delivers several batches: once the rows are done no httpx request or response
of theirs may still be alive. The test follows the very requests and responses of its platform
through weak references (counting every httpx object in the process would also count those
other tests keep alive on purpose).
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import weakref
from typing import Any

import httpx
from conftest import auth, runtime_of

from gateway.store.base import DeliveryState

EVENTS = 60
BATCH = 10


def purchases(n: int) -> dict[str, Any]:
    now = int(time.time())
    return {
        "events": [
            {
                "event": "Purchase",
                "event_id": f"mem-{i}",
                "time": now,
                "url": "https://shop.example/thanks",
                "user": {"ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (memory test)"},
                "data": {"value": 10.5, "currency": "EUR", "order_id": f"mem-{i}"},
            }
            for i in range(n)
        ]
    }


async def test_delivered_requests_and_answers_are_freed_without_the_cycle_collector(
    gateway: Any, make_config: Any
) -> None:
    sent: list[int] = []
    requests: list[weakref.ref[httpx.Request]] = []
    responses: list[weakref.ref[httpx.Response]] = []

    def platform(request: httpx.Request) -> httpx.Response:
        received = len(json.loads(request.content)["data"])
        sent.append(received)
        response = httpx.Response(200, json={"events_received": received, "fbtrace_id": "t"})
        requests.append(weakref.ref(request))
        responses.append(weakref.ref(response))
        return response

    config = make_config(delivery={"poll_interval": 0.01}, meta={"max_batch": BATCH})
    gc.collect()
    gc.disable()
    try:
        client = await gateway(config, transport=httpx.MockTransport(platform))
        store = runtime_of(client).store
        resp = await client.post("/v1/events", json=purchases(EVENTS), headers=auth())
        assert resp.status == 202, await resp.text()
        deadline = time.monotonic() + 30
        while (await store.counts()).get(("shop:meta", DeliveryState.DONE), 0) < EVENTS:
            assert time.monotonic() < deadline, f"delivered {sum(sent)} of {EVENTS}"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # the worker's next (idle) poll
        assert len(sent) >= EVENTS // BATCH
        assert len(responses) == len(sent)
        assert len(requests) == len(sent)
        assert [r for r in responses if r() is not None] == []
        assert [r for r in requests if r() is not None] == []
    finally:
        gc.enable()
        gc.collect()
