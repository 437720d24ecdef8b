"""Parity of the fast lane and aiohttp: the same request head gets the same status and the same
connection fate (kept alive or closed) from a gateway with the lane and from the same app served
by aiohttp alone. Hypothesis generates the heads, including the known trouble: bare-LF lines,
missing or repeated Host, `Connection: keep-alive, close`, header counts around aiohttp's
limit, obs-fold, repeated or malformed Content-Length, whitespace before the colon, controls
and non-ASCII bytes in values."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from conftest import API_KEY, base_doc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.app import create_app
from gateway.config import parse

HOST = "www.shop.test"
ORIGIN = "https://www.shop.test"
EVENTS = json.dumps(
    {"events": [{"event_name": "Lead", "event_id": "e-1", "event_time": 1_700_000_000,
                 "action_source": "website", "user": {"email": "a@b.test"}}]}
).encode()  # fmt: skip
PAGE = json.dumps({"event": "PageView", "url": "https://www.shop.test/"}).encode()


def config(tmp_path: Path, name: str) -> Any:
    doc = base_doc(tmp_path / name)
    (tmp_path / name).mkdir()
    doc["sites"][0].update({"hosts": [HOST], "allowed_origins": [ORIGIN]})
    return parse(doc, {}, tmp_path)


@pytest.fixture
async def servers(gateway: Any, tmp_path: Path) -> AsyncIterator[tuple[int, int]]:
    """Ports of the gateway with its fast lane and of the same app on plain aiohttp."""
    lane = await gateway(config(tmp_path, "lane"), run_workers=False)
    plain = TestServer(create_app(config(tmp_path, "plain"), run_workers=False), host="127.0.0.1")
    await plain.start_server()
    try:
        yield lane.port, plain.port
    finally:
        await plain.close()


async def read_answer(reader: asyncio.StreamReader) -> int | None:
    """The status of the next answer (its body read), None if the connection closed first."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    await asyncio.wait_for(reader.readexactly(length), 5)
    return int(lines[0].split(" ")[1])


async def fate(port: int, data: bytes) -> tuple[int | None, int | None]:
    """Status of the answer to `data`, then of a plain follow-up request (None: closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        first = await read_answer(reader)
        if first is None:
            return None, None
        try:
            writer.write(f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            await writer.drain()
        except ConnectionError:
            return first, None
        try:
            return first, await read_answer(reader)
        except ConnectionError:
            return first, None
    finally:
        writer.close()


# --- generated heads --------------------------------------------------------------------------

TOKEN = st.text("abcdefghijklmnopqrstuvwxyz-ABCXYZ0123456789", min_size=1, max_size=12)
VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)
WEIRD_VALUE = st.sampled_from(["a\x01b", "caf\xe9", "x\x7f", "\t", " padded ", ""])
ROUTES = st.sampled_from(
    [
        ("POST", "/v1/events", EVENTS, True),
        ("POST", "/v1/events", b"{}", True),
        ("POST", "/e", PAGE, False),
        ("GET", "/healthz", b"", False),
    ]
)


TROUBLES = (
    "no-host", "two-hosts", "empty-host", "http/1.0", "http/1.2", "lower-method", "put",
    "cl-missing", "cl-twice", "cl-twice-differ", "cl-plus", "cl-space", "cl-hex",
    "close", "keep-alive", "keep-alive, close", "Close", "close, keep-alive", "upgrade",
    "keep-alive,close", "closed", "pad-127", "pad-128", "pad-129", "pad-140", "obs-fold",
    "space-colon", "tab-colon", "weird-value", "no-colon", "repeat-id", "lf", "mixed-lf",
    "no-auth", "expect", "chunked", "gzip-body",
)  # fmt: skip
"""Deviations from a clean request; each example takes up to two. Not among them: a body longer
than its Content-Length (the rest is a garbage request pipelined behind a valid one). There the
two differ on purpose: aiohttp's parser refuses the whole read, so the valid request before the
garbage is never answered (400, close); the lane answers it, then hands the garbage to aiohttp
(400, close)."""


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    method, target, body, keyed = draw(ROUTES)
    trouble = set(draw(st.lists(st.sampled_from(TROUBLES), max_size=2, unique=True)))
    if "lower-method" in trouble:
        method = method.lower()
    if "put" in trouble:
        method = "PUT"
    version = "HTTP/1.0" if "http/1.0" in trouble else "HTTP/1.2" if "http/1.2" in trouble else ""
    fields: list[tuple[str, str]] = []
    if "no-host" not in trouble:
        fields.append(("Host", "" if "empty-host" in trouble else HOST))
    if "two-hosts" in trouble:
        fields.append(("Host", HOST))
    if keyed and "no-auth" not in trouble:
        fields.append(("Authorization", f"Bearer {API_KEY}"))
    if target == "/e":
        fields += [("Origin", ORIGIN), ("Content-Type", "text/plain")]
    elif body:
        fields.append(("Content-Type", "application/json"))
    size = str(len(body))
    if body and "cl-missing" not in trouble and "chunked" not in trouble:
        spelled = {"cl-plus": "+" + size, "cl-space": size + " 1", "cl-hex": hex(len(body))}
        fields.append(("Content-Length", next((spelled[t] for t in trouble if t in spelled), size)))
        if "cl-twice" in trouble:
            fields.append(("Content-Length", size))
        if "cl-twice-differ" in trouble:
            fields.append(("Content-Length", str(len(body) + 1)))
    connection = next((t for t in trouble if t.lower().startswith(("close", "keep", "upg"))), None)
    if connection is not None:
        fields.append(("Connection", connection))
    if "expect" in trouble:
        fields.append(("Expect", "100-continue"))
    if "gzip-body" in trouble:
        fields.append(("Content-Encoding", "gzip"))
    sent = body
    if "chunked" in trouble:
        fields.append(("Transfer-Encoding", "chunked"))
        sent = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    extra = draw(st.lists(st.tuples(TOKEN, VALUE), max_size=3))
    fields += [(f"X-{name}", value) for name, value in extra]
    pads = [int(t[4:]) for t in trouble if t.startswith("pad-")]
    fields += [(f"X-Pad-{i}", "1") for i in range(pads[0] - len(fields) if pads else 0)]
    lines = [f"{name}: {value}" for name, value in fields]
    if "obs-fold" in trouble:
        lines.insert(1, " folded")
    if "space-colon" in trouble:
        lines.append("X-Spaced : 1")
    if "tab-colon" in trouble:
        lines.append("X-Tabbed\t: 1")
    if "weird-value" in trouble:
        lines.append(f"X-Weird: {draw(WEIRD_VALUE)}")
    if "no-colon" in trouble:
        lines.append("X-No-Colon")
    if "repeat-id" in trouble:
        lines += ["X-Request-Id: a", "X-Request-Id: b"]
    ends = ["\r\n"] * (len(lines) + 2)
    if "lf" in trouble:
        ends = ["\n"] * len(ends)
    elif "mixed-lf" in trouble:
        ends[draw(st.integers(0, len(ends) - 1))] = "\n"
    text = f"{method} {target} {version or 'HTTP/1.1'}{ends[0]}"
    text += "".join(line + end for line, end in zip(lines, ends[1:-1], strict=True))
    text += ends[-1]
    return text.encode("latin-1") + sent


@settings(
    max_examples=int(os.environ.get("PARITY_EXAMPLES", "300")),
    derandomize=os.environ.get("PARITY_EXAMPLES") is None,  # CI: the same heads every run
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(head=heads())
async def test_lane_and_aiohttp_give_the_same_answer(servers: tuple[int, int], head: bytes) -> None:
    lane_port, plain_port = servers
    assert await fate(lane_port, head) == await fate(plain_port, head), head


KNOWN = [
    pytest.param(
        b"POST /v1/events HTTP/1.1\nHost: www.shop.test\nContent-Length: 2\n\n{}", id="lf"
    ),
    pytest.param(b"POST /v1/events HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", id="no-host"),
    pytest.param(
        b"POST /v1/events HTTP/1.1\r\nHost: www.shop.test\r\nConnection: keep-alive, close\r\n"
        b"Content-Length: 2\r\n\r\n{}",
        id="keep-alive-close",
    ),
    pytest.param(
        b"POST /v1/events HTTP/1.1\r\nHost: www.shop.test\r\n"
        + b"".join(b"X-%d: 1\r\n" % i for i in range(130))
        + b"Content-Length: 2\r\n\r\n{}",
        id="too-many-headers",
    ),
    pytest.param(
        b"POST /v1/events HTTP/1.1\r\nHost: www.shop.test\r\nX-A: 1\r\n b\r\n"
        b"Content-Length: 2\r\n\r\n{}",
        id="obs-fold",
    ),
    pytest.param(
        b"POST /v1/events HTTP/1.1\r\nHost: www.shop.test\r\nContent-Length: 2\r\n"
        b"Content-Length: 2\r\n\r\n{}",
        id="duplicate-content-length",
    ),
    pytest.param(
        b"POST /v1/events HTTP/1.1\r\nHost : www.shop.test\r\nContent-Length: 2\r\n\r\n{}",
        id="space-before-colon",
    ),
]


@pytest.mark.parametrize("head", KNOWN)
async def test_known_cases_get_the_same_answer(servers: tuple[int, int], head: bytes) -> None:
    lane_port, plain_port = servers
    assert await fate(lane_port, head) == await fate(plain_port, head)
