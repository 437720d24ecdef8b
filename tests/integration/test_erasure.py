"""Erasure: a visitor's profile and undelivered events go; others stay."""

from __future__ import annotations

import json
from typing import Any

from conftest import auth, runtime_of

ORIGIN = "https://www.shop.test"
HEADERS = {"Host": "track.shop.test", "Origin": ORIGIN, "Content-Type": "text/plain",
           "User-Agent": "UA"}  # fmt: skip


async def visit(client: Any, **body: Any) -> str:
    doc = {"event": "PageView", "url": "https://www.shop.test/?fbclid=X1", **body}
    resp = await client.post("/e", data=json.dumps(doc), headers=HEADERS)
    assert resp.status == 204
    cookie = next(c for c in resp.headers.getall("Set-Cookie") if c.startswith("_sgv="))
    return cookie.split("=", 1)[1].split(";")[0].rsplit(".", 1)[0]


async def make(make_config: Any, gateway: Any) -> Any:
    site = {"hosts": ["track.shop.test"], "allowed_origins": [ORIGIN]}
    return await gateway(make_config(site=site), run_workers=False)


async def test_delete_visitor_removes_profile_and_pending_events(
    make_config: Any, gateway: Any
) -> None:
    client = await make(make_config, gateway)
    vid = await visit(client)
    other = await visit(client)
    assert vid != other
    resp = await client.delete(f"/v1/visitors/{vid}", headers=auth())
    assert resp.status == 200
    assert await resp.json() == {"profiles": 1, "deliveries": 1}
    store = runtime_of(client).store
    leased = await store.lease("shop:meta", 10, 9e9, 30)
    assert [json.loads(d.record)["u"]["vid"] for d in leased] == [other]


async def test_erase_by_email_finds_the_identified_visitor(make_config: Any, gateway: Any) -> None:
    client = await make(make_config, gateway)
    ident = {
        "event": "sg:identify",
        "url": "https://www.shop.test/",
        "user": {"email": "Jane@Example.com"},
    }
    resp = await client.post("/e", data=json.dumps(ident), headers=HEADERS)
    assert resp.status == 204
    resp = await client.post("/v1/erase", json={"email": " jane@example.com "}, headers=auth())
    assert resp.status == 200
    assert (await resp.json())["profiles"] == 1


async def test_erase_requires_key_and_valid_fields(make_config: Any, gateway: Any) -> None:
    client = await make(make_config, gateway)
    assert (await client.post("/v1/erase", json={"email": "a@b.co"})).status == 401
    assert (await client.delete("/v1/visitors/x")).status == 401
    bad = await client.post("/v1/erase", json={"mail": "a@b.co"}, headers=auth())
    assert bad.status == 400
    assert (await bad.json())["errors"][0]["path"] == "mail"
    unusable = await client.post("/v1/erase", json={"email": "nope"}, headers=auth())
    assert unusable.status == 400


async def test_unusable_identifiers_are_named_by_the_request_fields(
    make_config: Any, gateway: Any
) -> None:
    """Regression (schemathesis): the errors named the internal `.user.email` paths."""
    client = await make(make_config, gateway)
    resp = await client.post(
        "/v1/erase", json={"email": "0", "external_id": "0" * 300}, headers=auth()
    )
    assert resp.status == 400
    body = await resp.json()
    assert body["message"] == "no usable identifier"
    assert sorted(e["path"] for e in body["errors"]) == ["email", "external_id"]
