"""A lean keep-alive HTTP/1.1 client for the hit proxy's upstreams (gateway/web/hits.py): the
pool of connections to the allow-listed origins, the requests and their deadlines.

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
* **Answers.** Read by the strict parser of gateway/web/upstream.py (its docstring has the
  rules): a connection with one request in flight at most, its answer parsed as it comes.
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
from typing import Any, Final
from urllib.parse import urlsplit

from gateway.web.upstream import (
    ClosedBeforeAnswer,
    UpstreamAnswer,
    UpstreamConn,
    UpstreamError,
    Waiter,
)

IDLE_SECONDS: Final = 30.0
"""Idle keep-alive connections are closed after this long (servers close theirs at 60-75 s)."""
MAX_PER_ORIGIN: Final = 64
"""Open connections per origin at most."""

_TARGET_RE: Final = re.compile(r"/[\x21-\x7e]*")
_NAME_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE_RE: Final = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


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


class _OriginPool:
    """The connections of one origin."""

    def __init__(self, owner: UpstreamPool, origin: Origin) -> None:
        self.owner = owner
        self.origin = origin
        self.idle: list[UpstreamConn] = []
        self.conns: set[UpstreamConn] = set()
        """Every connection that holds a slot (connecting, busy or idle)."""
        self.open = 0
        self.waiting: deque[asyncio.Future[UpstreamConn | None]] = deque()

    def release(self, conn: UpstreamConn) -> None:
        """Give a connection with a complete answer back (to a waiting request, else idle)."""
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_result(conn)
                return
        conn.idle_since = self.owner.loop.time()
        self.idle.append(conn)

    def forget(self, conn: UpstreamConn) -> None:
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

    def take_idle(self) -> UpstreamConn | None:
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
        self._conn: UpstreamConn | None = None
        self._waiter: Waiter | None = None

    def start(self, conn: UpstreamConn) -> None:
        """Write the request on `conn`; it fails with "timeout" at the deadline."""
        future: asyncio.Future[UpstreamAnswer] = self.owner.loop.create_future()
        self._waiter = waiter = Waiter(future, self._limit, conn.used)
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
            except ClosedBeforeAnswer:
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
        if isinstance(error, ClosedBeforeAnswer) or not isinstance(error, UpstreamError):
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
        self._outgoing: list[tuple[UpstreamConn, Waiter, bytes]] = []
        """Requests begun in this loop turn, written together at its end (`_write_out`)."""

    def write_soon(self, conn: UpstreamConn, waiter: Waiter, data: bytes) -> None:
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

    async def _acquire(self, pool: _OriginPool, deadline: float) -> UpstreamConn:
        while True:
            conn = pool.take_idle()
            if conn is not None:
                return conn
            if pool.open < self.max_per_origin:
                return await self._connect(pool, deadline)
            future: asyncio.Future[UpstreamConn | None] = self.loop.create_future()
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

    async def _connect(self, pool: _OriginPool, deadline: float) -> UpstreamConn:
        origin = pool.origin
        pool.open += 1
        conn = UpstreamConn(pool)
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


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(UpstreamError("timeout"))
