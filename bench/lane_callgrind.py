"""Deterministic cost of the fast lane: instructions per request under callgrind.

Wall-clock numbers are unreliable on a shared machine; instruction counts are not. This harness
serves the gateway (fast lane included, no delivery workers) and the fake CDN in one process and
drives keep-alive connections from the same loop: `events` posts one-event `POST /v1/events`
requests, `script` asks for a cached vendor script (`GET /p/s/e.js`, gzip accepted, a cache
HIT). Run it twice under callgrind with different request counts; the difference of the totals
divided by the difference of the counts is the cost per request (start-up cancels out)::

    valgrind --tool=callgrind --callgrind-out-file=/tmp/a.out .venv/bin/python \\
        bench/lane_callgrind.py events 200
    valgrind --tool=callgrind --callgrind-out-file=/tmp/b.out .venv/bin/python \\
        bench/lane_callgrind.py events 1200
    # per request = (total of b - total of a) / 1000  (the "totals:" line of each file)

`python bench/lane_callgrind.py MODE N` alone runs the same load and prints the answers' count.
Never in CI.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

from gateway.app import create_app, make_runner
from gateway.config import PROXY_VENDORS, parse
from gateway.sandbox.cdn import FakeCdn

HOST = "www.shop.test"
KEY = "sg_bench_key_0123456789abcdef"
CONNECTIONS = 16


def event_request(n: int) -> bytes:
    """One realistic Purchase (the shape bench/ingest.py posts), compact JSON."""
    event = {
        "event": "Purchase",
        "event_id": f"evt-{n}",
        "time": int(time.time()) - 60,
        "source": "website",
        "url": f"https://shop.example/checkout/thank-you?order={n}",
        "user": {
            "email": f"Customer.{n}@Example.com",
            "phone": "+1 (650) 555-1212",
            "ip": "203.0.113.7",
            "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0.0.0",
            "fbp": "fb.1.1596403881668.1116446470",
        },
        "data": {"value": 149.85, "currency": "EUR", "order_id": f"ORDER-{n}"},
    }
    body = json.dumps({"events": [event]}, separators=(",", ":")).encode()
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


SCRIPT = f"GET /p/s/e.js HTTP/1.1\r\nHost: {HOST}\r\nAccept-Encoding: gzip\r\n\r\n".encode()


async def answer(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return int(head[9:12])


async def client(port: int, mode: str, numbers: range) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    ok = 0
    for n in numbers:
        writer.write(event_request(n) if mode == "events" else SCRIPT)
        ok += await answer(reader) in (200, 202)
    writer.close()
    return ok


async def main(mode: str, count: int) -> int:
    cdn_runner = web.AppRunner(FakeCdn().app(), access_log=None)
    await cdn_runner.setup()
    cdn_site = web.TCPSite(cdn_runner, "127.0.0.1", 0)
    await cdn_site.start()
    cdn_port = cdn_runner.addresses[0][1]
    base = f"http://127.0.0.1:{cdn_port}"
    with tempfile.TemporaryDirectory() as tmp:
        doc = {
            "storage": {"path": str(Path(tmp) / "outbox.db")},
            "sites": [
                {
                    "id": "shop",
                    "hosts": [HOST],
                    "api_keys": [KEY],
                    "destinations": {
                        "meta": {
                            "pixel_id": "1234567890",
                            "access_token": "EAAbench",
                            "api_base": "http://127.0.0.1:9",
                        }
                    },
                    "proxy": {"enabled": True, **{f"{v}_upstream": base for v in PROXY_VENDORS}},
                }
            ],
        }
        app = create_app(parse(doc, {}, Path(tmp)), run_workers=False)
        runner = make_runner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        if mode == "script":
            await client(port, mode, range(1))  # the miss that fills the cache
        per = count // CONNECTIONS
        done = await asyncio.gather(
            *(client(port, mode, range(i * per, (i + 1) * per)) for i in range(CONNECTIONS))
        )
        await runner.cleanup()
    await cdn_runner.cleanup()
    return sum(done)


if __name__ == "__main__":
    print(asyncio.run(main(sys.argv[1], int(sys.argv[2]))))
