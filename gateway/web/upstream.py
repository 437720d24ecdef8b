"""A lean keep-alive HTTP/1.1 client for the hit proxy's upstreams (gateway/web/hits.py).

Pixel hits are small requests answered by a pixel or a short JSON, thousands a second to a
handful of vendor hosts. aiohttp's ClientSession spends more CPU per request than the rest of a
hit's path together (request/response objects, multidicts, timers, stream readers), so the hit
proxy uses this pool instead: requests are written as prebuilt bytes on asyncio protocols and
answers are parsed by a strict minimal parser.

Rules:

* **Allow-list.** A pool is built from a fixed set of origins (`http://` or `https://` bases
  from the configuration); a request names one of them, anything else raises `UpstreamError`
  before a socket is opened. Redirects are never followed (the caller decides what a 3xx is).
* **Requests.** `GET`/`POST`, an origin-form target of visible ASCII, header names that are
  tokens and values without control characters (checked here again, whatever the caller did);
  `Host` and `Content-Length` (POST) are added here.
* **Answers.** `HTTP/1.1` or `HTTP/1.0`, a status 200-599 (1xx is refused: no `Expect` is ever
  sent), a head of at most `MAX_HEAD` bytes of well-formed header lines (no obs-fold, no
  controls), a body framed by `Content-Length` (digits only; conflicting copies refused) or
  `Transfer-Encoding: chunked` (strictly parsed; trailers skipped) or, without either, by the
  close of the connection; 204/304 have no body. A body over the request's `limit` fails it.
  Header names are lower-cased; repeated headers are joined with ", ".
* **Connections.** At most `max_per_origin` open per origin (a request waits for a free one
  within its deadline); idle ones are reused LIFO and closed after `idle_seconds`. A
  connection is reused only after a complete, well-framed answer with keep-alive: one that
  failed, timed out, was half-closed, answered `Connection: close` or HTTP/1.0, or sent bytes
  nobody asked for, is closed and forgotten. A GET that finds a reused connection closed before
  the first byte of its answer is retried once on a new connection (the usual keep-alive race);
  a POST is not (it may have reached the vendor).
* **Writes.** A request is written at the end of the loop turn it was begun in, together with
  every other request of that turn (`UpstreamPool.write_soon`): under load the writes of many
  hits go out in one burst, which wakes the upstream's side once instead of once per request
  (each wake-up of a sleeping reader on another core costs the writer an inter-processor
  interrupt: on the benchmark machine the upstream writes were 18% of the gateway's CPU, the
  burst-written answers to the browsers 3%). A request given up before its turn ends is never
  written.
* **Timeouts.** Connecting (TCP + TLS) is bounded by `connect_timeout`; the whole request
  (waiting for a connection, connecting, writing, reading) by the request's `timeout`.
* `close()` closes every connection and fails requests in flight; the pool takes no new ones.

Every failure is an `UpstreamError` with a short reason (never request or answer content).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast
from urllib.parse import urlsplit

MAX_HEAD: Final = 16_384
"""Largest answer head (status line + headers) accepted."""
MAX_CHUNK_LINE: Final = 1_024
"""Largest chunk-size line (with extensions) or trailer line of a chunked answer."""
IDLE_SECONDS: Final = 30.0
"""Idle keep-alive connections are closed after this long (servers close theirs at 60-75 s)."""
MAX_PER_ORIGIN: Final = 64
"""Open connections per origin at most."""

_TARGET_RE: Final = re.compile(r"/[\x21-\x7e]*")
_NAME_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE_RE: Final = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_HEAD_RE: Final = re.compile(
    rb"HTTP/1\.[01] [2-5][0-9][0-9](?: [\t\x20-\x7e\x80-\xff]*)?\r\n"
    rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*\r\n)*"
)
_CHUNK_RE: Final = re.compile(rb"([0-9A-Fa-f]{1,8})(?:[ \t]*;[\t\x20-\x7e]*)?")
_BODILESS: Final = frozenset({204, 304})


class UpstreamError(Exception):
    """The upstream request failed (the message is a short reason)."""


class UpstreamAnswer:
    """A complete answer: status, body, and its headers (lower-case names) on demand."""

    __slots__ = ("_all", "_fields", "_text", "body", "status")

    def __init__(self, status: int, text: str, fields: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.body = body
        self._text = text
        self._fields = fields
        self._all: dict[str, str] | None = None

    def header(self, name: str) -> str | None:
        """Return a header by lower-case name (repeated ones joined with ", ")."""
        if name in FRAMING_FIELDS:
            return self._fields.get(name)
        return self.headers.get(name)

    def without_coding(self, body: bytes) -> UpstreamAnswer:
        """Return this answer with its decoded `body` and no Content-Encoding header."""
        lines = self._text.split("\r\n")
        text = "\r\n".join(
            line for line in lines if line.partition(":")[0].strip().lower() != "content-encoding"
        )
        fields = {k: v for k, v in self._fields.items() if k != "content-encoding"}
        if "content-length" in fields:
            fields["content-length"] = str(len(body))
        return UpstreamAnswer(self.status, text, fields, body)

    @property
    def headers(self) -> Mapping[str, str]:
        """Every header (parsed when first asked: most callers need `header` only)."""
        if self._all is None:
            self._all, _ = _parse_fields(self._text)
        return self._all


@dataclass(frozen=True, slots=True)
class Origin:
    """One allow-listed upstream: where to connect and what to send as Host."""

    scheme: str
    host: str
    port: int
    host_header: str

    @classmethod
    def parse(cls, base: str) -> Origin:
        """Return the origin of an `http(s)://host[:port][/path]` base (the path is ignored)."""
        parts = urlsplit(base)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) upstream: {base!r}")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError(f"upstream with credentials, query or fragment: {base!r}")
        default = 443 if scheme == "https" else 80
        port = parts.port or default
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        return cls(scheme, host, port, shown if port == default else f"{shown}:{port}")

    @property
    def key(self) -> str:
        """The origin as a string (`scheme://host:port`)."""
        return f"{self.scheme}://{self.host_header}"


class _Waiter:
    """The answer of one request being read on a connection."""

    __slots__ = ("future", "limit", "reused")

    def __init__(self, future: asyncio.Future[UpstreamAnswer], limit: int, reused: bool) -> None:
        self.future = future
        self.limit = limit
        self.reused = reused


class _Conn(asyncio.Protocol):
    """One upstream connection: at most one request in flight, answers parsed as they come."""

    __slots__ = (
        "_body",
        "_buf",
        "_chunked",
        "_headers",
        "_keep",
        "_length",
        "_status",
        "_text",
        "_waiter",
        "closed",
        "idle_since",
        "pool",
        "slot",
        "transport",
        "used",
    )

    def __init__(self, pool: _OriginPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = False
        self.idle_since = 0.0
        self.slot = True
        """Whether this connection still counts against the origin's limit."""
        self._buf = bytearray()
        self._waiter: _Waiter | None = None
        self._status = 0
        self._headers: Mapping[str, str] | None = None
        self._text = ""
        self._length = -1
        """Body bytes still expected (Content-Length); -1 until known or when not so framed."""
        self._chunked = False
        self._keep = False
        self._body = bytearray()

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        if self._waiter is not None:
            if self._headers is not None and self._length < 0 and not self._chunked:
                self._body, self._buf = self._buf, bytearray()
                self._finish(keep=False)  # a body framed by the close of the connection
            else:
                self.fail("connection closed", retry=not self._buf and self._headers is None)
        self.pool.forget(self)

    def eof_received(self) -> bool:
        return False  # a half-closed connection is closed (never reused)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        self._buf += data
        try:
            self._parse()
        except UpstreamError as exc:
            self.fail(str(exc))

    # --- requests ---------------------------------------------------------------------------

    def send(self, data: bytes, waiter: _Waiter) -> None:
        """Queue one request for writing at the end of the loop turn; its answer resolves
        `waiter.future`."""
        assert self.transport is not None
        assert self._waiter is None
        self._waiter = waiter
        self._buf.clear()
        self._status, self._headers, self._length, self._chunked = 0, None, -1, False
        self._body = bytearray()
        self.used = True
        self.pool.owner.write_soon(self, waiter, data)

    def write_now(self, waiter: _Waiter, data: bytes) -> None:
        """Write the queued request of `waiter` unless it was given up (or failed) meanwhile."""
        if self._waiter is waiter and not self.closed and self.transport is not None:
            self.transport.write(data)

    def abandon(self, waiter: _Waiter) -> None:
        """The request of `waiter` gave up (timeout, cancellation): never reuse the connection."""
        if self._waiter is waiter:
            self._waiter = None
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            self.pool.forget(self)

    # --- parsing ----------------------------------------------------------------------------

    def _parse(self) -> None:
        waiter = self._waiter
        assert waiter is not None
        buf = self._buf
        if self._headers is None:
            end = buf.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise UpstreamError("answer head too large")
                return
            self._head(bytes(buf[: end + 2]), waiter.limit)
            del buf[: end + 4]
            if self._status in _BODILESS:
                self._finish(self._keep)
                return
        if self._chunked:
            self._dechunk(waiter.limit)
            return
        if self._length >= 0:
            if len(buf) > self._length:
                raise UpstreamError("answer longer than its Content-Length")
            if len(buf) == self._length:
                self._body = buf
                self._buf = bytearray()
                self._finish(self._keep)
            return
        if len(buf) > waiter.limit:  # framed by the close of the connection
            raise UpstreamError("body over the size limit")

    def _head(self, head: bytes, limit: int) -> None:
        known = _HEADS.get(head)
        if known is None:
            known = _read_head(head)
            if len(head) <= _MEMO_HEAD_MAX:
                if len(_HEADS) >= _MEMO_HEADS:
                    _HEADS.clear()
                _HEADS[head] = known
        self._status, self._text, self._headers, length, self._chunked, self._keep = known
        if length > limit:
            raise UpstreamError("body over the size limit")
        self._length = length

    def _dechunk(self, limit: int) -> None:
        buf = self._buf
        body = self._body
        while True:
            if self._length > 0:  # inside a chunk: its data and CRLF
                if len(buf) < self._length + 2:
                    return
                if buf[self._length : self._length + 2] != b"\r\n":
                    raise UpstreamError("malformed chunk")
                body += buf[: self._length]
                del buf[: self._length + 2]
                self._length = -1
                continue
            end = buf.find(b"\r\n", 0, MAX_CHUNK_LINE + 2)
            if end < 0:
                if len(buf) > MAX_CHUNK_LINE:
                    raise UpstreamError("malformed chunk")
                return
            line = bytes(buf[:end])
            del buf[: end + 2]
            if self._length == 0:  # trailer section: lines until an empty one
                if line:
                    if len(line) > MAX_CHUNK_LINE:
                        raise UpstreamError("malformed chunk")
                    continue
                if buf:
                    raise UpstreamError("bytes after the answer")
                self._finish(self._keep)
                return
            match = _CHUNK_RE.fullmatch(line)
            if match is None:
                raise UpstreamError("malformed chunk")
            size = int(match.group(1), 16)
            if len(body) + size > limit:
                raise UpstreamError("body over the size limit")
            self._length = size

    def _finish(self, keep: bool) -> None:
        waiter = self._waiter
        assert waiter is not None
        assert self._headers is not None
        self._waiter = None
        if not waiter.future.done():
            waiter.future.set_result(
                UpstreamAnswer(self._status, self._text, self._headers, bytes(self._body))
            )
        self._body = bytearray()
        if keep and not self.closed:
            self.pool.release(self)
        else:
            self.close()

    def fail(self, reason: str, retry: bool = False) -> None:
        """Fail the request in flight (if any) and close the connection."""
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.future.done():
            error = _Retry(reason) if retry and waiter.reused else UpstreamError(reason)
            waiter.future.set_exception(error)
        self.close()


class _Retry(UpstreamError):
    """A reused connection was closed before its answer began (may be sent again if a GET)."""


class _OriginPool:
    """The connections of one origin."""

    def __init__(self, owner: UpstreamPool, origin: Origin) -> None:
        self.owner = owner
        self.origin = origin
        self.idle: list[_Conn] = []
        self.conns: set[_Conn] = set()
        """Every connection that holds a slot (connecting, busy or idle)."""
        self.open = 0
        self.waiting: deque[asyncio.Future[_Conn | None]] = deque()

    def release(self, conn: _Conn) -> None:
        """Give a connection with a complete answer back (to a waiting request, else idle)."""
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_result(conn)
                return
        conn.idle_since = self.owner.loop.time()
        self.idle.append(conn)

    def forget(self, conn: _Conn) -> None:
        """A connection closed: free its slot and wake a waiting request to open another."""
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.slot:
            conn.slot = False
            self.conns.discard(conn)
            self.open -= 1
            while self.waiting:
                future = self.waiting.popleft()
                if not future.done():
                    future.set_result(None)
                    return

    def take_idle(self) -> _Conn | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None


class Exchange:
    """One request on its way: await it for the answer, or `cancel()` it."""

    __slots__ = (
        "_conn",
        "_data",
        "_deadline",
        "_deadlines",
        "_get",
        "_limit",
        "_pool",
        "_waiter",
        "owner",
    )

    def __init__(
        self,
        owner: UpstreamPool,
        pool: _OriginPool,
        data: bytes,
        deadline: float,
        deadlines: _Deadlines,
        limit: int,
        get: bool,
    ) -> None:
        self.owner = owner
        self._pool = pool
        self._data = data
        self._deadline = deadline
        self._deadlines = deadlines
        self._limit = limit
        self._get = get
        self._conn: _Conn | None = None
        self._waiter: _Waiter | None = None

    def start(self, conn: _Conn) -> None:
        """Write the request on `conn`; it fails with "timeout" at the deadline."""
        future: asyncio.Future[UpstreamAnswer] = self.owner.loop.create_future()
        self._waiter = waiter = _Waiter(future, self._limit, conn.used)
        self._conn = conn
        conn.send(self._data, waiter)
        self._deadlines.add(self._deadline, future)

    def __await__(self) -> Generator[Any, None, UpstreamAnswer]:
        return self._result().__await__()

    async def _result(self) -> UpstreamAnswer:
        for attempt in (0, 1):
            if self._conn is None:
                self.start(await self.owner._acquire(self._pool, self._deadline))
            conn, waiter = self._conn, self._waiter
            assert conn is not None
            assert waiter is not None
            try:
                return await waiter.future
            except _Retry:
                if attempt or not self._get:
                    raise UpstreamError("connection closed") from None
                self._conn = self._waiter = None
            except BaseException:
                conn.abandon(waiter)  # no-op once the answer is complete or failed
                raise
        raise AssertionError("unreachable")

    def outcome(self) -> UpstreamAnswer | UpstreamError | None:
        """The answer or failure if the request is over already, else None (await it then).

        A reused connection closed before the answer began is not an outcome: awaiting the
        exchange decides whether a GET is sent again.
        """
        waiter = self._waiter
        if waiter is None or not waiter.future.done() or waiter.future.cancelled():
            return None
        error = waiter.future.exception()
        if error is None:
            return waiter.future.result()
        if isinstance(error, _Retry) or not isinstance(error, UpstreamError):
            return None
        return error

    def notify(self, callback: Callable[[], None]) -> bool:
        """Call `callback()` once the request written is over (see `outcome`); False if it is
        not written yet (no idle connection was free): await the exchange then."""
        waiter = self._waiter
        if waiter is None:
            return False
        waiter.future.add_done_callback(lambda _: callback())
        return True

    def cancel(self) -> None:
        """Give up a request that will not be awaited (its connection is not reused)."""
        conn, waiter = self._conn, self._waiter
        if conn is not None and waiter is not None:
            conn.abandon(waiter)
            future = waiter.future
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: no "never retrieved" log
            else:
                future.cancel()


class _Deadlines:
    """The deadlines of requests sent with one timeout, in order: one timer, for the first.

    Cheaper than a timer per request (most answers come long before their deadline): an entry
    whose request is done is simply dropped when it reaches the front.
    """

    __slots__ = ("_entries", "_loop", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._entries: deque[tuple[float, asyncio.Future[Any]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, deadline: float, future: asyncio.Future[Any]) -> None:
        """Fail `future` with "timeout" at `deadline` (no later than the deadlines added
        before) unless it is done by then."""
        entries = self._entries
        while entries and entries[0][1].done():
            entries.popleft()
        entries.append((deadline, future))
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        entries = self._entries
        due = self._loop.time() + _CLOCK_SLACK
        while entries:
            deadline, future = entries[0]
            if not future.done():
                if deadline > due:
                    self._timer = self._loop.call_at(deadline, self._fire)
                    return
                _expire(future)
            entries.popleft()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._entries.clear()


_CLOCK_SLACK: Final = 0.001
"""A deadline this close is due (the loop's clock may round a timer's time down)."""


class UpstreamPool:
    """Keep-alive connections to the allow-listed origins (see the module docstring)."""

    def __init__(
        self,
        bases: Iterable[str],
        *,
        connect_timeout: float,
        max_per_origin: int = MAX_PER_ORIGIN,
        idle_seconds: float = IDLE_SECONDS,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._origins: dict[str, Origin] = {}
        for base in bases:
            origin = Origin.parse(base)
            self._origins[base] = origin
        self.connect_timeout = connect_timeout
        self.max_per_origin = max_per_origin
        self.idle_seconds = idle_seconds
        self._ssl = ssl_context
        self._pools: dict[Origin, _OriginPool] = {}
        self._deadlines: dict[float, _Deadlines] = {}
        """Request deadlines by timeout length (each in the order the requests were sent)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self._outgoing: list[tuple[_Conn, _Waiter, bytes]] = []
        """Requests begun in this loop turn, written together at its end (`_write_out`)."""

    def write_soon(self, conn: _Conn, waiter: _Waiter, data: bytes) -> None:
        """Write the request `data` of `waiter` on `conn` once the callbacks already due in this
        loop turn have run, with every other request begun meanwhile (one `call_soon`)."""
        outgoing = self._outgoing
        outgoing.append((conn, waiter, data))
        if len(outgoing) == 1:
            self.loop.call_soon(self._write_out)

    def _write_out(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        for conn, waiter, data in outgoing:
            conn.write_now(waiter, data)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def origin(self, base: str) -> Origin:
        """Return the origin of an allow-listed base (UpstreamError for any other)."""
        origin = self._origins.get(base)
        if origin is None:
            raise UpstreamError("upstream not allow-listed")
        return origin

    def head(self, base: str, method: str, target: str, headers: Mapping[str, str]) -> bytes:
        """Return the request line and header block (without Content-Length and blank line).

        Callers with a fixed part may build it once and pass it to `send`.
        """
        origin = self.origin(base)
        if method not in ("GET", "POST") or _TARGET_RE.fullmatch(target) is None:
            raise UpstreamError("bad request target")
        lines = [f"{method} {target} HTTP/1.1\r\nHost: {origin.host_header}\r\n"]
        for name, value in headers.items():
            if _NAME_RE.fullmatch(name) is None or _VALUE_RE.fullmatch(value) is None:
                raise UpstreamError("bad request header")
            if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
                raise UpstreamError("reserved request header")
            lines.append(f"{name}: {value}\r\n")
        return "".join(lines).encode("latin-1")

    def request(
        self,
        base: str,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes = b"",
        *,
        seconds: float,
        limit: int,
    ) -> Exchange:
        """Send one request to the allow-listed `base`; await the result for the answer."""
        head = self.head(base, method, target, headers)
        if method == "POST":
            data = b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)
        elif body:
            raise UpstreamError("GET with a body")
        else:
            data = head + b"\r\n"
        return self.begin(
            self.origin(base), data, seconds=seconds, limit=limit, get=method == "GET"
        )

    def begin(
        self, origin: Origin, data: bytes, *, seconds: float, limit: int, get: bool
    ) -> Exchange:
        """Start sending a complete, checked request (see `head`); await it for the answer.

        On an idle keep-alive connection the request takes it at once and is written at the end
        of this loop turn, with every other request begun in it, so the caller can do other
        work meanwhile; otherwise connecting starts when awaited (and the request is written
        at the end of the turn that got the connection).
        A caller that gives up without awaiting must `cancel()` it.
        """
        if self._closed:
            raise UpstreamError("client closed")
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _OriginPool(self, origin)
            self._start_sweeper()
        deadlines = self._deadlines.get(seconds)
        if deadlines is None:
            deadlines = self._deadlines[seconds] = _Deadlines(self.loop)
        exchange = Exchange(self, pool, data, self.loop.time() + seconds, deadlines, limit, get)
        conn = pool.take_idle()
        if conn is not None:
            exchange.start(conn)
        return exchange

    async def _acquire(self, pool: _OriginPool, deadline: float) -> _Conn:
        while True:
            conn = pool.take_idle()
            if conn is not None:
                return conn
            if pool.open < self.max_per_origin:
                return await self._connect(pool, deadline)
            future: asyncio.Future[_Conn | None] = self.loop.create_future()
            pool.waiting.append(future)
            timer = self.loop.call_at(deadline, _expire, future)
            try:
                got = await future
            except asyncio.CancelledError:
                handed = future.done() and not future.cancelled() and future.exception() is None
                conn = future.result() if handed else None
                if conn is not None and not conn.closed:
                    pool.release(conn)  # handed over just as this request was cancelled
                raise
            finally:
                timer.cancel()
            if got is not None and not got.closed:
                return got

    async def _connect(self, pool: _OriginPool, deadline: float) -> _Conn:
        origin = pool.origin
        pool.open += 1
        conn = _Conn(pool)
        pool.conns.add(conn)
        seconds = min(self.connect_timeout, deadline - self.loop.time())
        tls: ssl.SSLContext | None = None
        if origin.scheme == "https":
            tls = self._ssl or ssl.create_default_context()
            self._ssl = tls
        try:
            if seconds <= 0:
                raise TimeoutError
            async with asyncio.timeout(seconds):
                await self.loop.create_connection(
                    lambda: conn,
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls is not None else None,
                )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            pool.forget(conn)
            conn.closed = True
            if conn.transport is not None:
                conn.transport.close()
            reason = "connect timeout" if isinstance(exc, TimeoutError) else "connect failed"
            raise UpstreamError(reason) from None
        except BaseException:
            pool.forget(conn)
            conn.close()
            raise
        if self._closed:
            conn.close()
            raise UpstreamError("client closed")
        return conn

    def _start_sweeper(self) -> None:
        if self._sweeper is None and not self._closed:
            self._sweeper = self.loop.call_later(self.idle_seconds / 2, self._sweep)

    def _sweep(self) -> None:
        now = self.loop.time()
        for pool in self._pools.values():
            for conn in [c for c in pool.idle if now - c.idle_since > self.idle_seconds]:
                conn.close()
        self._sweeper = self.loop.call_later(self.idle_seconds / 2, self._sweep)

    def stats(self) -> dict[str, int]:
        """Open and idle connections over all origins."""
        return {
            "open": sum(p.open for p in self._pools.values()),
            "idle": sum(len(p.idle) for p in self._pools.values()),
        }

    async def close(self) -> None:
        """Close every connection; requests in flight fail; later ones are refused."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for deadlines in self._deadlines.values():
            deadlines.close()
        for pool in self._pools.values():
            for future in pool.waiting:
                if not future.done():
                    future.set_exception(UpstreamError("client closed"))
            pool.waiting.clear()
            for conn in list(pool.idle):
                conn.close()
        for conn in [c for p in self._pools.values() for c in p.conns]:
            conn.fail("client closed")
        await asyncio.sleep(0)  # let the transports' connection_lost run


_Head = tuple[int, str, Mapping[str, str], int, bool, bool]
"""A checked answer head: status, text, framing fields, Content-Length (-1: none), chunked,
keep-alive."""
_HEADS: dict[bytes, _Head] = {}
"""Answer heads seen lately, by their bytes: an upstream sends the same head again and again
(only its Date changes, once a second), so most heads are read once."""
_MEMO_HEADS: Final = 64
_MEMO_HEAD_MAX: Final = 2048


def _read_head(head: bytes) -> _Head:
    """Check and read an answer head (status line and header lines, with the final CRLF)."""
    if _HEAD_RE.fullmatch(head) is None:
        raise UpstreamError("malformed answer head")
    text = head.decode("latin-1")
    status = int(text[9:12])
    headers = _framing_fields(text)
    if headers is None:  # a field of FRAMING_FIELDS is repeated: parse every line
        headers, lengths = _parse_fields(text)
    else:
        length = headers.get("content-length")
        lengths = {length} if length is not None else set()
    connection = headers.get("connection", "").lower()
    keep = text.startswith("HTTP/1.1") and "close" not in connection
    encoding = headers.get("transfer-encoding")
    if status in _BODILESS:
        return status, text, headers, -1, False, keep
    if encoding is not None:
        if encoding.strip().lower() != "chunked" or lengths:
            raise UpstreamError("unsupported transfer encoding")
        return status, text, headers, -1, True, keep
    if lengths:
        (raw,) = lengths if len(lengths) == 1 else (None,)
        if raw is None or not raw.isdigit() or not raw.isascii() or len(raw) > 12:
            raise UpstreamError("bad content length")
        return status, text, headers, int(raw), False, keep
    return status, text, headers, -1, False, False  # framed by the close of the connection


FRAMING_FIELDS: Final = frozenset(
    {"content-length", "transfer-encoding", "connection", "content-type", "content-encoding"}
)
"""Header fields picked out of every answer head (the rest is parsed only when asked for)."""
_FIELD_KEYS: Final = tuple((name, f"\r\n{name}:") for name in sorted(FRAMING_FIELDS))


def _framing_fields(text: str) -> dict[str, str] | None:
    """Return the FRAMING_FIELDS of a checked head, or None when one of them is repeated."""
    low = text.lower()
    found: dict[str, str] = {}
    for name, key in _FIELD_KEYS:
        start = low.find(key)
        if start < 0:
            continue
        start += len(key)
        if low.find(key, start) >= 0:
            return None
        found[name] = text[start : text.index("\r\n", start)].strip(" \t")
    return found


def _parse_fields(text: str) -> tuple[dict[str, str], set[str]]:
    """Return every header of a checked head (repeats joined) and its Content-Length values."""
    headers: dict[str, str] = {}
    lengths: set[str] = set()
    for line in text.split("\r\n")[1:-1]:
        name, _, value = line.partition(":")
        name = name.lower()
        value = value.strip(" \t")
        if name == "content-length":
            lengths.add(value)
        old = headers.get(name)
        headers[name] = value if old is None else f"{old}, {value}"
    return headers, lengths


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(UpstreamError("timeout"))
