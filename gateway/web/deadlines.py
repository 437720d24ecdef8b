"""Deadlines of the fast lane's connections: slow heads, stalled bodies, idle keep-alives.

The rules are pure: the lane's sweep passes each connection's state and the loop's clock
(`DEADLINES` puts them on the app, where aiohttp's side reads them for bodies). A head must be
complete within `head` seconds of its first byte; a body must not stall (no byte) for `body`
seconds; an idle keep-alive connection (nothing buffered, no answer in flight), or one whose
client has not read its answers for that long, is closed after `keepalive` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final, Protocol

from aiohttp import web


class Wait(Enum):
    """What a connection waits for."""

    IDLE = "idle"
    """Nothing buffered: the next request."""
    HEAD = "head"
    """The rest of a request head."""
    BODY = "body"
    """The rest of a request body."""
    CLIENT = "client"
    """The client to read its answers (writing is paused)."""
    ANSWER = "answer"
    """An answer in flight (never timed out here: its answerer bounds it)."""


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Seconds a connection may wait in each state (server.*_timeout_seconds)."""

    head: float = 10.0
    body: float = 30.0
    keepalive: float = 75.0

    @property
    def sweep_every(self) -> float:
        """How often the lane looks: half the shortest deadline, 50 ms to 5 s (a deadline is
        enforced within 1.5 times its length; the defaults sweep every 5 s, as before)."""
        return min(5.0, max(0.05, min(self.head, self.body, self.keepalive) / 2))


class Expiry(Enum):
    """Why a connection is closed."""

    HEAD = "request head timeout"
    """Answered 408."""
    BODY = "request body timeout"
    """Answered 408."""
    IDLE = "idle keep-alive timeout"
    """Closed silently."""
    STALLED = "client not reading"
    """Closed silently."""


REFUSED: Final = frozenset({Expiry.HEAD, Expiry.BODY})
"""Expiries answered with 408 (a request was under way)."""


def expired(
    deadlines: Deadlines, wait: Wait, now: float, head_start: float, last: float
) -> Expiry | None:
    """Return why a connection waiting for `wait` is past its deadline, else None.

    `head_start`: when the first byte of the unfinished head came; `last`: the last byte read
    or answer written.
    """
    if wait is Wait.HEAD:
        return Expiry.HEAD if now - head_start > deadlines.head else None
    if wait is Wait.BODY:
        return Expiry.BODY if now - last > deadlines.body else None
    if wait is Wait.IDLE:
        return Expiry.IDLE if now - last > deadlines.keepalive else None
    if wait is Wait.CLIENT:
        return Expiry.STALLED if now - last > deadlines.keepalive else None
    return None


class _ServerTimeouts(Protocol):
    @property
    def head_timeout_seconds(self) -> float: ...
    @property
    def body_timeout_seconds(self) -> float: ...
    @property
    def keepalive_seconds(self) -> float: ...


def deadlines_of(server: _ServerTimeouts) -> Deadlines:
    """Return the deadlines of a `[server]` config section."""
    return Deadlines(
        head=server.head_timeout_seconds,
        body=server.body_timeout_seconds,
        keepalive=server.keepalive_seconds,
    )


DEADLINES: Final = web.AppKey("deadlines", Deadlines)
"""The app's deadlines (aiohttp's side reads bodies with the same stall deadline)."""
