"""Http1Transport (gateway/delivery/http1.py) against real local servers.

Differential: the same requests through httpx's default transport and through Http1Transport
reach an echo server byte for byte alike and come back alike (status, headers, decoded body,
gzip and chunked answers included). Then the wire cases: keep-alive reuse, a server that closes,
a truncated body, timeouts, a refused connection, a bounded pool, HTTPS with a local CA, and a
header that would split the request.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from gateway.delivery.exchange import make_client
from gateway.delivery.http1 import Http1Transport
from gateway.devcerts import write_dev_certs

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def echo(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    seen = {
        "method": request.method,
        "path": request.raw_path,
        "headers": [[k, v] for k, v in request.headers.items()],
        "body": body.decode("latin-1"),
    }
    doc = json.dumps(seen).encode()
    mode = request.query.get("mode")
    if mode == "gzip":
        return web.Response(
            body=gzip.compress(doc),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )
    if mode == "chunked":
        response = web.StreamResponse(status=207, headers={"X-Answer": "chunks"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(0, len(doc), 7):
            await response.write(doc[i : i + 7])
        await response.write_eof()
        return response
    if mode == "empty":
        return web.Response(status=204, headers={"Retry-After": "3"})
    return web.Response(
        body=doc, status=int(request.query.get("status", "200")), content_type="application/json"
    )


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def requests(base: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, url, build_request keywords) of each request; fresh streams every call."""
    body = json.dumps({"events": [{"name": "purchase", "value": 12.5, "name_ü": "ß"}]})
    return [
        (
            "POST",
            f"{base}/mp/collect",
            {
                "params": {"measurement_id": "G-X1", "api_secret": "s e/c+r"},
                "content": body.encode(),
                "headers": {"content-type": "application/json", "Authorization": "Bearer t"},
            },
        ),
        ("GET", f"{base}/v1/path%20x?q=1&q=2", {"headers": {"X-Many": "a, b"}}),
        ("POST", f"{base}/gz", {"params": {"mode": "gzip"}, "content": b"x" * 100_000}),
        ("POST", f"{base}/ch", {"params": {"mode": "chunked"}, "content": b"[]"}),
        ("DELETE", f"{base}/e", {"params": {"mode": "empty"}}),
        ("PUT", f"{base}/bad", {"params": {"status": "503"}, "content": b"{}"}),
        ("POST", f"{base}/stream", {"content": iter_body()}),
    ]


async def iter_body() -> AsyncIterator[bytes]:
    for part in (b"streamed ", b"body"):
        yield part


def answer_of(response: httpx.Response) -> dict[str, Any]:
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() != "date"]
    return {
        "status": response.status_code,
        "reason": response.reason_phrase,
        "version": response.http_version,
        "headers": headers,
        "text": response.text,
    }


async def exchange(client: httpx.AsyncClient, base: str) -> list[dict[str, Any]]:
    out = []
    for method, url, kwargs in requests(base):
        response = await client.send(client.build_request(method, url, **kwargs))
        await response.aread()
        out.append(answer_of(response))
    return out


async def test_same_requests_arrive_and_answer_alike_through_both_transports(
    echo_url: str,
) -> None:
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport()) as default:
        expected = await exchange(default, echo_url)
    async with httpx.AsyncClient(transport=Http1Transport()) as lean:
        got = await exchange(lean, echo_url)
    assert got == expected
    assert len(got) == 7
    assert json.loads(got[2]["text"])["body"] == "x" * 100_000  # gzip answer decoded
    assert got[3]["status"] == 207
    assert json.loads(got[3]["text"])["path"] == "/ch?mode=chunked"
    assert got[4]["status"] == 204
    assert got[4]["text"] == ""
    assert json.loads(got[6]["text"])["body"] == "streamed body"


async def test_make_client_uses_the_lean_transport_unless_a_proxy_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ALL_PROXY", raising=False)
    client = make_client(5.0)
    assert isinstance(client._transport, Http1Transport)
    await client.aclose()
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    client = make_client(5.0)
    assert not isinstance(client._transport, Http1Transport)
    await client.aclose()


class RawServer:
    """A TCP server running `handler` per connection; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


def answer(body: bytes, *extra: bytes) -> bytes:
    lines = [b"HTTP/1.1 200 OK", b"Content-Length: %d" % len(body), *extra]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            await read_request(reader)
        except asyncio.IncompleteReadError:
            return
        writer.write(answer(b"ok"))


async def test_one_connection_carries_every_sequential_request() -> None:
    server = RawServer(keep_alive)
    async with server as base, httpx.AsyncClient(transport=Http1Transport()) as client:
        for _ in range(20):
            response = await client.post(f"{base}/x", content=b"{}")
            assert response.status_code == 200
            assert response.content == b"ok"
    assert server.connections == 1


async def test_a_closing_server_gets_a_new_connection_each_time() -> None:
    async def close_after_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"bye", b"Connection: close"))
        await writer.drain()

    server = RawServer(close_after_one)
    async with server as base, httpx.AsyncClient(transport=Http1Transport()) as client:
        for _ in range(3):
            assert (await client.get(f"{base}/")).content == b"bye"
    assert server.connections == 3


async def test_a_body_read_until_close_when_no_length_is_given() -> None:
    async def no_length(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
        await writer.drain()

    async with RawServer(no_length) as base, httpx.AsyncClient(transport=Http1Transport()) as c:
        assert (await c.get(base)).text == "all of it"


async def test_an_interim_100_answer_is_skipped() -> None:
    async def interim(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"final"))
        await writer.drain()
        await reader.read()

    async with RawServer(interim) as base, httpx.AsyncClient(transport=Http1Transport()) as c:
        assert (await c.get(base)).text == "final"


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"", httpx.RemoteProtocolError),  # closed without an answer
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", httpx.RemoteProtocolError),
        (b"NOT HTTP\r\n\r\n", httpx.RemoteProtocolError),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", httpx.RemoteProtocolError),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            httpx.RemoteProtocolError,
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", httpx.RemoteProtocolError),
    ],
)
async def test_a_broken_answer_is_a_transport_error(reply: bytes, error: type[Exception]) -> None:
    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()

    async with RawServer(broken) as base, httpx.AsyncClient(transport=Http1Transport()) as c:
        with pytest.raises(error) as caught:
            await c.get(base)
    assert isinstance(caught.value, httpx.TransportError)


async def test_a_silent_server_is_a_read_timeout_and_its_connection_is_dropped() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    transport = Http1Transport()
    async with RawServer(silent) as base:
        async with httpx.AsyncClient(transport=transport, timeout=0.2) as client:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(httpx.ReadTimeout):
                await client.post(base, content=b"{}")
            assert loop.time() - started < 3.0
        assert not transport._idle.get(("http", "127.0.0.1", int(base.rsplit(":", 1)[1])))


async def test_a_refused_connection_is_a_connect_error() -> None:
    server = await asyncio.start_server(keep_alive, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with httpx.AsyncClient(transport=Http1Transport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")


async def test_concurrent_requests_share_a_bounded_pool() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            await asyncio.sleep(0.02)
            writer.write(answer(b"ok"))

    server = RawServer(slow)
    async with server as base:
        transport = Http1Transport(max_connections=3)
        async with httpx.AsyncClient(transport=transport) as client:
            answers = await asyncio.gather(*(client.get(base) for _ in range(12)))
    assert [a.content for a in answers] == [b"ok"] * 12
    assert server.connections == 3


async def test_a_header_with_a_line_break_is_refused_before_sending() -> None:
    server = RawServer(keep_alive)
    async with server as base, httpx.AsyncClient(transport=Http1Transport()) as client:
        request = client.build_request("GET", base)
        request.headers._list.append((b"x-bad", b"x-bad", b"a\r\nInjected: 1"))
        with pytest.raises(httpx.LocalProtocolError):
            await client.send(request)
    assert server.connections == 0


async def test_https_with_a_local_ca(tmp_path: Path) -> None:
    certs = write_dev_certs(tmp_path / "certs", ["localhost", "127.0.0.1"], datetime.now(UTC))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(certs.cert, certs.key)
    server = await asyncio.start_server(keep_alive, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        trusted = ssl.create_default_context(cafile=str(certs.ca))
        async with httpx.AsyncClient(transport=Http1Transport(ssl_context=trusted)) as client:
            for _ in range(3):
                assert (await client.get(f"https://localhost:{port}/")).content == b"ok"
        async with httpx.AsyncClient(transport=Http1Transport()) as untrusting:
            with pytest.raises(httpx.ConnectError):
                await untrusting.get(f"https://localhost:{port}/")
    finally:
        server.close()
