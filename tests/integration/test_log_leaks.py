"""The planted e-mail, phone, API key and admin token travel every real HTTP path (fast lane,
aiohttp, errors, refused credentials, a store that cannot write, delivery with retries and dead
letters) with every logger at DEBUG; the suite-wide check (tests/logleak.py) must see records
and no planted value in any of them."""

from __future__ import annotations

import asyncio
import gzip
import json
import sqlite3
import time
from typing import Any

import pytest
from conftest import (
    ACCESS_TOKEN,
    ADMIN_TOKEN,
    API_KEY,
    LEAK_CHECK,
    PLANTED_EMAIL,
    PLANTED_PHONE,
    auth,
    runtime_of,
)

from gateway.store.sqlite import SqliteStore

NOW = int(time.time())
ORIGIN = "https://www.shop.test"
HOST = "track.shop.test"


def planted_event(event_id: str, **user: Any) -> dict[str, Any]:
    return {
        "event": "Purchase",
        "event_id": event_id,
        "time": NOW,
        "url": "https://shop.example/thanks",
        "user": {
            "email": PLANTED_EMAIL,
            "phone": PLANTED_PHONE,
            "ip": "203.0.113.7",
            "user_agent": "Mozilla/5.0 (leak test)",
            **user,
        },
        "data": {"value": 10.5, "currency": "EUR", "order_id": event_id},
    }


RAW_REFUSED = (
    f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\x01\r\n"
    "Content-Length: 2\r\n\r\n{}",
    f"POST /v1/events HTTP/1.1\r\nHost: x\r\nX-Bad header: {PLANTED_EMAIL}\r\n"
    "Content-Length: 2\r\n\r\n{}",
    f"GET /{PLANTED_EMAIL}\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
    f"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: {ADMIN_TOKEN}"
    "\r\n\r\n{}",
    f"GET /v1/debug/recent?phone={PLANTED_PHONE.replace(' ', '%20')} HTTP/1.1\r\nHost: x\r\n"
    f"Cookie: a={PLANTED_PHONE}\x00\r\n\r\n",
)
"""Requests aiohttp's parser refuses; its error text quotes the offending raw line."""


def doc(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


async def test_planted_values_cross_every_path_and_reach_no_log_record(
    make_config: Any, gateway: Any, meta_sandbox: Any, caplog: pytest.LogCaptureFixture
) -> None:
    before = {name: set(kinds) for name, kinds in LEAK_CHECK.catcher.violations.items()}
    seen = LEAK_CHECK.catcher.seen
    sandbox, url = meta_sandbox
    sandbox.faults.reject_event_ids = {"leak-dead"}  # a dead letter with the platform's reason
    sandbox.faults.error_rate = 0.3  # and retries
    config = make_config(url, site={"hosts": [HOST], "allowed_origins": [ORIGIN]})
    client = await gateway(config)
    json_headers = {**auth(), "Content-Type": "application/json"}

    lane = await client.post(
        "/v1/events", data=doc(planted_event("leak-lane")), headers=json_headers
    )
    assert lane.status == 202, await lane.text()
    compressed = await client.post(
        "/v1/events",
        data=gzip.compress(doc(planted_event("leak-aiohttp"), planted_event("leak-dead"))),
        headers={**json_headers, "Content-Encoding": "gzip"},
    )
    assert compressed.status == 202, await compressed.text()
    for body in (
        doc(planted_event("leak-bad", email=PLANTED_EMAIL + PLANTED_PHONE, bogus=PLANTED_EMAIL)),
        doc({"event": PLANTED_EMAIL, "url": PLANTED_PHONE}),
        f"email={PLANTED_EMAIL}&phone={PLANTED_PHONE}".encode(),
        b'{"events": [{"user": {"email": "' + PLANTED_EMAIL.encode() + b'"',
    ):
        for extra in ({}, {"Content-Encoding": "gzip"}):
            data = gzip.compress(body) if extra else body
            resp = await client.post("/v1/events", data=data, headers={**json_headers, **extra})
            assert resp.status in (202, 400, 422), await resp.text()
    for authorization in (
        f"Basic {API_KEY}",
        f"Bearer {API_KEY}x",
        f"Bearer {ADMIN_TOKEN}",
        API_KEY,
    ):
        resp = await client.post(
            "/v1/events",
            data=doc(planted_event("leak-auth")),
            headers={"Authorization": authorization},
        )
        assert resp.status == 401
    for token in (ADMIN_TOKEN, ADMIN_TOKEN + "x", API_KEY):
        resp = await client.get("/v1/debug/recent", headers={"Authorization": f"Bearer {token}"})
        assert resp.status in (200, 401, 403)
    browser = {"Host": HOST, "Origin": ORIGIN, "Content-Type": "text/plain"}
    for hit in (
        {"event": "PageView", "url": f"https://www.shop.test/?email={PLANTED_EMAIL}"},
        {"event": "Lead", "url": "https://www.shop.test/", "user": {"email": PLANTED_EMAIL}},
        {"event": PLANTED_PHONE, "url": PLANTED_EMAIL},
    ):
        resp = await client.post("/e", data=json.dumps(hit), headers=browser)
        assert resp.status < 500

    for raw in RAW_REFUSED:  # refused by the HTTP parser, which quotes the offending line
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        writer.write(raw.encode("latin-1"))
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer.split(b" ", 2)[1] == b"400", answer[:80]
        writer.close()
    refusals = [r for r in caplog.records if r.getMessage() == "Request refused."]
    assert len(refusals) == len(RAW_REFUSED)
    assert {(r.levelname, r.exc_info, r.status) for r in refusals} == {("INFO", None, 400)}

    deadline = time.monotonic() + 20
    wanted = {"leak-lane", "leak-aiohttp"}
    while not wanted <= {e["event_id"] for e in sandbox.recorder.accepted}:
        assert time.monotonic() < deadline, "planted events were not delivered"
        await asyncio.sleep(0.05)
    # Last, once delivered: while the writer is read-only a worker's marks fail as well, and
    # its rows would wait for their lease to expire.
    store = runtime_of(client).store
    assert isinstance(store, SqliteStore)
    writer = store._writer._conn
    assert isinstance(writer, sqlite3.Connection)
    writer.execute("PRAGMA query_only = ON")
    refused = await client.post(
        "/v1/events", data=doc(planted_event("leak-ro")), headers=json_headers
    )
    assert refused.status == 503
    writer.execute("PRAGMA query_only = OFF")

    await client.close()

    assert LEAK_CHECK.catcher.seen > seen, "the leak check captured no record at all"
    after = {name: set(kinds) for name, kinds in LEAK_CHECK.catcher.violations.items()}
    assert after == before, f"new leaks: {LEAK_CHECK.catcher.report()}"
    requests = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert requests, "no httpx request line was logged"
    assert not [line for line in requests if ACCESS_TOKEN in line or "?" in line]
