"""The fast lane's vocabulary: what the lane and the handlers that answer on it share.

The lane (gateway/web/fastlane_front.py, installed by gateway/web/fastlane_server.py) answers
the hottest routes straight from the socket. A handler that answers there gets a `LaneRequest`
and gives back an `Answer` (status line and headers, body), an awaitable of one, or a `Later`
it delivers by a call; `Reply` is an answer both roads (aiohttp and the lane) can send. The
`Lane` an app serves, under `LANE`, names the cached-script lookup and the answerers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final, Protocol

from aiohttp import web
from multidict import CIMultiDict

from gateway.web.deadlines import Deadlines


@dataclass(slots=True)
class LaneRequest:
    """One parsed request as the lane's handlers see it (header names lower-cased)."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    peer: str | None
    secure: bool = False
    """Whether the connection is TLS the gateway terminates (`tls.enabled`): aiohttp's
    `request.secure`."""


Answer = tuple[bytes, bytes]
"""(status line + headers without Date/Server/Content-Length, body)."""


class LaterWriter(Protocol):
    """What writes a `Later` once it is delivered (the lane's connection, `FrontProtocol`)."""

    def _settled(self, later: Later) -> None: ...


class Later:
    """An answer that its answerer delivers later by a call: `resolve`, `fail` or `cancel`.

    Cheaper than a future for the lane's busiest answers (proxied hits): no done callback,
    no loop turn between the answer and its write. The lane `attach`es to it as soon as the
    answerer returns it; an answer delivered before that is kept until then. The first call
    counts; `cancel` (shutdown) writes nothing, like a cancelled task.
    """

    __slots__ = ("_answer", "_conn", "_error", "_extra", "_target", "done")

    def __init__(self) -> None:
        self.done = False
        """Whether it was resolved, failed or cancelled."""
        self._answer: Answer | None = None
        self._error: BaseException | None = None
        self._conn: LaterWriter | None = None
        self._extra = b""
        self._target = ""

    def resolve(self, answer: Answer) -> None:
        """Deliver the answer (written at once when the lane is attached)."""
        if not self.done:
            self.done = True
            self._answer = answer
            if self._conn is not None:
                self._conn._settled(self)

    def fail(self, error: Exception) -> None:
        """Deliver an unexpected error (logged; answered with the bare JSON 500)."""
        if not self.done:
            self.done = True
            self._error = error
            if self._conn is not None:
                self._conn._settled(self)

    def cancel(self) -> None:
        """Drop the answer (shutdown): nothing is written."""
        if not self.done:
            self.done = True
            if self._conn is not None:
                self._conn._settled(self)


HitAnswerer = Callable[[LaneRequest], Awaitable[Answer] | Later | None]
"""Return the answer of a hit route (an awaitable or a `Later`), or None when the lane must not
take it."""


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer both ways: `response()` for aiohttp, `encode()` for the lane.

    Headers are (name, value) pairs so a name may repeat (Set-Cookie); values must already be
    safe header text (no CR/LF), as for any aiohttp header.
    """

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def response(self) -> web.Response:
        """Return the aiohttp response."""
        headers = CIMultiDict(self.headers)
        if self.status in (204, 304):
            return web.Response(status=self.status, headers=headers)
        return web.Response(status=self.status, body=self.body, headers=headers)

    def encode(self) -> Answer:
        """Return the status line and headers, and the body, for the lane."""
        reason = HTTPStatus(self.status).phrase if self.status in _KNOWN_STATUS else ""
        head = [f"HTTP/1.1 {self.status} {reason}\r\n"]
        head += [f"{name}: {value}\r\n" for name, value in self.headers]
        return "".join(head).encode("latin-1"), self.body


_KNOWN_STATUS: Final = frozenset(s.value for s in HTTPStatus)


class Lane:
    """What the lane serves: cached scripts and the routes of its answerers (hits, API, /e).

    Each answerer looks at a request and returns its answer (an awaitable) or None: the first
    that takes it answers; a request nobody takes hands the connection to aiohttp. An answerer
    returns None too for what it would rather have aiohttp decide (e.g. a body over its own
    size limit: aiohttp answers the 413). `body_limit` bounds what the lane reads at all.
    """

    def __init__(
        self,
        cached_script: Callable[[str, str, str | None, str | None], Answer | None] | None,
        answerers: Sequence[HitAnswerer],
        body_limit: int,
        deadlines: Deadlines | None = None,
    ) -> None:
        self.cached_script = cached_script
        self.answerers = tuple(answerers)
        self.body_limit = body_limit
        self.deadlines = deadlines or Deadlines()
        self.fast = 0
        """Requests answered by the lane."""
        self.handed_over = 0
        """Connections given to aiohttp."""


LANE = web.AppKey("fast_lane", Lane)
