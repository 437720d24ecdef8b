"""The conversion gap and `signalgate audit` name exactly the orders a test hid from a platform.

One shop, two platforms: Meta (its sandbox refuses two orders by id: dead letters; its `events`
list takes Purchase only, so an `order_paid` order is routed away) and TikTok (down: every order
waits). One order states denied consent. `GET /v1/admin/gap` and `signalgate audit` must list
exactly those orders per platform, each with its reason; the other orders are delivered.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    ACCESS_TOKEN,
    ADMIN_TOKEN,
    API_KEY,
    PIXEL_ID,
    FakeClock,
    auth,
    base_doc,
    runtime_of,
)

from gateway.cli import main
from gateway.config import Config, parse
from gateway.core.audit import Verdict, checks

TIKTOK_TOKEN = "tiktok-gap-token"
TIKTOK_PIXEL = "CABCDEFGHIJ1234567KL"
DOWN = "http://127.0.0.1:9"
HOST = "www.shop.example"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DENIED = {"ad_storage": False, "analytics_storage": False, "ad_user_data": False}
REJECTED = {"order-1", "order-2"}


def config(tmp_path: Path, meta_base: str) -> Config:
    doc = copy.deepcopy(base_doc(tmp_path, meta_base))
    site = doc["sites"][0]
    site["order_events"] = ["Purchase", "order_paid"]
    site["destinations"]["meta"]["events"] = ["Purchase"]
    site["destinations"]["tiktok"] = {
        "pixel_code": TIKTOK_PIXEL,
        "access_token": TIKTOK_TOKEN,
        "api_base": DOWN,
    }
    return parse(doc, {}, tmp_path)


def cli_config(tmp_path: Path) -> Path:
    """The same gateway as the CLI reads it: its admin token and its sites."""
    path = tmp_path / "signalgate.toml"
    path.write_text(
        f'[server]\nadmin_token = "{ADMIN_TOKEN}"\n'
        f'[storage]\npath = "{tmp_path / "cli.db"}"\n'
        f'[[sites]]\nid = "shop"\napi_keys = ["{API_KEY}"]\n'
        f'[sites.destinations.meta]\npixel_id = "{PIXEL_ID}"\naccess_token = "{ACCESS_TOKEN}"\n'
    )
    return path


def order(i: int, name: str = "Purchase", **extra: Any) -> dict[str, Any]:
    return {
        "event": name,
        "url": f"https://shop.example/thanks/{i}",
        "user": {"email": f"buyer.{i}@example.com", "ip": "203.0.113.7", "user_agent": "UA/1"},
        "data": {"value": 10 + i, "currency": "EUR", "order_id": f"order-{i}"},
        **extra,
    }


async def hide_orders(client: Any, sandbox: Any) -> None:
    """Post the orders and let each platform answer once."""
    sandbox.faults.reject_event_ids = set(REJECTED)
    events = [order(i) for i in (0, 1, 2, 5, 6, 7, 8, 9)]
    events.append(order(3, consent=DENIED))
    events.append(order(4, "order_paid"))
    events.append({"event": "PageView", "url": "https://shop.example/"})  # not an order
    no_id = order(10)
    del no_id["data"]["order_id"]  # a Purchase without an order id is no order either
    events.append(no_id)
    resp = await client.post("/v1/events", json={"events": events}, headers=auth())
    assert resp.status == 202, await resp.text()
    workers = runtime_of(client).workers
    await workers["shop:meta"].drain()
    await workers["shop:tiktok"].drain()  # refused connection: every row waits for a retry


async def gap(client: Any, query: str = "site=shop") -> dict[str, Any]:
    resp = await client.get(f"/v1/admin/gap?{query}", headers=ADMIN)
    assert resp.status == 200, await resp.text()
    doc: dict[str, Any] = await resp.json()
    return doc


async def browser_copy(client: Any, order_id: str) -> None:
    """The loader's copy of an order (same event id), as the shop's page sends it."""
    doc = {
        "event": "Purchase",
        "event_id": order_id,
        "url": f"https://{HOST}/thanks",
        "data": {"value": 10, "currency": "EUR"},
    }
    resp = await client.post(
        "/e",
        data=json.dumps(doc),
        headers={"Host": HOST, "Origin": f"https://{HOST}", "Content-Type": "text/plain"},
    )
    assert resp.status == 204, await resp.text()


def missing(doc: dict[str, Any], destination: str) -> dict[str, dict[str, Any]]:
    return {m["order_id"]: m for m in doc["destinations"][destination]["missing_orders"]}


async def test_the_gap_names_each_hidden_order_with_its_reason(
    tmp_path: Path, gateway: Any, meta_sandbox: Any
) -> None:
    sandbox, base = meta_sandbox
    client = await gateway(config(tmp_path, base), run_workers=False, clock=FakeClock(time.time()))
    await hide_orders(client, sandbox)
    accepted = [e["event_id"] for e in sandbox.recorder.accepted]
    assert len(accepted) == 7  # six orders and the Purchase without an order id
    assert {i for i in accepted if i.startswith("order-")} == {
        f"order-{i}" for i in (0, 5, 6, 7, 8, 9)
    }

    doc = await gap(client)
    assert doc["orders"] == 10
    assert doc["coverage"] == {"email": 1.0, "value": 1.0, "currency": 1.0, "event_id": 1.0}
    meta = doc["destinations"]["meta"]
    assert (meta["orders"], meta["delivered"], meta["missing"], meta["gap"]) == (10, 6, 4, 0.4)
    hidden = missing(doc, "meta")
    assert set(hidden) == {"order-1", "order-2", "order-3", "order-4"}
    for dead in ("order-1", "order-2"):
        assert hidden[dead]["reason"] == "dead_letter"
        assert hidden[dead]["dead_reason"] == "invalid_field"
        assert "rejected by the sandbox" in hidden[dead]["detail"]
    assert hidden["order-3"]["reason"] == "consent_denied"
    assert hidden["order-4"]["reason"] == "routed_away"
    assert meta["fresh"] == 6

    tiktok = doc["destinations"]["tiktok"]
    assert (tiktok["orders"], tiktok["delivered"], tiktok["missing"]) == (10, 0, 10)
    waiting = missing(doc, "tiktok")
    assert waiting.pop("order-3")["reason"] == "consent_denied"
    assert set(waiting) == {f"order-{i}" for i in (0, 1, 2, 4, 5, 6, 7, 8, 9)}
    for entry in waiting.values():
        assert entry["reason"] == "queued", entry
        assert entry["state"] in ("retry", "pending")
    assert any(e["state"] == "retry" and e["attempts"] >= 1 for e in waiting.values())
    assert all("next_try" in e for e in waiting.values() if e["state"] == "retry")
    assert "buyer" not in json.dumps(doc)  # order ids and flags only: no identifier

    # The period bounds the orders; a period before them holds none.
    earlier = await gap(client, f"site=shop&since=0&until={time.time() - 86400}")
    assert earlier["orders"] == 0


async def test_the_gap_endpoint_refuses_bad_requests(
    tmp_path: Path, gateway: Any, meta_sandbox: Any
) -> None:
    _, base = meta_sandbox
    client = await gateway(config(tmp_path, base), run_workers=False)
    resp = await client.get("/v1/admin/gap?site=shop")
    assert resp.status == 401
    for query, path in [
        ("", "site"),
        ("site=shop&since=yesterday", "since"),
        ("site=shop&since=200&until=100", "since"),
        ("site=shop&until=-5", "until"),
        ("site=shop&limit=5", "limit"),
    ]:
        resp = await client.get(f"/v1/admin/gap?{query}", headers=ADMIN)
        assert resp.status == 400, query
        assert [e["path"] for e in (await resp.json())["errors"]] == [path], query
    resp = await client.get("/v1/admin/gap?site=nope", headers=ADMIN)
    assert resp.status == 404
    assert (await resp.json())["errors"] == [{"path": "site", "reason": "not a configured site id"}]


async def test_signalgate_audit_reports_the_hidden_orders_and_fails(
    tmp_path: Path, gateway: Any, meta_sandbox: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox, base = meta_sandbox
    client = await gateway(config(tmp_path, base), run_workers=False, clock=FakeClock(time.time()))
    await hide_orders(client, sandbox)
    url = str(client.make_url("")).rstrip("/")
    path = cli_config(tmp_path)

    status = await asyncio.to_thread(main, ["audit", "--config", str(path), "--url", url])
    text = capsys.readouterr().out
    assert status == 1
    assert "FAIL conversion_gap  meta" in text
    assert "4 of 10 orders missing (40.0%): 1 consent_denied, 2 dead_letter, 1 routed_away" in text
    assert "PASS email_coverage  site" in text
    assert "N/A  dedup           meta" in text  # no browser copies: server-only sending
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("missing meta")]
    assert lines == [
        "missing meta: order order-1 dead_letter (dead_reason=invalid_field detail="
        + lines[0].split("detail=", 1)[1],
        "missing meta: order order-2 dead_letter (dead_reason=invalid_field detail="
        + lines[1].split("detail=", 1)[1],
        "missing meta: order order-3 consent_denied",
        "missing meta: order order-4 routed_away",
    ]

    argv = ["audit", "--config", str(path), "--url", url, "--site", "shop", "--json"]
    status = await asyncio.to_thread(main, [*argv, "--since", "1h"])
    doc = json.loads(capsys.readouterr().out)
    assert status == 1
    assert doc["passed"] is False
    (site,) = doc["sites"]
    verdicts = {(c["check"], c["scope"]): c["verdict"] for c in site["checks"]}
    assert verdicts["conversion_gap", "meta"] == "FAIL"
    assert verdicts["conversion_gap", "tiktok"] == "FAIL"
    assert verdicts["order_fields", "site"] == "PASS"
    assert verdicts["freshness", "meta"] == "PASS"
    assert verdicts["freshness", "tiktok"] == "N/A"
    hidden = {
        m["order_id"]: m["reason"] for m in site["gap"]["destinations"]["meta"]["missing_orders"]
    }
    assert hidden == {
        "order-1": "dead_letter",
        "order-2": "dead_letter",
        "order-3": "consent_denied",
        "order-4": "routed_away",
    }

    # A period without orders judges nothing and passes.
    status = await asyncio.to_thread(main, [*argv, "--since", "0", "--until", "1000"])
    assert status == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True


async def test_signalgate_audit_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = cli_config(tmp_path)
    dead_url = "http://127.0.0.1:9"
    assert main(["audit", "--config", str(path), "--site", "nope", "--url", dead_url]) == 2
    assert "--site: no site 'nope'" in capsys.readouterr().err
    assert main(["audit", "--config", str(path), "--url", dead_url]) == 2
    assert "GET /v1/admin/gap failed" in capsys.readouterr().err
    assert main(["audit", "--config", str(tmp_path / "missing.toml")]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["audit"])
    assert exc.value.code == 2


async def test_without_routing_rules_every_order_is_in_the_ledger(
    make_config: Any, gateway: Any, meta_sandbox: Any
) -> None:
    """No `events` lists: orders take the plain append (typed fast path, and the parsed path
    for a consent-denied one); a backend retry of the same order is deduplicated, not counted
    twice."""
    sandbox, base = meta_sandbox
    site = {"hosts": [HOST], "allowed_origins": [f"https://{HOST}"]}
    config = make_config(base, site=site)
    client = await gateway(config, run_workers=False, clock=FakeClock(time.time()))
    sandbox.faults.reject_event_ids = {"order-2"}
    await browser_copy(client, "order-0")  # the pixel's copy first: the backend's is paired
    first = [order(i) for i in range(3)]
    for events in (first, [order(3, consent=DENIED)], first[:1]):
        resp = await client.post("/v1/events", json={"events": events}, headers=auth())
        assert resp.status == 202, await resp.text()
    await browser_copy(client, "order-1")  # the backend's first: the browser's pairs it
    await runtime_of(client).workers["shop:meta"].drain()
    doc = await gap(client)
    meta = doc["destinations"]["meta"]
    assert (doc["orders"], meta["delivered"], meta["gap"]) == (4, 2, 0.5)
    assert (meta["sent"], meta["paired"]) == (3, 2)
    dedup = next(c for c in checks(doc) if (c.name, c.scope) == ("dedup", "meta"))
    assert (dedup.verdict, dedup.figure) == (Verdict.FAIL, 0.6667)  # the pixel missed order-2
    assert {m["order_id"]: m["reason"] for m in meta["missing_orders"]} == {
        "order-2": "dead_letter",
        "order-3": "consent_denied",
    }
    assert sorted(e["event_id"] for e in sandbox.recorder.accepted) == ["order-0", "order-1"]


async def test_an_empty_order_events_list_keeps_no_ledger(
    make_config: Any, gateway: Any, meta_sandbox: Any
) -> None:
    _, base = meta_sandbox
    client = await gateway(make_config(base, site={"order_events": []}), run_workers=False)
    resp = await client.post("/v1/events", json={"events": [order(1)]}, headers=auth())
    assert resp.status == 202
    assert await runtime_of(client).store.counts()  # the event itself is stored
    doc = await gap(client)
    assert (doc["orders"], doc["destinations"]["meta"]["orders"]) == (0, 0)
