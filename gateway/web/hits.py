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

Mirror, run while the upstream request travels (on an idle kept-alive connection it is written
at the end of the loop turn, with the turn's other hits, before the mirror batch's first step),
always committed before the answer: the mirrors of the hits that arrive in one loop turn are one
batch (under load the batch waits a few more turns while hits keep coming, at most
`LINGER_TURNS`), parsed together and committed with one `Pipeline.commit` per site and
destination set (each event alone if that fails); each hit's answer waits for its batch's
durable commit. A lane hit needs no task: the batch and the upstream answer call it back. The
hit is parsed by its platform's parser (`HitFormat.parse`, gateway/destinations/<name>/hits.py;
shared rules in `gateway.core.hits`) (any exception is logged at WARNING without the hit's
content and counted; the pass-through never depends on it). For each parsed event: `url` from
the Referer when the hit has none; consent decided like `POST /e` (Sec-GPC, the hit's own
consent — GA4 `gcs` — else the `_sgc` cookie, TCF and CMP cookies, region header); with full
consent the server fields of `POST /e` are added (ip, user_agent, `fbp`/`fbc` from the cookies
when the hit lacks them, click ids from cookies and URL, the visitor id from our signed cookie,
read only, and that visitor's stored profile, read once per batch); then `Pipeline.prepare` →
channel "pixel" → consent `apply` → `Pipeline.commit` to every destination of the site that the
event's tier may reach (core.consent `forwards`; the others count it `consent_denied`). The
event keeps the hit's event id (GA4 purchase: the transaction id), so the vendor deduplicates
it against the pixel's own copy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import unquote_to_bytes, urlsplit

from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from gateway.core.clickids import capture, click_ids_from_cookies
from gateway.core.consent import Decision, Signals, Tier, apply, is_explicit_denial
from gateway.core.event import (
    _FB_COOKIE_RE,
    _WEBSITE,
    MAX_ID,
    MAX_UA,
    PII_FIELDS,
    Consent,
    Event,
    User,
    _click_ids_common,
    _ip_common,
    _matching,
    _new_event,
    _new_user,
    _text,
    _Unusual,
    derive_event_id,
    with_channel,
    with_hashed,
)
from gateway.core.hits import Hit
from gateway.core.identity import PiiHasher
from gateway.core.pixeldigests import given_digests, scope_hit_digests
from gateway.core.profile import VisitorProfile, enrich
from gateway.destinations import CLICK_IDS, COOKIES
from gateway.destinations.meta.clickids import parse_fbc, parse_fbp
from gateway.destinations.meta.hitwire import MetaHit, check_url, meta_hit
from gateway.store.availability import StoreUnavailableError
from gateway.store.base import ProfileQuery
from gateway.web.codings import CodingError, accepts, decode
from gateway.web.collect import (
    CONSENT_COOKIE,
    TC_COOKIE,
    Collect,
    _consent_of,
    _decode_consent,
    deletions,
)
from gateway.web.cookies import (
    MAX_COOKIE_HEADER,
    parse_cookie_header,
    registrable_domain,
    verify_visitor_id,
)
from gateway.web.fastlane import Answer, LaneRequest, Later
from gateway.web.hitroutes import (
    DIGEST_RULES,
    HIT_FORMATS,
    HIT_ROUTES,
    OWN_DESTINATIONS,
    HitRoute,
)
from gateway.web.middleware import BodyError, client_ip_of, read_body
from gateway.web.origins import origin_allowed
from gateway.web.pipeline import Site
from gateway.web.proxy import CONNECT_TIMEOUT, ScriptProxy, _bare_host
from gateway.web.tallying import count_offered, hit_source
from gateway.web.upstream import Exchange, Origin, UpstreamAnswer, UpstreamError, UpstreamPool

log = logging.getLogger("signalgate.hits")

Clock = Callable[[], float]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_HIT_BODY: Final = 65_536
"""Largest hit body forwarded (413 above)."""
MAX_QUERY_BYTES: Final = 8_000
"""Largest raw query forwarded (414 above); just under aiohttp's 8190-byte request line."""
MAX_UPSTREAM_BODY: Final = 65_536
"""Largest upstream answer passed back (502 above); hit answers are a pixel or a short JSON."""
LINGER_TURNS: Final = 8
"""Loop turns a mirror batch may wait for more hits under load (see `_mirror_turn`)."""
DRAIN_SECONDS: Final = 10.0
"""At shutdown, mirrors still on their way to the store are waited for this long at most."""
_QUERY_RE: Final = re.compile(r"[\x21\x24-\x7e]*")
_COOKIE_VALUE_RE: Final = re.compile(r"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*")
_CONTENT_TYPE_RE: Final = re.compile(r"[\x20-\x7e]{1,256}")
_UA_RE: Final = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")
_MAX_UA: Final = 1024
_MEMO_MAX: Final = 1024
_MISSING: Final = object()
_UNSEEN: Final[Any] = object()


@dataclass
class HitStats:
    """Counters of the hit proxy (aggregates only)."""

    requests: int = 0
    forwarded: int = 0
    bad_gateway: int = 0
    rejected: int = 0
    not_events: int = 0
    """Hits that parsed to no event (automatic events, engagement pings, garbage)."""
    mirrored: int = 0
    invalid: int = 0
    """Parsed events the pipeline refused (e.g. a Purchase without value)."""
    consent_dropped: int = 0
    mirror_errors: int = 0
    batches: int = 0
    """Mirror batches run: one per loop turn in which hits arrived (one append per site)."""
    by_vendor: dict[str, int] = field(default_factory=dict)


class Observed:
    """What the mirror needs from one request, taken before the handler returns.

    A plain slotted class (one is built per hit): cheaper to build than a frozen dataclass.
    """

    __slots__ = (
        "body",
        "content_type",
        "cookies",
        "deny",
        "gpc",
        "ip",
        "method",
        "now",
        "query",
        "referer",
        "region",
        "site",
        "user_agent",
        "vendor",
    )

    def __init__(
        self,
        vendor: str,
        site: Site,
        method: str,
        query: Sequence[tuple[str, str]],
        body: bytes,
        content_type: str,
        cookies: Mapping[str, str],
        ip: str | None,
        user_agent: str | None,
        referer: str | None,
        gpc: bool,
        region: str | None,
        now: float,
    ) -> None:
        self.vendor = vendor
        self.site = site
        self.method = method
        self.query = query
        self.body = body
        self.content_type = content_type
        self.cookies = cookies
        self.ip = ip
        self.user_agent = user_agent
        self.referer = referer
        self.gpc = gpc
        self.region = region
        self.now = now
        self.deny = False
        """Set by the mirror when a signal explicitly denied consent: the answer then deletes
        the tracking cookies the request carries."""


class HitRequest:
    """One hit request, from aiohttp or from the fast lane (header lookups by lower-case name)."""

    __slots__ = (
        "body",
        "forwarded",
        "headers",
        "host",
        "method",
        "peer",
        "query",
        "raw_query",
        "secure",
    )

    def __init__(
        self,
        method: str,
        raw_query: str,
        query: Sequence[tuple[str, str]],
        host: str,
        headers: Mapping[str, str],
        peer: str | None,
        forwarded: tuple[str, ...],
        body: bytes,
        secure: bool = False,
    ) -> None:
        self.method = method
        self.raw_query = raw_query
        self.query = query
        """The decoded query (yarl's decoding, as `request.query`)."""
        self.host = host
        self.headers = headers
        self.peer = peer
        self.forwarded = forwarded
        """The X-Forwarded-For header values."""
        self.body = body
        self.secure = secure
        """Whether the gateway itself terminated TLS for this request ([tls])."""


_REASONS: Final = {s.value: s.phrase for s in HTTPStatus}
_JSON: Final = "application/json; charset=utf-8"


@dataclass(slots=True)
class HitAnswer:
    """The answer to a hit: status, our headers, the body (None: a bodiless status)."""

    status: int
    headers: dict[str, str]
    body: bytes | None
    cookies: tuple[str, ...] = ()
    """Set-Cookie values (deletions after an explicit denial)."""

    @classmethod
    def error(cls, status: int, code: str, message: str) -> HitAnswer:
        """Return an `error_response`-shaped JSON answer, never cached."""
        body = json.dumps({"error": code, "message": message}).encode()
        return cls(status, {"Cache-Control": "no-store", "Content-Type": _JSON}, body)

    def response(self) -> web.Response:
        """Return the aiohttp response."""
        if not self.cookies:
            return web.Response(status=self.status, body=self.body, headers=self.headers)
        headers = CIMultiDict(self.headers)
        for line in self.cookies:
            headers.add("Set-Cookie", line)
        return web.Response(status=self.status, body=self.body, headers=headers)

    def encode(self) -> Answer:
        """Return the status line and headers, and the body, for the fast lane."""
        key = (self.status, *self.headers.items())
        head = _HEADS.get(key)
        if head is None:  # hit answers repeat: the same few heads, built once
            lines = [f"HTTP/1.1 {self.status} {_REASONS.get(self.status, '')}\r\n"]
            lines += [f"{name}: {value}\r\n" for name, value in self.headers.items()]
            head = "".join(lines).encode("latin-1")
            if len(_HEADS) >= _MEMO_MAX:
                _HEADS.clear()
            _HEADS[key] = head
        if self.cookies:
            head += "".join(f"Set-Cookie: {line}\r\n" for line in self.cookies).encode("ascii")
        return head, self.body or b""


_HEADS: dict[tuple[object, ...], bytes] = {}


class HitProxy:
    """Handlers of the hit routes; owns the upstream connection pool."""

    def __init__(self, proxy: ScriptProxy, collect: Collect, *, clock: Clock) -> None:
        self.proxy = proxy
        self.collect = collect
        self.clock = clock
        self.stats = HitStats()
        self._lane_routes: dict[tuple[str, str], tuple[HitRoute, str]] = {}
        sites = {id(s): s for s in (*collect.by_host.values(), collect.fallback) if s is not None}
        bases = {
            _hits_base(site, route)
            for site in sites.values()
            if site.config.proxy.enabled
            for route in HIT_ROUTES
        }
        self.upstream = UpstreamPool(bases, connect_timeout=CONNECT_TIMEOUT)
        """Keep-alive connections to the configured hit upstreams (and to nothing else)."""
        self._targets: dict[tuple[str, str], tuple[Origin, str]] = {}
        self._ips: dict[tuple[str | None, tuple[str, ...]], object] = {}
        self._sites: dict[tuple[HitRoute, str, str], Site | None] = {}
        """(route, path, Host header) → the admitted site or None (sites never change)."""
        self._captures: dict[tuple[str | None, str | None], dict[str, str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._turn: list[tuple[Observed, Callable[[bool], None]]] = []
        """Mirrors queued in this loop turn (the next turn's batch commits them together)."""
        self._batches: set[asyncio.Future[None]] = set()
        """Mirror batches (and the rare hit that still awaits its upstream) in progress."""
        self._last_batch = 0
        self._no_signals: dict[str, Decision] = {}
        """Each site's consent decision for a hit without any consent signal."""
        self._answer_heads: dict[tuple[int, str | None, str | None], tuple[bytes, bool]] = {}
        """(status, Content-Type, Content-Encoding) of an upstream answer → the lane's head for
        it and whether the body is passed (`_lane_answer`)."""
        self.fast_hits = True
        """Take the fast road for the usual Meta hit (meta.hitwire); tests compare both roads."""

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
        if self._batches:  # mirrors on their way to the store (which closes after this)
            await asyncio.wait(list(self._batches), timeout=DRAIN_SECONDS)
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
        self._mirror_then(observed, flight.mirrored)
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
            if len(self._sites) >= _MEMO_MAX:
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
        # append (see `_mirror_turn`), and this hit waits for that durable commit, so it always
        # precedes the answer. Only shutdown cancels a hit; once the turn's mirror reached the
        # store's append, the append is committed anyway (the store takes it before its first
        # await).
        try:
            await self._mirror_soon(observed)
        except BaseException:
            if isinstance(exchange, Exchange):
                exchange.cancel()
            raise
        return self._final(await self._answer_of(exchange, route, hit), site, hit, observed)

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

    def _final(
        self, answer: HitAnswer, site: Site, hit: HitRequest, observed: Observed | None = None
    ) -> HitAnswer:
        """The answer with its CORS headers (and cookie deletions after an explicit denial)."""
        origin = hit.headers.get("origin")
        if origin is not None:
            cors = _cors(origin, hit.host, site)
            if cors:
                answer.headers.update(cors)
        if observed is not None and observed.deny:
            cfg = site.config
            domain = cfg.cookie_domain or registrable_domain(hit.host)
            proto = hit.headers.get("x-forwarded-proto")
            secure = hit.secure or self.collect.proxied_https(hit.peer, proto)
            lines = deletions(observed.cookies, cfg.visitor_cookie, domain, secure)
            answer.cookies = (*answer.cookies, *lines)
        return answer

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
            self._client_ip(hit.peer, hit.forwarded),
            headers.get("user-agent", "")[:_MAX_UA] or None,
            headers.get("referer"),
            gpc is not None and gpc.strip() == "1",
            _region_of(headers.get(region_header.lower())) if region_header else None,
            self.clock(),
        )

    def _client_ip(self, peer: str | None, forwarded: tuple[str, ...]) -> str | None:
        """`client_ip_of`, memoised (an address parse costs more than the lookup)."""
        key = (peer, forwarded)
        ip = self._ips.get(key, _MISSING)
        if ip is _MISSING:
            ip = client_ip_of(peer, forwarded, self.collect.trusted)
            if len(self._ips) >= _MEMO_MAX:
                self._ips.clear()
            self._ips[key] = ip
        return ip  # type: ignore[return-value]

    # --- pass-through -------------------------------------------------------------------------

    def _send(self, hit: HitRequest, route: HitRoute, site: Site, observed: Observed) -> Exchange:
        """Start the upstream request of a hit (written at the turn's end on an idle connection)."""
        key = (site.config.id, route.path)
        found = self._targets.get(key)
        if found is None:
            base = _hits_base(site, route)
            path = urlsplit(base).path.rstrip("/") + route.upstream
            found = self._targets[key] = (self.upstream.origin(base), path)
        origin, path = found
        method = hit.method
        raw_query = hit.raw_query
        parts = [
            f"{method} {path}?{raw_query} HTTP/1.1\r\n"
            if raw_query
            else f"{method} {path} HTTP/1.1\r\n",
            f"Host: {origin.host_header}\r\nAccept: */*\r\nAccept-Encoding: identity\r\n",
        ]
        user_agent = observed.user_agent
        if user_agent and _UA_RE.fullmatch(user_agent):
            parts.append(f"User-Agent: {user_agent}\r\n")
        if observed.ip:
            parts.append(f"X-Forwarded-For: {observed.ip}\r\n")
        cookie = vendor_cookies(hit.headers.get("cookie"), route)
        if cookie:
            parts.append(f"Cookie: {cookie}\r\n")
        body = b""
        if method == "POST":
            content_type = hit.headers.get("content-type")
            if content_type and _CONTENT_TYPE_RE.fullmatch(content_type):
                parts.append(f"Content-Type: {content_type}\r\n")
            body = hit.body
            parts.append(f"Content-Length: {len(body)}\r\n")
        parts.append("\r\n")
        data = "".join(parts).encode("utf-8", "surrogateescape") + body
        seconds = site.config.proxy.timeout_seconds
        return self.upstream.begin(
            origin, data, seconds=seconds, limit=MAX_UPSTREAM_BODY, get=method == "GET"
        )

    async def _answer_of(
        self, exchange: Exchange | UpstreamError, route: HitRoute, hit: HitRequest
    ) -> HitAnswer:
        """The browser's answer: the upstream's status, body and types, or 502."""
        if isinstance(exchange, Exchange):
            result = exchange.outcome()  # usually in by now: the answer came during the mirror
            if result is None:
                try:
                    result = await exchange
                except UpstreamError as exc:
                    result = exc
        else:
            result = exchange
        return self._answer_from(_for_client(result, hit), route)

    def _lane_answer(
        self,
        result: UpstreamAnswer | UpstreamError,
        route: HitRoute,
        site: Site,
        hit: HitRequest,
        observed: Observed | None = None,
    ) -> Answer:
        """`_final(_answer_from(…)).encode()`: a forwarded answer's head is built once per
        (status, Content-Type, Content-Encoding) when nothing in it depends on the request
        (CORS, cookie deletions)."""
        result = _for_client(result, hit)
        deny = observed is not None and observed.deny
        if not isinstance(result, UpstreamAnswer) or "origin" in hit.headers or deny:
            return self._final(self._answer_from(result, route), site, hit, observed).encode()
        key = (result.status, result.header("content-type"), result.header("content-encoding"))
        found = self._answer_heads.get(key)
        if found is not None:
            self.stats.forwarded += 1
            head, bodied = found
            return head, result.body if bodied else b""
        answer = self._answer_from(result, route)
        encoded = answer.encode()
        if not 300 <= result.status < 400:  # (a redirect is a bad gateway: logged each time)
            if len(self._answer_heads) >= _MEMO_MAX:
                self._answer_heads.clear()
            self._answer_heads[key] = (encoded[0], answer.body is not None)
        return encoded

    def _answer_from(self, result: UpstreamAnswer | UpstreamError, route: HitRoute) -> HitAnswer:
        if isinstance(result, UpstreamAnswer):
            status = result.status
            if not 300 <= status < 400:
                return self._forward(result, status)
            result = UpstreamError(f"status {status}")
        self.stats.bad_gateway += 1
        log.warning(
            "Hit upstream failed; answered 502 (the mirror still runs).",
            extra={"vendor": route.vendor, "reason": str(result)},
        )
        return HitAnswer.error(502, "bad_gateway", "hit upstream unavailable")

    def _forward(self, resp: UpstreamAnswer, status: int) -> HitAnswer:
        self.stats.forwarded += 1
        out = {"Cache-Control": "no-store"}
        for name, key in (
            ("Content-Type", "content-type"),
            ("Content-Encoding", "content-encoding"),
        ):
            value = resp.header(key)
            if value and _CONTENT_TYPE_RE.fullmatch(value):
                out[name] = value
        if status in (204, 304) or status < 200:
            return HitAnswer(status, out, None)
        out.setdefault("Content-Type", "application/octet-stream")  # what aiohttp would add
        return HitAnswer(status, out, resp.body)

    # --- mirror -------------------------------------------------------------------------------

    def _mirror_soon(self, observed: Observed) -> asyncio.Future[None]:
        """Queue the hit's mirror for this loop turn's batch; the future is done once it is
        committed (or failed, counted and logged: the pass-through never depends on it)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._mirror_then(observed, partial(_settle, future))
        return future

    def _mirror_then(self, observed: Observed, done: Callable[[bool], None]) -> None:
        """Queue the hit's mirror for this loop turn's batch; `done(cancelled)` is called once
        it is committed (or failed, counted and logged), or with True if the batch was
        cancelled (shutdown)."""
        turn = self._turn
        turn.append((observed, done))
        if len(turn) == 1:  # the turn's first hit: its batch starts on the next loop turn
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            task = loop.create_task(self._mirror_turn())
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _mirror_turn(self) -> None:
        """Mirror every hit queued since the batch was started, then wake their requests."""
        if self._last_batch > 1:
            # Under load (the last batch was a group) wait more loop turns while hits keep
            # joining (at most LINGER_TURNS): commits, a fixed cost each, are fewer. A lone hit
            # never waits, and the batch goes as soon as a turn brings no new hit.
            seen = len(self._turn)
            for _ in range(LINGER_TURNS):
                await asyncio.sleep(0)
                if len(self._turn) == seen:
                    break
                seen = len(self._turn)
        batch, self._turn = self._turn, []
        self._last_batch = len(batch)
        self.stats.batches += 1
        cancelled = True
        try:
            try:
                await self._mirror_batch([observed for observed, _ in batch])
            except Exception as exc:  # not one hit's fault (e.g. the store is unreadable)
                for observed, _ in batch:
                    self._mirror_failed(observed.vendor, exc)
            cancelled = False
        finally:
            for _, done in batch:
                try:
                    done(cancelled)
                except Exception:  # a bug: never let one hit keep the others waiting
                    log.exception("Answering a mirrored hit failed.")

    async def _mirror_batch(self, batch: Sequence[Observed]) -> None:
        """Parse the hits, add the server fields, prepare and commit their events.

        Each hit is parsed on its own (a failure is that hit's mirror error); the events of all
        hits of one site and destination set are committed with one append.
        """
        docs: list[_Doc] = []
        for observed in batch:
            try:
                found = self._docs(observed)
            except Exception as exc:
                self._mirror_failed(observed.vendor, exc)
                continue
            if not found:
                self.stats.not_events += 1
                if observed.cookies and is_explicit_denial(self._decision(observed, None)):
                    observed.deny = True
            docs.extend(found)
        if not docs:
            return
        profiles = await self._profiles(docs)
        groups: dict[tuple[str, frozenset[str] | None, Tier], list[_Doc]] = {}
        for doc in docs:
            key = (doc.observed.site.config.id, doc.own, doc.decision.tier)
            groups.setdefault(key, []).append(doc)
        commits = []
        for (_, own, tier), items in groups.items():
            events = self._events(items, profiles)
            if events:
                commits.append(self._commit(items[0].observed, own, events, tier))
        if len(commits) == 1:
            await commits[0]
        elif commits:
            await asyncio.gather(*commits)

    def _mirror_failed(self, vendor: str, exc: BaseException) -> None:
        self.stats.mirror_errors += 1
        if isinstance(exc, StoreUnavailableError):
            return  # the store logged its state change once; not a line per hit
        log.warning(
            "Mirroring a pixel hit failed; the hit was still forwarded.",
            extra={"vendor": vendor, "reason": type(exc).__name__},
        )

    def _docs(self, observed: Observed) -> list[_Doc]:
        """The canonical event objects of one hit with its consent decision and server fields."""
        if observed.vendor == "meta" and not observed.body and self.fast_hits:
            fast = self._fast_doc(observed)
            if fast is not None:
                return [fast]
        hits = parse_hits(observed)
        if not hits:
            return []
        site = observed.site
        cfg = site.config
        # By default a hit is mirrored to its own vendor's server API only: another platform
        # cannot deduplicate it against a pixel it never saw.
        own = None if cfg.proxy.mirror_to_all else OWN_DESTINATIONS[hits[0].vendor]
        referer = observed.referer if _http_url(observed.referer) else None
        out: list[_Doc] = []
        for hit in hits:
            doc = hit.event  # the parser's own fresh object: filled in place
            if referer is not None and "url" not in doc:
                doc["url"] = referer
            raw_consent = doc.get("consent")
            decision = self._decision(
                observed, _consent_of(raw_consent) if raw_consent is not None else None
            )
            vid: str | None = None
            if decision.tier is Tier.FULL:
                doc["user"], vid = self._server_user(observed, doc)
            elif is_explicit_denial(decision):
                observed.deny = True
            out.append(_Doc(observed, doc, decision, vid, own))
        return out

    def _decision(self, observed: Observed, explicit: Consent | None) -> Decision:
        """The hit's consent decision (`explicit`: the hit's own consent, if any)."""
        site = observed.site
        cfg = site.config
        cookies = observed.cookies
        if explicit is None and cookies:
            explicit = _decode_consent(cookies.get(CONSENT_COOKIE))
        if explicit is None and not cookies and not observed.gpc and observed.region is None:
            decision = self._no_signals.get(cfg.id)  # the usual hit: nothing to read
            if decision is None:
                decision = self._no_signals[cfg.id] = self.collect.decide(site, Signals())
            return decision
        cmp_cookie = cfg.consent.cmp_cookie
        return self.collect.decide(
            site,
            Signals(
                gpc=observed.gpc,
                consent=explicit,
                tc_string=cookies.get(TC_COOKIE),
                cmp_cookie_value=cookies.get(cmp_cookie) if cmp_cookie else None,
                region=observed.region,
            ),
        )

    def _fast_doc(self, observed: Observed) -> _Doc | None:
        """`_docs` + `Pipeline.prepare` of a bodiless Meta hit in one go (meta.hitwire), giving
        the same Event; None when anything is unusual (the general road then decides)."""
        site = observed.site
        hit = meta_hit(observed.query, now=observed.now, limits=site.limits)
        if hit is None:
            return None
        try:
            url, source, page = hit.url, hit.source, hit.url
            if url is None:
                referer = observed.referer
                if referer is not None and _http_url(referer):
                    url, source, page = check_url(referer), _WEBSITE, referer
            decision = self._decision(observed, None)
            vid: str | None = None
            if decision.tier is Tier.FULL:
                user, vid = self._fast_user(observed, hit, page)
            else:
                if is_explicit_denial(decision):
                    observed.deny = True
                fbc, fbp = hit.fbc, hit.fbp
                user = _new_user({}, {}, None, None, None, fbc, fbp, {})
            data = hit.data
            event_id = hit.event_id
        except _Unusual:
            return None
        # Last (nothing below falls back): hashing, then a new id, in the pipeline's order.
        if hit.pii:
            cfg = site.config
            hasher = PiiHasher(site.rulesets, default_country=cfg.default_country)
            digests = hasher(hit.pii)
            given = given_digests({name: list(hit.pii.get(key, ())) for name, key in _PII})
            digests = scope_hit_digests(digests, DIGEST_RULES["meta"], given) or digests
            user = _new_user(
                {},
                digests,
                user.ip,
                user.user_agent,
                user.visitor_id,
                user.fbc,
                user.fbp,
                user.click_ids,
            )
        if event_id is None:
            order_id = data.order_id
            event_id = derive_event_id(order_id) if order_id else self.collect.pipeline.new_id()
        # channel and ldu as `_events` sets them (`with_channel`) on the general road
        event = _new_event(
            hit.name,
            event_id,
            hit.time,
            source,
            url,
            hit.referrer,
            user,
            data,
            None,
            None,
            decision.ldu,
            "pixel",
        )
        own = None if site.config.proxy.mirror_to_all else OWN_DESTINATIONS["meta"]
        return _Doc(observed, None, decision, vid, own, event)

    def _fast_user(
        self, observed: Observed, hit: MetaHit, page: str | None
    ) -> tuple[User, str | None]:
        """`_server_user` for a fast Meta hit, each field checked as `parse_event` checks it."""
        cookies = observed.cookies
        ip = _ip_common(observed.ip) if observed.ip else None
        user_agent = _text(observed.user_agent, MAX_UA) if observed.user_agent else None
        fbp, fbc = hit.fbp, hit.fbc
        if cookies:
            if fbp is None and (value := cookies.get("_fbp")) is not None and parse_fbp(value):
                fbp = _matching(value, 200, _FB_COOKIE_RE.fullmatch)
            if fbc is None and (value := cookies.get("_fbc")) is not None and parse_fbc(value):
                fbc = _matching(value, 500, _FB_COOKIE_RE.fullmatch)
            click_ids: Mapping[str, str] = {
                **click_ids_from_cookies(cookies, COOKIES),
                **self._captured(page, hit.referrer),
            }
        else:
            click_ids = self._captured(page, hit.referrer)
        clicks = _click_ids_common(click_ids) if click_ids else {}
        vid: str | None = None
        signed = cookies.get(observed.site.config.visitor_cookie) if cookies else None
        if signed:
            vid = verify_visitor_id(signed, self.collect.key)
        visitor_id = _text(vid, MAX_ID)
        user = _new_user({}, {}, ip, user_agent, visitor_id, fbc, fbp, clicks)
        return user, vid

    async def _profiles(self, docs: Sequence[_Doc]) -> dict[tuple[str, str], VisitorProfile]:
        """The stored profiles of the batch's known visitors: one read per site."""
        wanted: dict[str, set[str]] = {}
        for doc in docs:
            if doc.vid is not None:
                wanted.setdefault(doc.observed.site.config.id, set()).add(doc.vid)
        found: dict[tuple[str, str], VisitorProfile] = {}
        store = self.collect.pipeline.store
        for site_id, vids in wanted.items():
            ordered = sorted(vids)
            profiles = await store.find_profiles(site_id, [ProfileQuery(v) for v in ordered])
            for vid, profile in zip(ordered, profiles, strict=True):
                if profile is not None:
                    found[(site_id, vid)] = profile
        return found

    def _events(
        self, docs: Sequence[_Doc], profiles: Mapping[tuple[str, str], VisitorProfile]
    ) -> list[Event]:
        """Prepare the documents of one site; return the events consent lets through."""
        site = docs[0].observed.site
        pipeline = self.collect.pipeline
        events: list[Event] = []
        site_id = site.config.id
        for doc in docs:
            event = ready = doc.event  # the fast road's event already has its channel and ldu
            if event is None:
                try:
                    event = pipeline.prepare(site, doc.doc, now=doc.observed.now).event
                    if event is not None and doc.doc is not None:
                        rules = HIT_FORMATS[doc.observed.vendor].digest_rules
                        event = _own_digests(event, rules, doc.doc.get("user"))
                except Exception as exc:
                    self._mirror_failed(doc.observed.vendor, exc)
                    continue
            count_offered(pipeline.tally, site_id, hit_source(doc.observed.vendor), event)
            if event is None:
                self.stats.invalid += 1
                continue
            decision = doc.decision
            if decision.tier is Tier.NONE:
                self.stats.consent_dropped += 1
                pipeline.routes_for(site, Tier.NONE, 1, only=doc.own)  # counted consent_denied
                continue
            if doc.vid is not None:
                event = enrich(event, profiles.get((site_id, doc.vid)))
            if ready is None:
                event = with_channel(event, "pixel", ldu=True if decision.ldu else None)
            kept = apply(decision, event)
            if kept is None:
                self.stats.consent_dropped += 1
                pipeline.routes_for(site, Tier.NONE, 1, only=doc.own)
                continue
            events.append(kept)
        return events

    async def _commit(
        self, first: Observed, own: frozenset[str] | None, events: list[Event], tier: Tier
    ) -> None:
        """Commit one group's events with one append (each event alone if that fails) to the
        destinations their consent tier lets them reach."""
        pipeline = self.collect.pipeline
        site = first.site
        if tier is not Tier.FULL and not pipeline.routes_for(site, tier, 0, only=own):
            pipeline.routes_for(site, tier, len(events), only=own)  # counted consent_denied
            self.stats.consent_dropped += len(events)
            return
        try:
            await pipeline.commit(site, events, only=own, tier=tier)
        except Exception:
            # One bad event must not lose its neighbours: commit each alone (one store batch).
            results = await asyncio.gather(
                *(pipeline.commit(site, [e], only=own, tier=tier) for e in events),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    if not isinstance(result, Exception):
                        raise result from None
                    self._mirror_failed(first.vendor, result)
                else:
                    self.stats.mirrored += 1
            return
        self.stats.mirrored += len(events)

    def _server_user(
        self, observed: Observed, doc: Mapping[str, Any]
    ) -> tuple[dict[str, Any], str | None]:
        """Return the hit's user plus the server fields `POST /e` adds, and the visitor id."""
        raw_user = doc.get("user")
        user: dict[str, Any] = dict(raw_user) if isinstance(raw_user, dict) else {}
        cookies = observed.cookies
        if observed.ip:
            user["ip"] = observed.ip
        if observed.user_agent:
            user["user_agent"] = observed.user_agent
        if cookies:
            for key, cookie, parse in (("fbp", "_fbp", parse_fbp), ("fbc", "_fbc", parse_fbc)):
                value = cookies.get(cookie)
                if key not in user and value is not None and parse(value) is not None:
                    user[key] = value
        url, referrer = doc.get("url"), doc.get("referrer")
        hit_clicks = user.get("click_ids")
        user["click_ids"] = {
            **(click_ids_from_cookies(cookies, COOKIES) if cookies else {}),
            **self._captured(url if isinstance(url, str) else None, _str(referrer)),
            **(hit_clicks if isinstance(hit_clicks, dict) else {}),
        }
        vid: str | None = None
        signed = cookies.get(observed.site.config.visitor_cookie) if cookies else None
        if signed:
            vid = verify_visitor_id(signed, self.collect.key)
            if vid is not None:
                user["visitor_id"] = vid
        return user, vid

    def _captured(self, url: str | None, referrer: str | None) -> Mapping[str, str]:
        """`capture`, memoised (pages repeat; the answer is read, never changed)."""
        key = (url, referrer)
        found = self._captures.get(key)
        if found is None:
            found = capture(url, referrer, CLICK_IDS)
            if len(url or "") + len(referrer or "") <= _MEMO_TEXT_MAX:
                if len(self._captures) >= _MEMO_MAX:
                    self._captures.clear()
                self._captures[key] = found
        return found


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
        self.proxy._batches.add(task)
        task.add_done_callback(self.proxy._batches.discard)

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
            answer = self.proxy._lane_answer(result, self.route, self.site, self.hit, self.observed)
        except Exception as exc:
            self.out.fail(exc)
        else:
            self.out.resolve(answer)


def _settle(future: asyncio.Future[None], cancelled: bool) -> None:
    if not future.done():
        if cancelled:
            future.cancel()
        else:
            future.set_result(None)


class _Doc:
    """One canonical event object of a hit, on its way through the turn's batch."""

    __slots__ = ("decision", "doc", "event", "observed", "own", "vid")

    def __init__(
        self,
        observed: Observed,
        doc: dict[str, Any] | None,
        decision: Decision,
        vid: str | None,
        own: frozenset[str] | None,
        event: Event | None = None,
    ) -> None:
        self.observed = observed
        self.doc = doc
        """The canonical event object, for `Pipeline.prepare` (None: `event` is ready)."""
        self.event = event
        """The event already built by the fast road (meta.hitwire), else None."""
        self.decision = decision
        self.vid = vid
        """The verified visitor id from our cookie (its profile enriches the event)."""
        self.own = own
        """The destinations the event may go to (None: every destination of the site)."""


HITS = web.AppKey("hit_proxy", HitProxy)

_PII: Final = tuple(PII_FIELDS.items())


def _own_digests(event: Event, rules: str, user: object) -> Event:
    """The event without digests the vendor's pixel made (in the form of rule set `rules`) in
    a form other rule sets do not use (a TikTok '+' phone digest is not Meta's phone digest:
    core.pixeldigests)."""
    given = given_digests(user)
    if not given:
        return event
    scoped = scope_hit_digests(event.user.hashed, rules, given)
    return event if scoped is None else with_hashed(event, scoped)


def parse_hits(observed: Observed) -> list[Hit]:
    """Return the events of a hit by its platform's parser (may raise; the caller guards)."""
    parse = HIT_FORMATS[observed.vendor].parse
    return parse(observed.query, observed.body, observed.content_type, now=observed.now)


def decode_query(raw: str) -> list[tuple[str, str]]:
    """Return the decoded pairs of a raw query string exactly as yarl decodes `request.query`.

    `+` is a space, percent-escapes are UTF-8; empty parts are skipped. A value whose escapes
    are not valid UTF-8 (rare) is left to yarl itself, so both roads always agree.
    """
    if not raw:
        return []
    if "%" not in raw:
        pairs = []
        for part in raw.replace("+", " ").split("&"):
            if part:
                name, _, value = part.partition("=")
                pairs.append((name, value))
        return pairs
    try:
        pairs = []
        for part in raw.split("&"):
            if part:
                name, _, value = part.partition("=")
                if "%" in name or "+" in name:
                    name = _unquote_plus(name)
                if "%" in value or "+" in value:
                    value = _unquote_plus(value)
                pairs.append((name, value))
        return pairs
    except UnicodeDecodeError:
        return list(URL.build(query_string=raw, encoded=True).query.items())


def _unquote_plus(text: str) -> str:
    if "%" not in text:
        return text.replace("+", " ")
    decoded = _UNQUOTED.get(text)
    if decoded is None:  # escaped values (page URLs) repeat from hit to hit
        decoded = unquote_to_bytes(text.replace("+", " ")).decode("utf-8")
        if len(text) <= _MEMO_TEXT_MAX:
            if len(_UNQUOTED) >= _MEMO_MAX:
                _UNQUOTED.clear()
            _UNQUOTED[text] = decoded
    return decoded


_UNQUOTED: dict[str, str] = {}
_MEMO_TEXT_MAX: Final = 1024
"""Longest text (escaped query value, page URLs) kept in a memo."""


def _hits_base(site: Site, route: HitRoute) -> str:
    """The configured hit upstream base of `route`'s vendor for `site`."""
    return str(getattr(site.config.proxy, f"{route.vendor}_hits_upstream")).rstrip("/")


def vendor_cookies(header: str | None, route: HitRoute) -> str:
    """Return a Cookie header holding only the route's vendor cookies (raw values, in order)."""
    if not header or len(header) > MAX_COOKIE_HEADER:
        return ""
    kept: list[str] = []
    seen: set[str] = set()
    for pair in header.split(";"):
        name, eq, value = pair.partition("=")
        name, value = name.strip(" \t"), value.strip(" \t")
        if not eq or name in seen or not route.keeps(name):
            continue
        if _COOKIE_VALUE_RE.fullmatch(value.strip('"')):
            seen.add(name)
            kept.append(f"{name}={value}")
    return "; ".join(kept)


def _cors(origin: str | None, host: str, site: Site) -> dict[str, str] | None:
    """CORS headers of a hit answer: `Collect._cors`'s rule on the Origin and Host values."""
    if origin is None:
        return {}
    if not origin_allowed(origin, host, site.config.allowed_origins):
        return None
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


def _for_client(
    result: UpstreamAnswer | UpstreamError, hit: HitRequest
) -> UpstreamAnswer | UpstreamError:
    """The upstream answer in a content coding the client accepts (gateway/web/codings.py):
    decoded (bounded) when it did not accept the upstream's, an error (502) when undecodable."""
    if not isinstance(result, UpstreamAnswer):
        return result
    coding = result.header("content-encoding")
    if not coding or coding.strip().lower() == "identity":
        return result
    if accepts(hit.headers.get("accept-encoding"), coding.strip()):
        return result
    try:
        body = decode(result.body, coding, MAX_UPSTREAM_BODY)
    except CodingError as exc:
        return UpstreamError(str(exc))
    return result.without_coding(body)


def _region_of(value: str | None) -> str | None:
    """The region header's value when sane (`collect._region`'s rule)."""
    value = (value or "").strip().upper()
    return value if 0 < len(value) <= 8 and value.replace("-", "").isalnum() else None


def _http_url(value: str | None) -> bool:
    return (
        value is not None
        and len(value) <= 4096
        and value.lower().startswith(("http://", "https://"))
        and value.isprintable()
    )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


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
