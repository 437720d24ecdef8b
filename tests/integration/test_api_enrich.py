"""POST /v1/events with and without visitor profiles: both roads store the same events.

A site without profiles has nothing to enrich, so its typed batches go straight to their
stored form (core.wire.records_from); once a visitor has a profile, batches are built as
Events and enriched from it first.
"""

from __future__ import annotations

import json
from typing import Any

from conftest import auth, runtime_of

ORIGIN = "https://www.shop.test"
HEADERS = {"Host": "track.shop.test", "Origin": ORIGIN, "Content-Type": "text/plain",
           "User-Agent": "UA"}  # fmt: skip


async def visit(client: Any) -> str:
    doc = {"event": "PageView", "url": "https://www.shop.test/?fbclid=X1"}
    resp = await client.post("/e", data=json.dumps(doc), headers=HEADERS)
    assert resp.status == 204
    cookie = next(c for c in resp.headers.getall("Set-Cookie") if c.startswith("_sgv="))
    return cookie.split("=", 1)[1].split(";")[0].rsplit(".", 1)[0]


def purchase(event_id: str, visitor_id: str | None = None) -> dict[str, Any]:
    user: dict[str, Any] = {"email": "Jane@Example.com", "ip": "203.0.113.9", "user_agent": "UA"}
    if visitor_id is not None:
        user["visitor_id"] = visitor_id
    return {
        "event": "Purchase",
        "event_id": event_id,
        "url": "https://www.shop.test/thanks",
        "user": user,
        "data": {"value": 10, "currency": "eur", "contents": [{"id": "A", "quantity": 2}]},
    }


async def stored(client: Any) -> dict[str, dict[str, Any]]:
    leased = await runtime_of(client).store.lease("shop:meta", 100, 9e9, 30)
    return {json.loads(d.record)["id"]: json.loads(d.record) for d in leased}


async def test_batches_before_and_after_the_first_profile(make_config: Any, gateway: Any) -> None:
    site = {"hosts": ["track.shop.test"], "allowed_origins": [ORIGIN]}
    client = await gateway(make_config(site=site), run_workers=False)
    pipeline = runtime_of(client).pipeline
    roads: list[str] = []
    for name in ("prepare_stored", "prepare_wire"):
        real = getattr(pipeline, name)

        def spy(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            roads.append(_name)
            return _real(*args, **kwargs)

        setattr(pipeline, name, spy)
    assert not await pipeline.needs_enrich(runtime_of(client).sites[0])
    compact = json.dumps({"events": [purchase("p-1"), purchase("p-2")]}, separators=(",", ":"))
    resp = await client.post("/v1/events", data=compact, headers=auth())
    assert resp.status == 202
    assert await resp.json() == {"accepted": 2, "deduplicated": 0, "rejected": []}
    assert roads == ["prepare_stored"]

    vid = await visit(client)
    assert await pipeline.needs_enrich(runtime_of(client).sites[0])
    resp = await client.post(
        "/v1/events", json={"events": [purchase("p-3", vid), purchase("p-4")]}, headers=auth()
    )
    assert resp.status == 202
    assert roads == ["prepare_stored", "prepare_wire"]
    records = await stored(client)
    assert records["p-1"]["u"] == records["p-4"]["u"]  # same event, either road
    assert records["p-1"]["d"] == {
        "value": 10.0,
        "currency": "EUR",
        "contents": [["A", 2, None]],
    }
    assert records["p-3"]["u"]["vid"] == vid
    assert records["p-3"]["u"]["fbc"].endswith(".X1")  # enriched from the visitor's profile
    assert "fbc" not in records["p-1"]["u"]
