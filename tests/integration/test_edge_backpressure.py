"""Write back-pressure: a client that pipelines requests and never reads its answers cannot make
the gateway buffer them without bound, on the fast lane or on aiohttp after a hand-over."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from gateway.config import PROXY_VENDORS
from gateway.sandbox.cdn import FakeCdn
from gateway.web.fastlane import LANE
from gateway.web.fastlane_server import FastServer

HOST = "www.shop.test"
SCRIPT = "/p/m/en_US/e.js"
SCRIPT_BYTES = 48_000
REQUESTS = 1_500
RSS_GROWTH_MAX = 20 * 1024 * 1024
"""Unbounded, the 1,500 answers would be 1,500 x 48 KB = 72 MB."""


def rss() -> int:
    """This process's resident set size in bytes (/proc/self/status VmRSS)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
async def gw(make_config: Any, gateway: Any, cdn: tuple[FakeCdn, str]) -> Any:
    fake, url = cdn
    fake.faults.update({"oversized": SCRIPT_BYTES, "gzip": False})
    upstreams = {f"{v}_upstream": url for v in PROXY_VENDORS}
    site = {"hosts": [HOST], "proxy": {"enabled": True, **upstreams}}
    client = await gateway(make_config(site=site), run_workers=False)
    warm = await client.get(SCRIPT, headers={"Host": HOST})  # the cache miss fills the cache
    assert warm.status == 200
    assert len(await warm.read()) == SCRIPT_BYTES
    return client


def stalled_client(port: int) -> socket.socket:
    """A non-blocking socket with a tiny receive buffer that is never read (until the end)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def pipeline_without_reading(sock: socket.socket, request: bytes) -> None:
    """Send REQUESTS copies of `request` (as far as the kernel takes them within 10 s)."""
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.sock_sendall(sock, request * REQUESTS), 10)


async def read_answers(sock: socket.socket, count: int) -> int:
    """Read until `count` answers came (each a 200 with SCRIPT_BYTES of body); return them."""
    loop = asyncio.get_running_loop()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    seen = 0
    total = 0
    while seen < count:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 10)
        assert chunk, f"closed after {seen} answers"
        total += len(chunk)
        seen = total // SCRIPT_BYTES  # bodies dominate: a lower bound on the answers read
    return seen


@pytest.mark.parametrize("road", ["lane", "aiohttp"])
async def test_pipelining_client_that_never_reads_is_bounded(gw: Any, road: str) -> None:
    request = f"GET {SCRIPT} HTTP/1.1\r\nHost: {HOST}\r\n".encode()
    if road == "aiohttp":
        request += b"X-Road: a\r\nX-Road: a\r\n"  # a repeated header: the lane hands over
    request += b"\r\n"
    server = gw.server.runner.server
    assert isinstance(server, FastServer)
    lane = gw.app[LANE]
    fast, handed = lane.fast, lane.handed_over
    before = rss()
    sock = stalled_client(gw.port)
    try:
        await pipeline_without_reading(sock, request)
        await asyncio.sleep(1.5)  # the gateway answers what it may
        growth = rss() - before
        assert growth < RSS_GROWTH_MAX, f"RSS grew {growth / 1e6:.1f} MB"
        if road == "lane":
            assert lane.handed_over == handed
            answered = lane.fast - fast
            assert 0 < answered < REQUESTS / 10, answered
            (conn,) = server.front
            buffered = conn._transport.get_write_buffer_size()
            assert buffered < 4 * SCRIPT_BYTES + 256 * 1024, buffered
        else:
            assert lane.handed_over == handed + 1
        # Once the client reads, every answer comes (reading resumed as the buffer drained).
        assert await read_answers(sock, REQUESTS) >= REQUESTS
        if road == "lane":
            assert lane.fast - fast == REQUESTS
    finally:
        sock.close()


async def test_a_client_that_never_reads_is_dropped_after_the_keepalive_timeout(
    make_config: Any, gateway: Any, cdn: tuple[FakeCdn, str]
) -> None:
    fake, url = cdn
    fake.faults.update({"oversized": SCRIPT_BYTES, "gzip": False})
    upstreams = {f"{v}_upstream": url for v in PROXY_VENDORS}
    site = {"hosts": [HOST], "proxy": {"enabled": True, **upstreams}}
    config = make_config(site=site, server={"keepalive_seconds": 0.5})
    client = await gateway(config, run_workers=False)
    assert (await client.get(SCRIPT, headers={"Host": HOST})).status == 200
    server = client.server.runner.server
    sock = stalled_client(client.port)
    try:
        await pipeline_without_reading(
            sock, f"GET {SCRIPT} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
        )
        await asyncio.sleep(0.2)
        assert len(server.front) == 1  # stalled: writing paused, reading paused
        for _ in range(100):  # aborted within about 1.5 keep-alive timeouts
            await asyncio.sleep(0.1)
            if not server.front:
                break
        assert not server.front
    finally:
        sock.close()
