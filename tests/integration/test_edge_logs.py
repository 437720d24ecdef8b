"""Refusals of the HTTP layer are logged as one line with a reason, and no log line (aiohttp's
own loggers included) carries the refused request's bytes or header values."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import API_KEY
from rawhttp import LaneClient

from gateway.telemetry import KeyValueFormatter

HOST = "www.shop.test"
PLANTED = (
    "planted.person@example.test",
    "+15551234567",
    "sk_live_PLANTEDAPIKEY",
    "adm-PLANTED-TOKEN",
)
EMAIL, PHONE, KEY, TOKEN = PLANTED

BAD_REQUESTS = [
    pytest.param(
        f"GET /a HTTP/1.1\r\nHost: {HOST}\r\nX-Api-Key {KEY}\r\n\r\n", id="header-without-colon"
    ),
    pytest.param(f"GET /mailto:{EMAIL} HTTP/1.1 junk\r\nHost: {HOST}\r\n\r\n", id="bad-line"),
    pytest.param(f"G@T /{EMAIL} HTTP/1.1\r\nHost: {HOST}\r\n\r\n", id="bad-method"),
    pytest.param(
        f"GET /a HTTP/1.1\r\nHost: {HOST}\r\nX-Long: {PHONE}{'a' * 9000}\r\n\r\n", id="long-field"
    ),
    pytest.param(f"GET /a HTTP/1.1\r\nHost: {HOST}\r\nX-A: 1\r\n {TOKEN}\r\n\r\n", id="obs-fold"),
    pytest.param(
        f"POST /v1/events HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {KEY}\r\n"
        "Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        id="duplicate-content-length",
    ),
    pytest.param(
        f"POST /e HTTP/1.1\r\nHost: {HOST}\r\nX-Phone: {PHONE}\r\n"
        "Transfer-Encoding: chunked\r\n\r\nzz\r\n{EMAIL}\r\n0\r\n\r\n",
        id="bad-chunk",
    ),
    pytest.param(
        f"GET /a HTTP/1.1\r\nHost: {HOST}\r\nX-Bad: {TOKEN}\x01\r\n\r\n", id="control-in-value"
    ),
    pytest.param(
        f"GET /a HTTP/1.1\r\nHost: {HOST}\r\nX-Sp : {TOKEN}\r\n\r\n", id="space-before-colon"
    ),
]


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def every_record() -> Iterator[Collect]:
    handler = Collect()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


def lines_of(records: list[logging.LogRecord]) -> list[str]:
    """Every record as the CLI prints it and as a default formatter would (with tracebacks)."""
    plain = logging.Formatter("%(name)s %(levelname)s %(message)s")
    out = []
    for record in records:
        out.append(KeyValueFormatter().format(record))
        out.append(plain.format(record))
        out.append(repr(record.__dict__))
    return out


@pytest.fixture
async def edge(make_config: Any, gateway: Any) -> LaneClient:
    client = await gateway(make_config(site={"hosts": [HOST]}), run_workers=False)
    return LaneClient(client)


async def send_raw(edge: LaneClient, data: bytes) -> int:
    """Send bytes, read the answer until the server closes; return its status."""
    conn = await edge.connect()
    try:
        await conn.send(data)
        answer = await asyncio.wait_for(conn.reader.read(), 10)
    finally:
        conn.close()
    assert answer.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), answer[:40]
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("request_text", BAD_REQUESTS)
async def test_refusal_is_one_reason_line_without_request_bytes(
    edge: LaneClient, every_record: Collect, request_text: str
) -> None:
    status = await send_raw(edge, request_text.encode("latin-1"))
    await asyncio.sleep(0.05)  # aiohttp logs after answering
    assert status in (400, 413, 414, 431), status
    refused = [r for r in every_record.records if r.getMessage() == "Request refused."]
    assert len(refused) == 1, [r.getMessage() for r in every_record.records]
    assert refused[0].status == status  # type: ignore[attr-defined]
    assert refused[0].reason  # type: ignore[attr-defined]
    for line in lines_of(every_record.records):
        for planted in PLANTED:
            assert planted not in line, line
        assert "junk" not in line
        assert "\\x01" not in line


async def test_access_lines_keep_no_query_nor_header_values(
    edge: LaneClient, every_record: Collect
) -> None:
    headers = {"Host": HOST, "Referer": f"https://x.test/?e={EMAIL}", "User-Agent": TOKEN}
    # a repeated header: aiohttp answers (and writes its access line)
    resp = await edge.client.get(
        f"/v1/visitors/{EMAIL}?phone={PHONE}", headers={**headers, "X-R": "1"}
    )
    assert resp.status in (404, 405)
    await asyncio.sleep(0.05)
    access = [r for r in every_record.records if r.name == "aiohttp.access"]
    assert access, "aiohttp wrote an access line"
    for line in lines_of(every_record.records):
        for planted in PLANTED:
            assert planted not in line, line


@pytest.mark.parametrize("declared", [True, False])
async def test_oversized_body_is_413_and_one_reason_line(
    edge: LaneClient, every_record: Collect, declared: bool
) -> None:
    body = b'{"events": [], "pad": "' + EMAIL.encode() * 20_000 + b'"}'  # > max_body_bytes
    conn = await edge.connect()
    try:
        framing = (
            f"Content-Length: {len(body)}\r\n" if declared else "Transfer-Encoding: chunked\r\n"
        )
        await conn.send(
            f"POST /v1/events HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"X-Phone: {PHONE}\r\nContent-Type: application/json\r\n{framing}\r\n".encode()
        )
        await conn.send(body if declared else b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        answer = await conn.answer()
    finally:
        conn.close()
    assert answer.status == 413
    refused = [r for r in every_record.records if r.getMessage() == "Request refused."]
    assert [(r.status, r.reason) for r in refused] == [  # type: ignore[attr-defined]
        (413, "body larger than 262144 bytes")
    ]
    for line in lines_of(every_record.records):
        for planted in PLANTED:
            assert planted not in line, line
