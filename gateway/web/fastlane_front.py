"""Fast lane: the hottest proxy routes answered straight from the socket, the rest by aiohttp.

Every accepted connection starts on `FrontProtocol`. It reads plain HTTP/1.1 requests and
answers the ones it knows well — a cached script that is fresh (`ScriptProxy.cached_answer`) and
the pixel hit routes (`HitProxy.fast_answer`) — without building aiohttp request, response and
middleware objects (on the benchmark machine those cost more than the proxy work itself). On the
first request it does not take, it hands the connection to an ordinary aiohttp `RequestHandler`
with every byte not yet consumed, and the connection stays with aiohttp from then on; answers
already queued are written first, so the order of answers is the order of requests.

Taken only when unambiguous: `GET`/`POST` with an origin-form target, HTTP/1.1, a head of at most
`MAX_HEAD` bytes in CRLF lines of well-formed tokens and visible characters, a `Host`, at most
`MAX_HEADERS` header lines, no repeated header, no `Transfer-Encoding`, `Expect`, `Upgrade` or
`Content-Encoding`, a `Content-Length` of digits only (none for `GET`), and a body of at most the
route's limit. Anything else (HTTP/1.0, `HEAD`, bare-LF lines, chunked or compressed bodies, an
oversized head or body, a script that is not a fresh cache hit, any other path) goes to aiohttp,
which keeps its own limits, errors and middlewares; tests/integration/test_edge_parity.py holds
the two to the same status and connection fate for generated heads.

What the middlewares do is done here too: a sane `X-Request-Id` is echoed, and an unexpected
exception is logged and answered with the same bare JSON 500. Answers carry `Date`, aiohttp's
`Server` value and `Content-Length`; a `close` token in `Connection` is honoured. Deadlines
(gateway/web/deadlines.py): a slow head or a stalled body is answered 408 and closed (one log
line with the reason), an idle keep-alive connection is closed after the keep-alive timeout
(aiohttp's is set to the same). Write back-pressure: while the transport's buffer is over its
high-water mark (`pause_writing`), the lane stops reading and answering until it drains, so a
client that pipelines requests and never reads its answers cannot make the gateway buffer them.
Installed by `FastRunner` (an `AppRunner`), which `gateway.app.make_runner` builds. Over TLS
(`[tls]`, gateway/web/tls.py) the protocol sits on the TLS transport and reads decrypted bytes;
a handover gives aiohttp that same transport, and `LaneRequest.secure` tells the handlers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable
from email.utils import formatdate
from functools import partial
from typing import Any, Final, Protocol, cast

from aiohttp.http import SERVER_SOFTWARE

from gateway.store.availability import RETRY_AFTER_SECONDS, StoreUnavailableError
from gateway.web.deadlines import REFUSED, Expiry, Wait, expired
from gateway.web.fastlane import Answer, Lane, LaneRequest, Later

log = logging.getLogger("signalgate.web")

MAX_HEAD: Final = 8190
"""Largest request head (request line + headers) the lane parses; a bigger one goes to aiohttp."""
_LINGER_SECONDS: Final = 1.0
"""After a 408, bytes still coming are read and dropped this long before the close."""
MAX_HEADERS: Final = 128
"""Most header lines the lane takes (aiohttp's `max_headers`); more go to aiohttp."""
_LINE_RE: Final = re.compile(rb"(?:GET|POST) /[\x21-\x7e]* HTTP/1\.1\r\n")
_BLOCK_RE: Final = re.compile(rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e]*\r\n)*")
"""A request head the lane takes: request line and header lines (obs-fold and controls refused)."""
_REFUSED: Final = frozenset({"transfer-encoding", "expect", "upgrade", "content-encoding"})
_REQUEST_ID_MAX: Final = 64
_SERVER_LINE: Final = f"Server: {SERVER_SOFTWARE}\r\n".encode("latin-1")
_CLOSE_LINE: Final = b"Connection: close\r\n"
_BODILESS: Final = frozenset({b"204", b"304", *(b"1%02d" % n for n in range(100))})
_ERROR_500: Final = json.dumps({"error": "internal", "message": "internal error"}).encode()


class _Clock:
    """The Date header, formatted once per second."""

    __slots__ = ("_line", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def date_line(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._line = f"Date: {formatdate(now, usegmt=True)}\r\n".encode("ascii")
        return self._line


_CLOCK: Final = _Clock()


def _frame(head: bytes, body: bytes, extra: bytes) -> bytes:
    # 204, 304 and 1xx answers carry no body and (like aiohttp's) no Content-Length.
    bodiless = head[9:12] in _BODILESS
    length = b"\r\n" if bodiless else b"Content-Length: %d\r\n\r\n" % len(body)
    return b"".join(
        (head, extra, _CLOCK.date_line(), _SERVER_LINE, length, b"" if bodiless else body)
    )


def error_500() -> Answer:
    """Return the answer of an unexpected exception (the errors middleware's JSON 500)."""
    return (
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json; charset=utf-8\r\n",
        _ERROR_500,
    )


def failure_answer(error: BaseException, target: str) -> Answer:
    """Return the answer of an answerer's exception: 503 when the store cannot write (the
    store logged that once), else the logged JSON 500 (the errors middleware's answers)."""
    if isinstance(error, StoreUnavailableError):
        body = json.dumps({"error": "store_unavailable", "message": str(error)}).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8"
            f"\r\nRetry-After: {RETRY_AFTER_SECONDS}\r\n"
        )
        return head.encode("ascii"), body
    log.error("Unhandled error.", exc_info=error, extra={"path": target.partition("?")[0]})
    return error_500()


class FrontServer(Protocol):
    """What a front connection uses of its server (`FastServer`, gateway/web/fastlane_server.py)."""

    loop: asyncio.AbstractEventLoop
    lane: Lane
    front: set[FrontProtocol]
    tasks: set[asyncio.Future[Any]]
    later: int
    closing: bool

    def later_settled(self) -> None: ...

    def aiohttp_handler(self) -> Any: ...


class _FrontState(Protocol):
    """The part of `FrontProtocol` its deadlines mixin uses."""

    _server: FrontServer
    _transport: asyncio.Transport | None
    _buf: bytes
    _busy: bool
    _close_after: bool
    _closed: bool
    _head_start: float
    _last: float
    _linger_until: float
    _waiting_body: bool
    _write_paused: bool

    def _reading(self) -> None: ...

    def wait(self) -> Wait: ...

    def close(self) -> None: ...


class FrontDeadlines:
    """The deadlines of a front connection (the rules are gateway/web/deadlines.py's): what it
    waits for, the sweep that closes it past its deadline, and what a stopping server looks at.
    A mixin of `FrontProtocol`, whose per-request methods stay in that class."""

    __slots__ = ()

    def wait(self: _FrontState) -> Wait:
        """What the connection waits for (its deadline's kind)."""
        if self._busy:
            return Wait.ANSWER
        if self._write_paused:
            return Wait.CLIENT
        if not self._buf:
            return Wait.IDLE
        return Wait.BODY if self._waiting_body else Wait.HEAD

    def sweep(self: _FrontState, now: float) -> None:
        """Close the connection if it is past a deadline (408 for an unfinished request)."""
        if self._linger_until:
            if now >= self._linger_until:
                self.close()
            return
        expiry = expired(
            self._server.lane.deadlines, self.wait(), now, self._head_start, self._last
        )
        if expiry is None:
            return
        transport = self._transport
        if expiry is Expiry.STALLED and transport is not None and not self._closed:
            transport.abort()  # its answers are never read: drop them instead of flushing
            return
        if expiry not in REFUSED or transport is None or self._closed:
            self.close()
            return
        log.info("Request refused.", extra={"status": 408, "reason": expiry.value})
        head, body = _timeout_408()
        transport.write(_frame(head, body, _CLOSE_LINE))
        # Lingering close: a close with unread bytes would reset the connection and could
        # destroy the 408 on its way; what still comes is read and dropped for a moment.
        self._close_after = True
        self._buf = b""
        self._linger_until = now + _LINGER_SECONDS
        if transport.can_write_eof():
            transport.write_eof()
        self._reading()

    @property
    def busy(self: _FrontState) -> bool:
        """Whether an answer is in flight."""
        return self._busy

    @property
    def receiving(self: _FrontState) -> bool:
        """Whether part of a request has arrived and the rest is awaited (a stopping server
        lets it finish within the grace period)."""
        return bool(self._buf) and not self._closed and not self._close_after

    def close(self: _FrontState) -> None:
        """Close the connection (shutdown, idle sweep)."""
        if self._transport is not None and not self._closed:
            self._transport.close()


class FrontProtocol(FrontDeadlines, asyncio.Protocol):
    """One client connection: fast answers in order until the first request aiohttp must take."""

    __slots__ = (
        "_buf",
        "_busy",
        "_close_after",
        "_closed",
        "_head_start",
        "_last",
        "_linger_until",
        "_paused",
        "_peer",
        "_secure",
        "_server",
        "_transport",
        "_waiting_body",
        "_write_paused",
    )

    def __init__(self, server: FrontServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._busy = False
        self._paused = False
        self._close_after = False
        self._closed = False
        self._peer: str | None = None
        self._secure = False
        self._last = 0.0
        self._head_start = 0.0
        """When the first byte of the unfinished head came."""
        self._waiting_body = False
        self._write_paused = False
        self._linger_until = 0.0
        """After a 408: when the connection is closed (what comes until then is dropped)."""

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = self._transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, tuple) and peer else None
        # Over TLS (web/tls.py) the transport decrypts; the lane and aiohttp read plain bytes.
        self._secure = self._transport.get_extra_info("sslcontext") is not None
        self._last = self._server.loop.time()
        self._server.front.add(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._closed = True
        self._server.front.discard(self)

    def data_received(self, data: bytes) -> None:
        if self._linger_until:
            return  # refused (408): dropped until the close
        now = self._server.loop.time()
        if not self._buf:
            self._head_start = now
        self._buf += data
        self._last = now
        if not self._busy and not self._write_paused:
            self._process()
        else:
            self._reading()

    def pause_writing(self) -> None:
        self._write_paused = True  # the client does not read: stop reading and answering
        self._reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._last = self._server.loop.time()
        self._reading()
        if self._buf and not self._busy and not self._closed:
            self._process()

    def _reading(self) -> None:
        """Pause reading while writing is paused or a pipelining client waits on an answer in
        flight with a full buffer; resume otherwise."""
        transport = self._transport
        if transport is None or self._closed:
            return
        hold = (self._write_paused and not self._linger_until) or (
            self._busy and len(self._buf) > 4 * MAX_HEAD
        )
        if hold != self._paused:
            self._paused = hold
            if hold:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def eof_received(self) -> bool:
        return False  # closes the transport; an in-flight answer is dropped with it

    # --- requests ---------------------------------------------------------------------------
    def _process(self) -> None:
        lane = self._server.lane
        while self._buf and not self._closed and not self._close_after and not self._write_paused:
            buf = self._buf
            self._waiting_body = False
            end = buf.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
            if end < 0:
                if len(buf) > MAX_HEAD or buf.count(b"\n") != buf.count(b"\r\n"):
                    self._hand_over()  # too long, or bare-LF lines: aiohttp decides
                return
            request = self._parse(buf, end + 2)
            if request is None:
                self._hand_over()
                return
            method, target, headers, length = request
            start = end + 4
            if len(buf) - start < length:
                self._waiting_body = True
                return  # the body is still coming (length is bounded by the lane's limit)
            answer: Answer | None = None
            pending: Awaitable[Answer] | Later | None = None
            if method == "GET" and lane.cached_script is not None:
                answer = lane.cached_script(
                    target,
                    headers.get("host", ""),
                    headers.get("accept-encoding"),
                    headers.get("if-none-match"),
                )
            if answer is None and lane.answerers:
                lane_request = LaneRequest(
                    method, target, headers, buf[start : start + length], self._peer, self._secure
                )
                try:
                    for answerer in lane.answerers:
                        pending = answerer(lane_request)
                        if pending is not None:
                            break
                except Exception as exc:
                    answer = failure_answer(exc, target)
            if answer is None and pending is None:
                self._hand_over()
                return
            self._buf = buf[start + length :]
            self._head_start = self._last  # (the next head came with the last bytes read)
            lane.fast += 1
            connection = headers.get("connection")
            if self._server.closing or (connection is not None and _closes(connection)):
                self._close_after = True  # (a stopping server answers, then closes)
            extra = _request_id_line(headers.get("x-request-id"))
            if answer is not None:
                self._write(answer, extra)
                continue
            assert pending is not None
            self._busy = True
            if type(pending) is Later:  # written by `_settled` when it is delivered
                pending._conn = self
                pending._extra = extra
                pending._target = target
                self._server.later += 1
                if pending.done:
                    self._settled(pending)
                return
            if isinstance(pending, asyncio.Future):  # no task needed: written when it is done
                self._server.tasks.add(pending)
                pending.add_done_callback(partial(self._done, extra, target))
                return
            assert not isinstance(pending, Later)
            task = self._server.loop.create_task(self._finish(pending, extra, target))
            self._server.tasks.add(task)
            task.add_done_callback(self._server.tasks.discard)
            return

    async def _finish(self, pending: Awaitable[Answer], extra: bytes, target: str) -> None:
        try:
            answer = await pending
        except Exception as exc:
            answer = failure_answer(exc, target)
        self._complete(answer, extra)

    def _done(self, extra: bytes, target: str, pending: asyncio.Future[Answer]) -> None:
        """`_finish` for an answer that is a future (its done callback)."""
        self._server.tasks.discard(pending)
        if pending.cancelled():
            return  # shutdown: like a cancelled task, nothing is written
        error = pending.exception()
        answer = pending.result() if error is None else failure_answer(error, target)
        self._complete(answer, extra)

    def _settled(self, later: Later) -> None:
        """`_done` for a `Later` (called by it once it is delivered)."""
        later._conn = None
        self._server.later_settled()
        error = later._error
        if error is not None:
            self._complete(failure_answer(error, later._target), later._extra)
        elif later._answer is not None:
            self._complete(later._answer, later._extra)
        # else cancelled (shutdown): like a cancelled task, nothing is written

    def _complete(self, answer: Answer, extra: bytes) -> None:
        self._busy = False
        self._last = self._server.loop.time()
        self._write(answer, extra)
        self._reading()
        if self._buf and not self._closed and not self._write_paused:
            self._process()

    def _write(self, answer: Answer, extra: bytes) -> None:
        transport = self._transport
        if transport is None or self._closed:
            return
        head, body = answer
        if self._close_after:
            extra += _CLOSE_LINE
        transport.write(_frame(head, body, extra))
        if self._close_after:
            transport.close()

    def _parse(self, buf: bytes, head_end: int) -> tuple[str, str, dict[str, str], int] | None:
        """Return method, target, headers and body length of a head the lane takes, else None."""
        line_end = buf.find(b"\r\n", 0, head_end)
        if _LINE_RE.fullmatch(buf, 0, line_end + 2) is None:
            return None
        block = buf[line_end + 2 : head_end]
        known = _BLOCKS.get(block, _UNSEEN)
        if known is _UNSEEN:  # a client sends the same header lines again and again
            known = _read_block(block)
            if len(block) <= _MEMO_BLOCK_MAX:
                if len(_BLOCKS) >= _MEMO_BLOCKS:
                    _BLOCKS.clear()
                _BLOCKS[block] = known
        if known is None:
            return None
        if "host" not in known:
            return None  # HTTP/1.1 without Host: aiohttp refuses it (400)
        headers = dict(known)  # the handlers' own copy
        method, target, _ = buf[:line_end].decode("latin-1").split(" ")
        raw_length = headers.get("content-length")
        if raw_length is None:
            return (method, target, headers, 0) if method == "GET" else None
        if not raw_length.isdigit() or not raw_length.isascii() or len(raw_length) > 9:
            return None
        length = int(raw_length)
        if (method == "GET" and length) or length > self._server.lane.body_limit:
            return None
        return method, target, headers, length

    def _hand_over(self) -> None:
        """Give the connection, with every byte not yet consumed, to aiohttp for good."""
        transport = self._transport
        if transport is None or self._closed:
            return
        self._server.lane.handed_over += 1
        self._server.front.discard(self)
        self._closed = True
        handler = self._server.aiohttp_handler()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self._write_paused:  # the transport tells aiohttp when the buffer drains
            handler.pause_writing()
        if self._paused:
            self._paused = False
            transport.resume_reading()
        data, self._buf = self._buf, b""
        if data:
            handler.data_received(data)


def _read_block(block: bytes) -> dict[str, str] | None:
    """The header fields of a head's header lines (names lower-cased), or None when the lane
    does not take them (malformed, a repeated or refused field)."""
    if _BLOCK_RE.fullmatch(block) is None or block.count(b"\n") > MAX_HEADERS:
        return None
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n")[:-1]:
        name, _, value = line.partition(":")
        name = name.lower()
        if name in headers or name in _REFUSED:
            return None
        headers[name] = value.strip(" \t")
    return headers


_BLOCKS: dict[bytes, dict[str, str] | None] = {}
"""Header blocks seen lately and what they hold (never handed out: callers get copies)."""
_UNSEEN: Final[Any] = object()
_MEMO_BLOCKS: Final = 256
_MEMO_BLOCK_MAX: Final = 2048


def _closes(connection: str) -> bool:
    """Whether a Connection value holds the `close` token (`keep-alive, close` does)."""
    value = connection.lower()
    return value == "close" or (
        "close" in value and any(token.strip() == "close" for token in value.split(","))
    )


_ERROR_408: Final = json.dumps({"error": "request_timeout", "message": "request timeout"}).encode()


def _timeout_408() -> Answer:
    return (
        b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json; charset=utf-8\r\n",
        _ERROR_408,
    )


def _request_id_line(given: str | None) -> bytes:
    """Echo a sane client X-Request-Id (the request-id middleware's rule)."""
    if (
        given
        and len(given) <= _REQUEST_ID_MAX
        and given.replace("-", "").isalnum()
        and given.isascii()
    ):
        return f"X-Request-Id: {given}\r\n".encode("ascii")
    return b""
