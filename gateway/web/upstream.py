"""One keep-alive connection to a hit upstream and the answers read on it: the wire half of the
lean HTTP/1.1 client of the hit proxy (gateway/web/hits.py). The pool that owns the connections,
allow-lists the origins, builds the requests and keeps their deadlines is
gateway/web/upstream_pool.py (its docstring has the client's rules).

A connection has at most one request in flight; its answer is parsed as the bytes come, by a
strict minimal parser:

* **Answers.** `HTTP/1.1` or `HTTP/1.0`, a status 200-599 (1xx is refused: no `Expect` is ever
  sent), a head of at most `MAX_HEAD` bytes of well-formed header lines (no obs-fold, no
  controls), a body framed by `Content-Length` (digits only; conflicting copies refused) or
  `Transfer-Encoding: chunked` (strictly parsed; trailers skipped) or, without either, by the
  close of the connection; 204/304 have no body. A body over the request's `limit` fails it.
  Header names are lower-cased; repeated headers are joined with ", ".

Every failure is an `UpstreamError` with a short reason (never request or answer content).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Final, Protocol, cast

MAX_HEAD: Final = 16_384
"""Largest answer head (status line + headers) accepted."""
MAX_CHUNK_LINE: Final = 1_024
"""Largest chunk-size line (with extensions) or trailer line of a chunked answer."""

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


class Waiter:
    """The answer of one request being read on a connection."""

    __slots__ = ("future", "limit", "reused")

    def __init__(self, future: asyncio.Future[UpstreamAnswer], limit: int, reused: bool) -> None:
        self.future = future
        self.limit = limit
        self.reused = reused


class UpstreamConn(asyncio.Protocol):
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

    def __init__(self, pool: ConnPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = False
        self.idle_since = 0.0
        self.slot = True
        """Whether this connection still counts against the origin's limit."""
        self._buf = bytearray()
        self._waiter: Waiter | None = None
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

    def send(self, data: bytes, waiter: Waiter) -> None:
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

    def write_now(self, waiter: Waiter, data: bytes) -> None:
        """Write the queued request of `waiter` unless it was given up (or failed) meanwhile."""
        if self._waiter is waiter and not self.closed and self.transport is not None:
            self.transport.write(data)

    def abandon(self, waiter: Waiter) -> None:
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
            error = ClosedBeforeAnswer(reason) if retry and waiter.reused else UpstreamError(reason)
            waiter.future.set_exception(error)
        self.close()


class ClosedBeforeAnswer(UpstreamError):
    """A reused connection was closed before its answer began (may be sent again if a GET)."""


class RequestWriter(Protocol):
    """What writes the requests of connections (`UpstreamPool.write_soon`)."""

    def write_soon(self, conn: UpstreamConn, waiter: Waiter, data: bytes) -> None: ...


class ConnPool(Protocol):
    """What a connection needs of its origin's pool (gateway/web/upstream_pool.py)."""

    @property
    def owner(self) -> RequestWriter: ...

    def release(self, conn: UpstreamConn) -> None: ...

    def forget(self, conn: UpstreamConn) -> None: ...


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
