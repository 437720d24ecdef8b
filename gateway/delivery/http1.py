"""A lean HTTP/1.1 transport for the delivery clients (httpx stays the client).

httpx's default transport (httpcore over anyio, with h11) costs ~0.5 ms of CPU per request on
a small VM, several times what the request itself needs; a GA4 route sends one request per user,
so that cost was most of the gateway's delivery CPU. `Http1Transport` is an
`httpx.AsyncBaseTransport` (httpx's documented extension point): the `httpx.AsyncClient`
still builds the request, applies timeouts, decodes the body (gzip, …) and raises its own
exceptions; only the wire work is done here, on plain asyncio protocols:

* one keep-alive pool per origin (scheme, host, port), at most `max_connections` open per
  origin, idle connections closed after `keepalive_seconds` and never reused once the peer
  closed them or sent something unasked;
* requests written in one `write` (head and body), responses read whole: status line, headers,
  then the body by Content-Length, chunked transfer coding, or until the peer closes; 1xx
  answers skipped; a body over `max_body_bytes` is refused;
* the request's timeouts (httpx's `timeout` extension) map to httpx's ConnectTimeout,
  WriteTimeout, ReadTimeout and PoolTimeout; socket and TLS errors to ConnectError, WriteError
  and ReadError; a malformed answer to RemoteProtocolError; a header value holding CR or LF to
  LocalProtocolError; nothing is retried here (the worker decides);
* HTTPS with httpx's own default SSL context (`httpx.create_ssl_context()`: certifi, or
  SSL_CERT_FILE / SSL_CERT_DIR).

`make_client` (gateway/delivery/exchange.py) uses it unless a test injects a transport or the
environment configures an HTTP proxy (then httpx's default transport, which honours it).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from typing import Final, cast

import httpx

DEFAULT_PORTS: Final = {"http": 80, "https": 443}
MAX_HEAD_BYTES: Final = 64 * 1024
"""Status line and headers of an answer: more is refused as malformed."""
MAX_BODY_BYTES: Final = 64 * 1024 * 1024
KEEPALIVE_SECONDS: Final = 5.0
MAX_CONNECTIONS: Final = 16

Origin = tuple[str, str, int]


class _Timeout(Exception):
    """A wait ran past its deadline (mapped to the httpx timeout of the phase)."""


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: buffers what arrives, wakes the one reader waiting."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.error: Exception | None = None
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = exc
        self._wake()
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    # -- used by the transport ---------------------------------------------------------------

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_data(self, wait: float | None) -> None:
        """Wait until more bytes arrive or the peer closes; raise _Timeout after `wait`."""
        waiter = self.loop.create_future()
        self._waiter = waiter
        await _bounded(self.loop, waiter, wait)

    async def write(self, data: bytes, wait: float | None) -> None:
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            raise ConnectionResetError("connection closed")
        transport.write(data)
        writable = self._writable
        if writable is not None:
            await _bounded(self.loop, writable, wait)
            if self.closed:
                raise ConnectionResetError("connection closed while writing")

    def reusable(self, now: float) -> bool:
        """Return whether an idle connection may carry another request."""
        transport = self.transport
        return (
            not self.closed
            and not self.buffer
            and transport is not None
            and not transport.is_closing()
            and now - self.idle_since < KEEPALIVE_SECONDS
        )

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


async def _bounded(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[None], wait: float | None
) -> None:
    """Await `future`, raising _Timeout if it is not done within `wait` seconds."""
    if wait is None:
        await future
        return
    handle = loop.call_later(wait, _expire, future)
    try:
        await future
    finally:
        handle.cancel()


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(_Timeout())


class _Answer:
    """The parsed head of a response."""

    __slots__ = ("headers", "reason", "status", "version")

    def __init__(
        self, version: bytes, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers


class Http1Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive transport on asyncio protocols (see the module doc)."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = MAX_CONNECTIONS,
        max_body_bytes: int = MAX_BODY_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ssl = ssl_context
        self._max_connections = max_connections
        self._max_body = max_body_bytes
        self._clock = clock
        self._idle: dict[Origin, list[_Connection]] = {}
        self._slots: dict[Origin, asyncio.Semaphore] = {}
        self._open: set[_Connection] = set()

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        return self._ssl

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        origin = (scheme, url.host, url.port or DEFAULT_PORTS[scheme])
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()
        if "transfer-encoding" in request.headers:  # a streamed body: send it as one chunk
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
        head = _request_head(request)
        slots = self._slots.get(origin)
        if slots is None:
            slots = self._slots[origin] = asyncio.Semaphore(self._max_connections)
        await _acquire(slots, timeouts.get("pool"), request)
        try:
            return await self._exchange(request, origin, head + body, timeouts)
        finally:
            slots.release()

    async def _exchange(
        self, request: httpx.Request, origin: Origin, data: bytes, timeouts: dict[str, float]
    ) -> httpx.Response:
        conn = self._idle_connection(origin)
        if conn is None:
            conn = await self._connect(request, origin, timeouts.get("connect"))
        keep = False
        try:
            try:
                await conn.write(data, timeouts.get("write"))
            except _Timeout:
                raise httpx.WriteTimeout("timed out writing the request", request=request) from None
            except OSError as exc:
                raise httpx.WriteError(
                    f"write failed: {type(exc).__name__}", request=request
                ) from exc
            answer, payload, keep = await self._read_response(request, conn, timeouts.get("read"))
        finally:
            if keep:
                conn.idle_since = self._clock()
                self._idle.setdefault(origin, []).append(conn)
            else:
                conn.close()
                self._open.discard(conn)
        return httpx.Response(
            answer.status,
            headers=answer.headers,
            stream=httpx.ByteStream(payload),
            extensions={"http_version": answer.version, "reason_phrase": answer.reason},
            request=request,
        )

    def _idle_connection(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = self._clock()
        while idle:
            conn = idle.pop()
            if conn.reusable(now):
                return conn
            conn.close()
            self._open.discard(conn)
        return None

    async def _connect(
        self, request: httpx.Request, origin: Origin, wait: float | None
    ) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self._ssl_context() if scheme == "https" else None
        try:
            async with asyncio.timeout(wait):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout("timed out connecting", request=request) from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(
                f"connect failed: {type(exc).__name__}", request=request
            ) from exc
        self._open.add(conn)
        return conn

    async def _read_response(
        self, request: httpx.Request, conn: _Connection, wait: float | None
    ) -> tuple[_Answer, bytes, bool]:
        try:
            while True:
                answer = await _read_head(conn, wait, request)
                if not 100 <= answer.status < 200 or answer.status == 101:
                    break
            payload, until_close = await self._read_body(request, conn, answer, wait)
        except _Timeout:
            raise httpx.ReadTimeout("timed out reading the response", request=request) from None
        except OSError as exc:
            raise httpx.ReadError(f"read failed: {type(exc).__name__}", request=request) from exc
        keep = (
            not until_close
            and answer.version == b"HTTP/1.1"
            and not _has_token(answer.headers, b"connection", b"close")
            and not _has_token(request.headers.raw, b"connection", b"close")
            and not conn.closed
            and not conn.buffer
        )
        return answer, payload, keep

    async def _read_body(
        self, request: httpx.Request, conn: _Connection, answer: _Answer, wait: float | None
    ) -> tuple[bytes, bool]:
        """Return (body, read until the peer closed)."""
        status = answer.status
        if request.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return b"", False
        if _has_token(answer.headers, b"transfer-encoding", b"chunked"):
            return await self._read_chunked(request, conn, wait), False
        length = _content_length(answer.headers, request)
        if length is not None:
            if length > self._max_body:
                raise httpx.RemoteProtocolError("response body too large", request=request)
            while len(conn.buffer) < length:
                if conn.closed:
                    raise httpx.RemoteProtocolError(
                        "server closed the connection before the whole body", request=request
                    )
                await conn.wait_data(wait)
            payload = bytes(conn.buffer[:length])
            del conn.buffer[:length]
            return payload, False
        while not conn.closed:
            if len(conn.buffer) > self._max_body:
                raise httpx.RemoteProtocolError("response body too large", request=request)
            await conn.wait_data(wait)
        payload = bytes(conn.buffer)
        conn.buffer.clear()
        return payload, True

    async def _read_chunked(
        self, request: httpx.Request, conn: _Connection, wait: float | None
    ) -> bytes:
        out = bytearray()
        while True:
            line = await _read_line(conn, wait, request)
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise httpx.RemoteProtocolError("malformed chunk size", request=request) from None
            if size < 0 or not size_text.isalnum():
                raise httpx.RemoteProtocolError("malformed chunk size", request=request)
            if size == 0:
                while await _read_line(conn, wait, request):  # trailers, then an empty line
                    pass
                return bytes(out)
            if len(out) + size > self._max_body:
                raise httpx.RemoteProtocolError("response body too large", request=request)
            while len(conn.buffer) < size + 2:
                if conn.closed:
                    raise httpx.RemoteProtocolError("server closed inside a chunk", request=request)
                await conn.wait_data(wait)
            if conn.buffer[size : size + 2] != b"\r\n":
                raise httpx.RemoteProtocolError("malformed chunk end", request=request)
            out += conn.buffer[:size]
            del conn.buffer[: size + 2]

    async def aclose(self) -> None:
        for conn in self._open:
            conn.close()
        self._open.clear()
        self._idle.clear()


async def _acquire(slots: asyncio.Semaphore, wait: float | None, request: httpx.Request) -> None:
    if not slots.locked():
        await slots.acquire()  # free: returns without suspending
        return
    try:
        async with asyncio.timeout(wait):
            await slots.acquire()
    except TimeoutError:
        raise httpx.PoolTimeout("timed out waiting for a connection", request=request) from None


def _request_head(request: httpx.Request) -> bytes:
    """Return the request line and headers, refusing CR/LF inside any of them."""
    target = request.url.raw_path
    lines = [request.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    head = b"".join(lines)
    if head.count(b"\n") != len(request.headers.raw) + 2 or head.count(b"\r") != head.count(b"\n"):
        raise httpx.LocalProtocolError("CR or LF inside the request line or a header")
    return head


async def _read_line(conn: _Connection, wait: float | None, request: httpx.Request) -> bytes:
    while True:
        end = conn.buffer.find(b"\r\n")
        if end >= 0:
            line = bytes(conn.buffer[:end])
            del conn.buffer[: end + 2]
            return line
        if len(conn.buffer) > MAX_HEAD_BYTES:
            raise httpx.RemoteProtocolError("line too long", request=request)
        if conn.closed:
            raise httpx.RemoteProtocolError("server closed the connection", request=request)
        await conn.wait_data(wait)


async def _read_head(conn: _Connection, wait: float | None, request: httpx.Request) -> _Answer:
    start = 0
    while True:
        end = conn.buffer.find(b"\r\n\r\n", start)
        if end >= 0:
            break
        start = max(0, len(conn.buffer) - 3)
        if len(conn.buffer) > MAX_HEAD_BYTES:
            raise httpx.RemoteProtocolError("response head too long", request=request)
        if conn.closed:
            if conn.error is not None:
                raise httpx.ReadError("connection lost", request=request) from conn.error
            raise httpx.RemoteProtocolError(
                "server disconnected without sending a response", request=request
            )
        await conn.wait_data(wait)
    head = bytes(conn.buffer[:end])
    del conn.buffer[: end + 4]
    status_line, *lines = head.split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise httpx.RemoteProtocolError("malformed status line", request=request)
    headers: list[tuple[bytes, bytes]] = []
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip() or name[:1] in (b" ", b"\t"):
            raise httpx.RemoteProtocolError("malformed header line", request=request)
        headers.append((name, value.strip(b" \t")))
    return _Answer(parts[0], int(parts[1]), parts[2] if len(parts) > 2 else b"", headers)


def _has_token(headers: list[tuple[bytes, bytes]], name: bytes, token: bytes) -> bool:
    for key, value in headers:
        if key.lower() == name and any(part.strip().lower() == token for part in value.split(b",")):
            return True
    return False


def _content_length(headers: list[tuple[bytes, bytes]], request: httpx.Request) -> int | None:
    found: set[bytes] = set()
    for key, value in headers:
        if key.lower() == b"content-length":
            found.update(v.strip() for v in value.split(b","))
    if not found:
        return None
    if len(found) != 1:
        raise httpx.RemoteProtocolError("conflicting Content-Length", request=request)
    (text,) = found
    if not text.isdigit():
        raise httpx.RemoteProtocolError("malformed Content-Length", request=request)
    return int(text)
