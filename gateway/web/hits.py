"""Pixel hit proxy: vendor hits forwarded from the site's own host, and mirrored to the outbox.

Routes (only when the site's `proxy.enabled` and the vendor is in its `proxy.vendors`):

    <prefix>m/tr, <prefix>m/tr/   GET, POST   meta     <meta_hits_upstream>/tr/
    <prefix>t/api/v2/pixel        POST        tiktok   <tiktok_hits_upstream>/api/v2/pixel
    <prefix>s/p                   POST        snap     <snap_hits_upstream>/p
    /g/collect                    GET, POST   google   <google_hits_upstream>/g/collect

`/g/collect` is registered at the root: it is the path gtag.js uses with `server_container_url`
/ `transport_url`. Meta's `privacy_sandbox/pixel/register/trigger` requests are not routed
(404): they repeat a `/tr` hit and must never be counted twice (platforms.md §11 pitfall 24).

Pass-through (platforms.md §1.10, §1.11, §2.8, §3.6, §4.2): the upstream request has the same
method, the route's fixed upstream path, the raw query string unchanged, the body unchanged (after
any request Content-Encoding is undone), the client's `User-Agent` and `Content-Type`,
`X-Forwarded-For: <client ip>` (`client_ip` with the trusted proxies) and, in `Cookie`, only that
vendor's cookies (`_fbp`/`_fbc`; `_ttp`/`ttclid`; `_scid`; `_ga`/`_ga_*`) — never our visitor or
consent cookie nor another vendor's. Requests go through `UpstreamPool` (gateway/web/upstream.py:
keep-alive connections to the configured hit upstreams only, strict answer parsing, timeouts
`timeout_seconds` and `CONNECT_TIMEOUT`). Redirects are never followed (a 3xx is a bad gateway). The
browser gets the upstream status, body, Content-Type (and Content-Encoding if any), with
`Cache-Control: no-store`; never an upstream `Set-Cookie` or hop-by-hop header. Upstream down,
timed out, redirecting or answering over `MAX_UPSTREAM_BODY` → 502. A path that is not exactly
the route's (percent-escapes…) or a query with bytes outside printable ASCII → 400; a query over
`MAX_QUERY_BYTES` → 414 (aiohttp itself refuses request lines over 8190 bytes with 400); a body
over `MAX_HIT_BODY` → 413; unknown Host or vendor off → 404. The proxy sets no cookie; after an
explicit consent denial (core.consent `is_explicit_denial`, seen by the mirror) the answer
deletes the tracking cookies the request carries, as `POST /e` does (collect `deletions`).

The same checks, forwarding, mirror and answers serve requests from aiohttp (`serve`) and from
the fast lane (`fast_answer`, gateway/web/fastlane.py), which takes a hit whose body it read
whole (no Content-Encoding, at most MAX_HIT_BODY bytes) and leaves every other one to aiohttp.

The mirror (gateway/web/hitmirror.py: each hit's events, committed before its answer) runs
while the upstream request travels. The request and answer values are in
gateway/web/hitvalues.py; the upstream request's bytes and the answer passed back in
gateway/web/hitupstream.py; the browser's answer (CORS, cookie deletions, the lane's answer
heads) in gateway/web/hitanswers.py.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import web

from gateway.web.browserconsent import region_of
from gateway.web.collect import Collect
from gateway.web.cookies import parse_cookie_header
from gateway.web.fastlane import Answer, LaneRequest, Later
from gateway.web.hitanswers import HitAnswers
from gateway.web.hitmirror import HitMirror
from gateway.web.hitroutes import HIT_ROUTES, HitRoute
from gateway.web.hitupstream import hits_base, upstream_request
from gateway.web.hitvalues import (
    MAX_HIT_BODY,
    MAX_QUERY_BYTES,
    MAX_UPSTREAM_BODY,
    MEMO_MAX,
    HitAnswer,
    HitRequest,
    HitStats,
    Observed,
    decode_query,
)
from gateway.web.middleware import BodyError, read_body
from gateway.web.pipeline import Site
from gateway.web.proxy import ScriptProxy, _bare_host
from gateway.web.script_cache import CONNECT_TIMEOUT
from gateway.web.upstream import UpstreamAnswer, UpstreamError
from gateway.web.upstream_pool import Exchange, Origin, UpstreamPool

__all__ = [
    "HITS",
    "MAX_HIT_BODY",
    "HitAnswer",
    "HitProxy",
    "HitRequest",
    "HitStats",
    "Observed",
    "decode_query",
    "install",
]

Clock = Callable[[], float]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DRAIN_SECONDS: Final = 10.0
"""At shutdown, mirrors still on their way to the store are waited for this long at most."""
_QUERY_RE: Final = re.compile(r"[\x21\x24-\x7e]*")
_MAX_UA: Final = 1024
_UNSEEN: Final[Any] = object()


class HitProxy:
    """Handlers of the hit routes; owns the upstream connection pool."""

    def __init__(self, proxy: ScriptProxy, collect: Collect, *, clock: Clock) -> None:
        self.proxy = proxy
        self.collect = collect
        self.clock = clock
        self.stats = HitStats()
        self.mirror = HitMirror(collect, self.stats)
        """Turns each admitted hit into events (gateway/web/hitmirror.py)."""
        self.answers = HitAnswers(collect.proxies, self.stats)
        """Builds each hit's answer from its upstream's (gateway/web/hitanswers.py)."""
        self._lane_routes: dict[tuple[str, str], tuple[HitRoute, str]] = {}
        sites = {id(s): s for s in (*collect.by_host.values(), collect.fallback) if s is not None}
        bases = {
            hits_base(site, route)
            for site in sites.values()
            if site.config.proxy.enabled
            for route in HIT_ROUTES
        }
        self.upstream = UpstreamPool(bases, connect_timeout=CONNECT_TIMEOUT)
        """Keep-alive connections to the configured hit upstreams (and to nothing else)."""
        self._targets: dict[tuple[str, str], tuple[Origin, str]] = {}
        self._sites: dict[tuple[HitRoute, str, str], Site | None] = {}
        """(route, path, Host header) → the admitted site or None (sites never change)."""
        self._waiting: set[asyncio.Future[None]] = set()
        """Lane hits that still await their upstream answer after their mirror (rare)."""

    def register(self, app: web.Application) -> None:
        """Add the hit routes of every enabled prefix (and /g/collect) and the shutdown drain."""
        for route in HIT_ROUTES:
            paths = [route.path] if route.root else [p + route.path for p in self.proxy.prefixes]
            for path in paths:
                for method in route.methods:
                    app.router.add_route(method, path, self.handler(route, path))
                    self._lane_routes[(method, path)] = (route, path)
        app.cleanup_ctx.append(self._close_ctx)

    def handler(self, route: HitRoute, path: str) -> Handler:
        """Return the handler of `route` served at `path`."""

        async def handle(request: web.Request) -> web.StreamResponse:
            return await self.serve(request, route, path)

        return handle

    async def _close_ctx(self, app: web.Application) -> AsyncIterator[None]:
        yield
        pending = [*self.mirror.batches, *self._waiting]
        if pending:  # mirrors on their way to the store (which closes after this)
            await asyncio.wait(pending, timeout=DRAIN_SECONDS)
        await self.upstream.close()

    async def serve(self, request: web.Request, route: HitRoute, path: str) -> web.StreamResponse:
        """Forward one hit and mirror it; answer with the upstream's answer (or 4xx/502)."""
        raw_path, _, raw_query = request.raw_path.partition("?")
        admitted = self._admit(route, path, raw_path, raw_query, request.host)
        if isinstance(admitted, HitAnswer):
            return admitted.response()
        body = b""
        if request.method == "POST":
            try:
                body = await read_body(request, MAX_HIT_BODY)
            except BodyError as exc:
                return self._reject(exc.status, exc.code, exc.reason).response()
        hit = HitRequest(
            method=request.method,
            raw_query=raw_query,
            query=decode_query(raw_query),
            host=request.host,
            headers=request.headers,
            peer=request.remote,
            forwarded=tuple(request.headers.getall("X-Forwarded-For", ())),
            body=body,
            secure=request.secure,
        )
        answer = await self.answer(route, admitted, hit)
        return answer.response()

    def lane_route(self, method: str, raw_path: str) -> tuple[HitRoute, str] | None:
        """Return the hit route (and its public path) the router gives `method raw_path`."""
        return self._lane_routes.get((method, raw_path))

    def fast_answer(self, request: LaneRequest) -> Awaitable[Answer] | Later | None:
        """The fast lane's entry (gateway/web/fastlane.py): a hit route's answer, else None.

        Same checks, forwarding, mirror and answers as `serve`; the lane only passes requests
        whose body it read whole (no Content-Encoding, at most MAX_HIT_BODY bytes).
        """
        raw_path, _, raw_query = request.target.partition("?")
        found = self._lane_routes.get((request.method, raw_path))
        if found is None:
            return None
        return self._fast(found[0], found[1], raw_path, raw_query, request)

    def _fast(
        self, route: HitRoute, path: str, raw_path: str, raw_query: str, request: LaneRequest
    ) -> Later:
        headers = request.headers
        host = headers.get("host", "")
        out = Later()
        admitted = self._admit(route, path, raw_path, raw_query, host)
        if isinstance(admitted, HitAnswer):
            out.resolve(admitted.encode())
            return out
        forwarded = headers.get("x-forwarded-for")
        hit = HitRequest(
            request.method,
            raw_query,
            decode_query(raw_query),
            host,
            headers,
            request.peer,
            (forwarded,) if forwarded is not None else (),
            request.body if request.method == "POST" else b"",
            request.secure,
        )
        # No task per hit: the flight is driven by callbacks (its mirror's commit, then its
        # upstream answer) and resolves `out`, which the lane writes at once (same order as
        # `answer`).
        flight = _Flight(self, route, admitted, hit, out)
        observed = flight.launch()
        self.mirror.then(observed, flight.mirrored)
        return out

    def _admit(
        self, route: HitRoute, path: str, raw_path: str, raw_query: str, host: str
    ) -> Site | HitAnswer:
        """Return the hit's site, or the rejection (malformed path/query, unknown host/vendor)."""
        self.stats.requests += 1
        if raw_path != path or not _QUERY_RE.fullmatch(raw_query):
            return self._reject(400, "bad_request", "malformed hit path")
        if len(raw_query) > MAX_QUERY_BYTES:
            return self._reject(414, "uri_too_long", "query too long")
        key = (route, path, host)
        site: Site | None = self._sites.get(key, _UNSEEN)
        if site is _UNSEEN:  # hosts repeat: each (route, path, Host value) is looked up once
            site = self._site_of(route, path, host)
            if len(self._sites) >= MEMO_MAX:
                self._sites.clear()
            self._sites[key] = site
        if site is None:
            return self._reject(404, "not_found", "no such hit route")
        return site

    def _site_of(self, route: HitRoute, path: str, host: str) -> Site | None:
        """The site serving `route` at `path` for the Host header `host`, else None."""
        bare = _bare_host(host)
        scripts = self.proxy.by_host.get(bare, self.proxy.fallback)
        site = self.collect.by_host.get(bare, self.collect.fallback)
        if (
            scripts is None
            or site is None
            or not site.config.proxy.enabled
            or route.vendor not in scripts.vendors
            or (not route.root and not path.startswith(scripts.prefix))
        ):
            return None
        return site

    async def answer(self, route: HitRoute, site: Site, hit: HitRequest) -> HitAnswer:
        """Mirror the admitted hit while forwarding it; return the answer for the browser."""
        observed, exchange = self._launch(route, site, hit)
        # The request is on its way (on a kept-alive connection) while the mirror runs: the
        # mirrors of every hit of this loop turn are parsed together and committed with one
        # append (see `HitMirror._mirror_turn`), and this hit waits for that durable commit,
        # so it always precedes the answer. Only shutdown cancels a hit; once the turn's mirror
        # reached the store's append, the append is committed anyway (the store takes it before
        # its first await).
        try:
            await self.mirror.soon(observed)
        except BaseException:
            if isinstance(exchange, Exchange):
                exchange.cancel()
            raise
        answer = await self.answers.answer_of(exchange, route, hit)
        return self.answers.final(answer, site, hit, observed)

    def _launch(
        self, route: HitRoute, site: Site, hit: HitRequest
    ) -> tuple[Observed, Exchange | UpstreamError]:
        """Count the hit, take what its mirror needs and start its upstream request."""
        by_vendor = self.stats.by_vendor
        by_vendor[route.vendor] = by_vendor.get(route.vendor, 0) + 1
        observed = self._observe(hit, route.vendor, site)
        try:
            return observed, self._send(hit, route, site, observed)
        except UpstreamError as exc:
            return observed, exc

    def _reject(self, status: int, code: str, message: str) -> HitAnswer:
        self.stats.rejected += 1
        return HitAnswer.error(status, code, message)

    def _observe(self, hit: HitRequest, vendor: str, site: Site) -> Observed:
        cfg = site.config
        headers = hit.headers
        region_header = cfg.consent.region_header
        cookie = headers.get("cookie")
        gpc = headers.get("sec-gpc")
        return Observed(
            vendor,
            site,
            hit.method,
            hit.query,
            hit.body,
            headers.get("content-type", ""),
            parse_cookie_header(cookie, self.collect.wanted[cfg.id]) if cookie else {},
            self.collect.proxies.client_ip(hit.peer, hit.forwarded),
            headers.get("user-agent", "")[:_MAX_UA] or None,
            headers.get("referer"),
            gpc is not None and gpc.strip() == "1",
            region_of(headers.get(region_header.lower())) if region_header else None,
            self.clock(),
        )

    # --- pass-through -------------------------------------------------------------------------

    def _send(self, hit: HitRequest, route: HitRoute, site: Site, observed: Observed) -> Exchange:
        """Start the upstream request of a hit (written at the turn's end on an idle connection)."""
        key = (site.config.id, route.path)
        found = self._targets.get(key)
        if found is None:
            base = hits_base(site, route)
            path = urlsplit(base).path.rstrip("/") + route.upstream
            found = self._targets[key] = (self.upstream.origin(base), path)
        origin, path = found
        data = upstream_request(hit, route, path, origin.host_header, observed)
        seconds = site.config.proxy.timeout_seconds
        return self.upstream.begin(
            origin, data, seconds=seconds, limit=MAX_UPSTREAM_BODY, get=hit.method == "GET"
        )


class _Flight:
    """One hit of the fast lane on its way: mirror first, then the upstream answer.

    Driven by callbacks instead of a task per hit: the mirror batch calls `mirrored` once the
    hit's mirror is committed; the answer is built as soon as the upstream's is in too (it
    usually is by then) and resolves `out`, which the lane writes.
    """

    __slots__ = ("exchange", "hit", "observed", "out", "proxy", "route", "site")

    def __init__(
        self,
        proxy: HitProxy,
        route: HitRoute,
        site: Site,
        hit: HitRequest,
        out: Later,
    ) -> None:
        self.proxy = proxy
        self.route = route
        self.site = site
        self.hit = hit
        self.out = out
        self.exchange: Exchange | UpstreamError | None = None
        self.observed: Observed | None = None

    def launch(self) -> Observed:
        observed, self.exchange = self.proxy._launch(self.route, self.site, self.hit)
        self.observed = observed
        return observed

    def mirrored(self, cancelled: bool) -> None:
        exchange = self.exchange
        if cancelled or self.out.done:
            if isinstance(exchange, Exchange):
                exchange.cancel()
            self.out.cancel()
            return
        if isinstance(exchange, Exchange):
            result = exchange.outcome()
            if result is None:
                if not exchange.notify(self._upstream):
                    self._await_upstream(exchange)
                return
        else:
            assert exchange is not None
            result = exchange
        self._answer(result)

    def _upstream(self) -> None:
        exchange = self.exchange
        assert isinstance(exchange, Exchange)
        result = exchange.outcome()
        if result is None:  # a stale kept-alive connection: awaiting decides on sending again
            self._await_upstream(exchange)
        elif not self.out.done:
            self._answer(result)

    def _await_upstream(self, exchange: Exchange) -> None:
        task = asyncio.ensure_future(self._later(exchange))
        self.proxy._waiting.add(task)
        task.add_done_callback(self.proxy._waiting.discard)

    async def _later(self, exchange: Exchange) -> None:
        result: UpstreamAnswer | UpstreamError
        try:
            result = await exchange
        except UpstreamError as exc:
            result = exc
        except BaseException:
            self.out.cancel()
            raise
        if not self.out.done:
            self._answer(result)

    def _answer(self, result: UpstreamAnswer | UpstreamError) -> None:
        try:
            assert self.observed is not None
            answers = self.proxy.answers
            answer = answers.lane_answer(result, self.route, self.site, self.hit, self.observed)
        except Exception as exc:
            self.out.fail(exc)
        else:
            self.out.resolve(answer)


HITS = web.AppKey("hit_proxy", HitProxy)


def install(
    app: web.Application, proxy: ScriptProxy | None, collect: Collect | None, clock: Clock
) -> HitProxy | None:
    """Register the hit proxy when a site enables the proxy; return it (None when off)."""
    if proxy is None or collect is None or not proxy.prefixes:
        return None
    hits = HitProxy(proxy, collect, clock=clock)
    hits.register(app)
    app[HITS] = hits
    return hits
