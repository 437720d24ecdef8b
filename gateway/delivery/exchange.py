"""One request of a route and its answer: the route's HTTP client, the access token a destination
may need first, the send, the read and the destination's verdict on the answer.

`Exchange` is a mixin of `Worker` (gateway/delivery/worker.py): it reads the worker's
destination, client, clock and counters, and touches nothing of the outbox.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Sequence

import httpx

from gateway.core.debuglog import SentLog
from gateway.core.event import Event
from gateway.delivery import redact
from gateway.delivery.http1 import Http1Transport
from gateway.delivery.routestats import RouteStats
from gateway.delivery.sentlog import note_sent
from gateway.delivery.unbind import unbind
from gateway.destinations.base import BatchVerdict, Destination, Outcome, Retry
from gateway.destinations.tokens import TokenUser


def make_client(
    timeout: float, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """Return the HTTP client of one route: no redirects followed, bounded timeouts; its
    request log lines carry no query string (tokens; gateway/delivery/redact.py). Its transport
    is `Http1Transport` (gateway/delivery/http1.py) unless one is given or the environment
    names an HTTP proxy (httpx's own transport honours it)."""
    redact.install()
    if transport is None and not urllib.request.getproxies():
        transport = Http1Transport()
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        headers={"user-agent": "signalgate/0.1"},
    )


class Exchange:
    """Sends one batch of a route and returns the destination's verdict: a mixin of `Worker`."""

    destination: Destination
    client: httpx.AsyncClient
    clock: Callable[[], float]
    stats: RouteStats
    sent: SentLog | None
    last_status: int | None
    _checked: Destination | None
    _tokens: TokenUser | None

    async def _request(self, events: Sequence[Event]) -> BatchVerdict:
        refused = await self._refresh_token()
        if refused is not None:
            return BatchVerdict(refused)
        request = self.destination.build_request(events)
        started = self.clock()
        self.stats.requests += 1
        try:
            response = await self.client.send(request)
            await response.aread()
        except httpx.TimeoutException:
            return BatchVerdict(Retry("timeout"))
        except httpx.TransportError as exc:
            return BatchVerdict(Retry(f"transport error: {type(exc).__name__}"))
        finally:
            self.stats.latency_sum += self.clock() - started
        self.last_status = response.status_code
        try:
            verdict = self.destination.classify(events, response, self.clock())
        finally:
            unbind(response)  # freed on return, not by the cycle collector (delivery/unbind.py)
        if self.sent is not None:  # the debug view (gateway/delivery/sentlog.py)
            note_sent(self.sent, request, response.status_code, events, verdict, self.clock())
        return verdict

    async def _refresh_token(self) -> Outcome | None:
        """Fetch a new access token first when the destination needs one (TokenUser); return
        the outcome for the whole batch if that failed (the answer is the destination's to read;
        nothing of it is logged)."""
        destination = self._token_user()
        if destination is None:
            return None
        request = destination.token_request(self.clock())
        if request is None:
            return None
        self.stats.requests += 1
        try:
            response = await self.client.send(request)
            await response.aread()
        except httpx.TimeoutException:
            return Retry("token endpoint: timeout")
        except httpx.TransportError as exc:
            return Retry(f"token endpoint: transport error: {type(exc).__name__}")
        try:
            return destination.token_answer(response, self.clock())
        finally:
            unbind(response)

    def _token_user(self) -> TokenUser | None:
        """Return the destination if it fetches access tokens (TokenUser), else None; checked
        once per destination object (a runtime protocol check costs ~30 us a request)."""
        destination = self.destination
        if destination is not self._checked:
            self._checked = destination
            self._tokens = destination if isinstance(destination, TokenUser) else None
        return self._tokens
