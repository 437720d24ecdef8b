"""The server and runner that put accepted connections on the fast lane
(gateway/web/fastlane_front.py) and let it drain on shutdown.

Installed by `FastRunner` (an `AppRunner`), which `gateway.app.make_runner` builds: an app that
holds a `Lane` (under `LANE`, gateway/web/fastlane.py) gets a `FastServer`, whose connections
start on `FrontProtocol`; the lane's sweeper and a stopping server's grace period live here.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from aiohttp import web

from gateway.web.fastlane import LANE, Lane
from gateway.web.fastlane_front import FrontProtocol

_DRAIN_POLL: Final = 0.02
"""While stopping, how often connections that are still receiving a request are looked at."""


class FastServer(web.Server):
    """aiohttp's Server whose connections start on the fast lane."""

    def __init__(self, base: web.Server, lane: Lane, loop: asyncio.AbstractEventLoop) -> None:
        kwargs: dict[str, Any] = dict(getattr(base, "_kwargs", {}))
        kwargs.setdefault("keepalive_timeout", lane.deadlines.keepalive)
        super().__init__(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=loop,
            **kwargs,
        )
        self.loop = loop
        self.lane = lane
        self.front: set[FrontProtocol] = set()
        self.tasks: set[asyncio.Future[Any]] = set()
        """Answers in flight (tasks, or futures the answerers resolve)."""
        self.later = 0
        """`Later` answers in flight."""
        self._drained: asyncio.Future[None] | None = None
        self.closing = False
        """Set by `pre_shutdown`: answers close their connections."""
        self._sweeper: asyncio.TimerHandle | None = loop.call_later(
            lane.deadlines.sweep_every, self._sweep
        )

    def __call__(self) -> Any:
        """Return the protocol of a new connection (the fast lane's)."""
        return FrontProtocol(self)

    def aiohttp_handler(self) -> Any:
        """Return a new aiohttp RequestHandler of this server."""
        return super().__call__()

    def _sweep(self) -> None:
        now = self.loop.time()
        for conn in list(self.front):
            conn.sweep(now)
        self._sweeper = self.loop.call_later(self.lane.deadlines.sweep_every, self._sweep)

    def later_settled(self) -> None:
        """Count a `Later` answer delivered (wakes a shutdown waiting for the last one)."""
        self.later -= 1
        drained = self._drained
        if not self.later and drained is not None and not drained.done():
            drained.set_result(None)

    def pre_shutdown(self) -> None:
        """Close idle fast-lane connections too (aiohttp closes its own); from now on each
        answer closes its connection."""
        super().pre_shutdown()
        self.closing = True
        for conn in list(self.front):
            if not conn.busy and not conn.receiving:
                conn.close()

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - aiohttp API
        """Let answers in flight and requests half received finish (bounded), then close
        every connection."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        wait = timeout if timeout is not None else self.lane.deadlines.keepalive
        deadline = self.loop.time() + wait
        while (left := deadline - self.loop.time()) > 0:
            waits: list[asyncio.Future[Any]] = list(self.tasks)
            if self.later:
                self._drained = self.loop.create_future()
                waits.append(self._drained)
            receiving = any(conn.receiving for conn in self.front)
            if not waits and not receiving:
                break
            if waits:  # a request still arriving is looked at again every _DRAIN_POLL
                await asyncio.wait(waits, timeout=min(left, _DRAIN_POLL) if receiving else left)
            else:
                await asyncio.sleep(min(left, _DRAIN_POLL))
        for task in list(self.tasks):  # past the grace period: like aiohttp's handlers
            task.cancel()
        for conn in list(self.front):
            conn.close()
        self.front.clear()
        await super().shutdown(timeout)


class FastRunner(web.AppRunner):
    """An AppRunner whose server puts connections on the app's fast lane (when it has one)."""

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        lane = self.app.get(LANE)
        if lane is None:
            return base
        return FastServer(base, lane, asyncio.get_running_loop())
