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
over `MAX_HIT_BODY` → 413; unknown Host or vendor off → 404. The proxy sets no cookie.

The same checks, forwarding, mirror and answers serve requests from aiohttp (`serve`) and from
the fast lane (`fast_answer`, gateway/web/fastlane.py), which takes a hit whose body it read
whole (no Content-Encoding, at most MAX_HIT_BODY bytes) and leaves every other one to aiohttp.

Mirror, run while the upstream request travels (written first when a kept-alive connection is
idle) in the request's own task, so it is always committed before the answer: the hit is parsed
by `gateway.core.hits` (any exception is logged at WARNING without the hit's content and
counted; the pass-through never depends on it). For each parsed event: `url` from the Referer
when the hit has none; consent decided like `POST /e` (Sec-GPC, the hit's own consent — GA4
`gcs` — else the `_sgc` cookie, TCF and CMP cookies, region header); with full consent the server
fields of `POST /e` are added (ip, user_agent, `fbp`/`fbc` from the cookies when the hit lacks
them, click ids from cookies and URL, the visitor id from our signed cookie, read only, and that
visitor's stored profile); then `Pipeline.prepare` → channel "pixel" → consent `apply` →
`Pipeline.commit` to every destination of the site. The event keeps the hit's event id (GA4
purchase: the transaction id), so the vendor deduplicates it against the pixel's own copy.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web
from yarl import URL

from gateway.core.clickids import (
    capture,
    click_ids_from_cookies,
    parse_fbc,
    parse_fbp,
)
from gateway.core.consent import Signals, Tier, apply
from gateway.core.event import Event
from gateway.core.hits import Hit, parse_ga4, parse_meta_tr, parse_snap, parse_tiktok
from gateway.core.profile import VisitorProfile, enrich
from gateway.store.base import ProfileQuery
from gateway.web.collect import (
    CONSENT_COOKIE,
    TC_COOKIE,
    Collect,
    _consent_of,
    _decode_consent,
)
from gateway.web.cookies import MAX_COOKIE_HEADER, parse_cookie_header, verify_visitor_id
from gateway.web.fastlane import Answer, LaneRequest
from gateway.web.middleware import BodyError, client_ip_of, read_body
from gateway.web.pipeline import Site
from gateway.web.proxy import CONNECT_TIMEOUT, ScriptProxy, _bare_host
from gateway.web.upstream import Exchange, Origin, UpstreamError, UpstreamPool

log = logging.getLogger("signalgate.hits")

Clock = Callable[[], float]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_HIT_BODY: Final = 65_536
"""Largest hit body forwarded (413 above)."""
MAX_QUERY_BYTES: Final = 8_000
"""Largest raw query forwarded (414 above); just under aiohttp's 8190-byte request line."""
MAX_UPSTREAM_BODY: Final = 65_536
"""Largest upstream answer passed back (502 above); hit answers are a pixel or a short JSON."""
_QUERY_RE: Final = re.compile(r"[\x21\x24-\x7e]*")
_COOKIE_VALUE_RE: Final = re.compile(r"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*")
_GA_COOKIE_RE: Final = re.compile(r"_ga_[A-Za-z0-9]{1,32}")
_CONTENT_TYPE_RE: Final = re.compile(r"[\x20-\x7e]{1,256}")
_UA_RE: Final = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")
_MAX_UA: Final = 1024
_MEMO_MAX: Final = 1024
_MISSING: Final = object()


@dataclass(frozen=True, slots=True)
class HitRoute:
    """One public hit path → one vendor upstream path and the cookies that vendor may see."""

    vendor: str
    """Config vendor name (`proxy.vendors`): meta, tiktok, snap, google."""
    path: str
    """Path under the site's prefix, or an absolute path when `root`."""
    upstream: str
    methods: tuple[str, ...]
    cookies: frozenset[str]
    cookie_pattern: re.Pattern[str] | None = None
    root: bool = False

    def keeps(self, name: str) -> bool:
        """Tell whether the cookie `name` is forwarded to this vendor."""
        pattern = self.cookie_pattern
        return name in self.cookies or (pattern is not None and pattern.fullmatch(name) is not None)


_META_COOKIES: Final = frozenset({"_fbp", "_fbc"})
HIT_ROUTES: Final[tuple[HitRoute, ...]] = (
    HitRoute("meta", "m/tr", "/tr/", ("GET", "POST"), _META_COOKIES),
    HitRoute("meta", "m/tr/", "/tr/", ("GET", "POST"), _META_COOKIES),
    HitRoute("tiktok", "t/api/v2/pixel", "/api/v2/pixel", ("POST",), frozenset({"_ttp", "ttclid"})),
    HitRoute("snap", "s/p", "/p", ("POST",), frozenset({"_scid"})),
    HitRoute(
        "google",
        "/g/collect",
        "/g/collect",
        ("GET", "POST"),
        frozenset({"_ga"}),
        _GA_COOKIE_RE,
        root=True,
    ),
)


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
    by_vendor: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Observed:
    """What the mirror needs from one request, taken before the handler returns."""

    vendor: str
    site: Site
    method: str
    query: tuple[tuple[str, str], ...]
    body: bytes
    content_type: str
    cookies: Mapping[str, str]
    ip: str | None
    user_agent: str | None
    referer: str | None
    gpc: bool
    region: str | None
    now: float


@dataclass(frozen=True, slots=True)
class HitRequest:
    """One hit request, from aiohttp or from the fast lane (header lookups by lower-case name)."""

    method: str
    raw_query: str
    query: tuple[tuple[str, str], ...]
    """The decoded query (yarl's decoding, as `request.query`)."""
    host: str
    headers: Mapping[str, str]
    peer: str | None
    forwarded: tuple[str, ...]
    """The X-Forwarded-For header values."""
    body: bytes


_REASONS: Final = {s.value: s.phrase for s in HTTPStatus}
_JSON: Final = "application/json; charset=utf-8"


@dataclass(slots=True)
class HitAnswer:
    """The answer to a hit: status, our headers, the body (None: a bodiless status)."""

    status: int
    headers: dict[str, str]
    body: bytes | None

    @classmethod
    def error(cls, status: int, code: str, message: str) -> HitAnswer:
        """Return an `error_response`-shaped JSON answer, never cached."""
        body = json.dumps({"error": code, "message": message}).encode()
        return cls(status, {"Cache-Control": "no-store", "Content-Type": _JSON}, body)

    def response(self) -> web.Response:
        """Return the aiohttp response."""
        return web.Response(status=self.status, body=self.body, headers=self.headers)

    def encode(self) -> Answer:
        """Return the status line and headers, and the body, for the fast lane."""
        lines = [f"HTTP/1.1 {self.status} {_REASONS.get(self.status, '')}\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in self.headers.items()]
        return "".join(lines).encode("latin-1"), self.body or b""


OWN_DESTINATIONS: Final[Mapping[str, frozenset[str]]] = {
    "meta": frozenset({"meta"}),
    "tiktok": frozenset({"tiktok"}),
    "snap": frozenset({"snap"}),
    "ga4": frozenset({"ga4", "google_ads"}),
}
"""Hit vendor → the destinations that may receive its mirror (unless `mirror_to_all`)."""


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
            query=tuple(request.query.items()),
            host=request.host,
            headers=request.headers,
            peer=request.remote,
            forwarded=tuple(request.headers.getall("X-Forwarded-For", ())),
            body=body,
        )
        answer = await self.answer(route, admitted, hit)
        return answer.response()

    def lane_route(self, method: str, raw_path: str) -> tuple[HitRoute, str] | None:
        """Return the hit route (and its public path) the router gives `method raw_path`."""
        return self._lane_routes.get((method, raw_path))

    def fast_answer(self, request: LaneRequest) -> Awaitable[Answer] | None:
        """The fast lane's entry (gateway/web/fastlane.py): a hit route's answer, else None.

        Same checks, forwarding, mirror and answers as `serve`; the lane only passes requests
        whose body it read whole (no Content-Encoding, at most MAX_HIT_BODY bytes).
        """
        raw_path, _, raw_query = request.target.partition("?")
        found = self._lane_routes.get((request.method, raw_path))
        if found is None:
            return None
        return self._fast(found[0], found[1], raw_path, raw_query, request)

    async def _fast(
        self, route: HitRoute, path: str, raw_path: str, raw_query: str, request: LaneRequest
    ) -> Answer:
        host = request.headers.get("host", "")
        admitted = self._admit(route, path, raw_path, raw_query, host)
        if isinstance(admitted, HitAnswer):
            return admitted.encode()
        query = URL.build(query_string=raw_query, encoded=True).query if raw_query else {}
        forwarded = request.headers.get("x-forwarded-for")
        hit = HitRequest(
            method=request.method,
            raw_query=raw_query,
            query=tuple(query.items()),
            host=host,
            headers=request.headers,
            peer=request.peer,
            forwarded=(forwarded,) if forwarded is not None else (),
            body=request.body if request.method == "POST" else b"",
        )
        answer = await self.answer(route, admitted, hit)
        return answer.encode()

    def _admit(
        self, route: HitRoute, path: str, raw_path: str, raw_query: str, host: str
    ) -> Site | HitAnswer:
        """Return the hit's site, or the rejection (malformed path/query, unknown host/vendor)."""
        self.stats.requests += 1
        if raw_path != path or not _QUERY_RE.fullmatch(raw_query):
            return self._reject(400, "bad_request", "malformed hit path")
        if len(raw_query) > MAX_QUERY_BYTES:
            return self._reject(414, "uri_too_long", "query too long")
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
            return self._reject(404, "not_found", "no such hit route")
        return site

    async def answer(self, route: HitRoute, site: Site, hit: HitRequest) -> HitAnswer:
        """Mirror the admitted hit while forwarding it; return the answer for the browser."""
        self.stats.by_vendor[route.vendor] = self.stats.by_vendor.get(route.vendor, 0) + 1
        observed = self._observe(hit, route.vendor, site)
        try:
            exchange: Exchange | UpstreamError = self._send(hit, route, site, observed)
        except UpstreamError as exc:
            exchange = exc
        # The request is on its way (on a kept-alive connection) while the mirror runs in
        # this task, so the mirror's durable commit always precedes the answer. Only shutdown
        # cancels a hit; once the mirror reached the store's append, the append is committed
        # anyway (the store takes it before its first await).
        try:
            await self._mirror(observed)
        except BaseException:
            if isinstance(exchange, Exchange):
                exchange.cancel()
            raise
        answer = await self._answer_of(exchange, route)
        cors = _cors(hit.headers.get("origin"), hit.host, site)
        if cors:
            answer.headers.update(cors)
        return answer

    def _reject(self, status: int, code: str, message: str) -> HitAnswer:
        self.stats.rejected += 1
        return HitAnswer.error(status, code, message)

    def _observe(self, hit: HitRequest, vendor: str, site: Site) -> Observed:
        cfg = site.config
        headers = hit.headers
        region_header = cfg.consent.region_header
        return Observed(
            vendor=vendor,
            site=site,
            method=hit.method,
            query=hit.query,
            body=hit.body,
            content_type=headers.get("content-type", ""),
            cookies=parse_cookie_header(headers.get("cookie"), self.collect.wanted[cfg.id]),
            ip=self._client_ip(hit.peer, hit.forwarded),
            user_agent=headers.get("user-agent", "")[:_MAX_UA] or None,
            referer=headers.get("referer"),
            gpc=headers.get("sec-gpc", "").strip() == "1",
            region=_region_of(headers.get(region_header.lower()) if region_header else None),
            now=self.clock(),
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
        """Start the upstream request of a hit (written at once on an idle connection)."""
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

    async def _answer_of(self, exchange: Exchange | UpstreamError, route: HitRoute) -> HitAnswer:
        """The browser's answer: the upstream's status, body and types, or 502."""
        try:
            if isinstance(exchange, UpstreamError):
                raise exchange
            resp = await exchange
            status = resp.status
            if 300 <= status < 400:
                raise UpstreamError(f"status {status}")
        except UpstreamError as exc:
            self.stats.bad_gateway += 1
            log.warning(
                "Hit upstream failed; answered 502 (the mirror still runs).",
                extra={"vendor": route.vendor, "reason": str(exc)},
            )
            return HitAnswer.error(502, "bad_gateway", "hit upstream unavailable")
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

    async def _mirror(self, observed: Observed) -> None:
        try:
            await self._mirror_hits(observed)
        except Exception as exc:  # the pass-through never depends on the mirror
            self.stats.mirror_errors += 1
            log.warning(
                "Mirroring a pixel hit failed; the hit was still forwarded.",
                extra={"vendor": observed.vendor, "reason": type(exc).__name__},
            )

    async def _mirror_hits(self, observed: Observed) -> None:
        hits = parse_hits(observed)
        if not hits:
            self.stats.not_events += 1
            return
        site = observed.site
        pipeline = self.collect.pipeline
        cookies = observed.cookies
        events: list[Event] = []
        for hit in hits:
            doc: dict[str, Any] = dict(hit.event)
            if "url" not in doc and _http_url(observed.referer):
                doc["url"] = observed.referer
            explicit = _consent_of(doc.get("consent")) or _decode_consent(
                cookies.get(CONSENT_COOKIE)
            )
            cmp_cookie = site.config.consent.cmp_cookie
            decision = self.collect.decide(
                site,
                Signals(
                    gpc=observed.gpc,
                    consent=explicit,
                    tc_string=cookies.get(TC_COOKIE),
                    cmp_cookie_value=cookies.get(cmp_cookie) if cmp_cookie else None,
                    region=observed.region,
                ),
            )
            profile: VisitorProfile | None = None
            if decision.tier is Tier.FULL:
                doc["user"], profile = await self._server_user(observed, doc)
            prepared = pipeline.prepare(site, doc, now=observed.now)
            if prepared.event is None:
                self.stats.invalid += 1
                continue
            event = apply(decision, replace(enrich(prepared.event, profile), channel="pixel"))
            if event is None:
                self.stats.consent_dropped += 1
                continue
            events.append(replace(event, ldu=True) if decision.ldu else event)
        if events:
            # By default a hit is mirrored to its own vendor's server API only: another
            # platform cannot deduplicate it against a pixel it never saw.
            own = None if site.config.proxy.mirror_to_all else OWN_DESTINATIONS[hits[0].vendor]
            await pipeline.commit(site, events, only=own)
            self.stats.mirrored += len(events)

    async def _server_user(
        self, observed: Observed, doc: Mapping[str, Any]
    ) -> tuple[dict[str, Any], VisitorProfile | None]:
        """Return the hit's user plus the server fields `POST /e` adds, and the stored profile."""
        raw_user = doc.get("user")
        user: dict[str, Any] = dict(raw_user) if isinstance(raw_user, dict) else {}
        cookies = observed.cookies
        if observed.ip:
            user["ip"] = observed.ip
        if observed.user_agent:
            user["user_agent"] = observed.user_agent
        for key, cookie, parse in (("fbp", "_fbp", parse_fbp), ("fbc", "_fbc", parse_fbc)):
            value = cookies.get(cookie)
            if key not in user and value is not None and parse(value) is not None:
                user[key] = value
        url, referrer = doc.get("url"), doc.get("referrer")
        hit_clicks = user.get("click_ids")
        user["click_ids"] = {
            **click_ids_from_cookies(cookies),
            **capture(url if isinstance(url, str) else None, _str(referrer)),
            **(hit_clicks if isinstance(hit_clicks, dict) else {}),
        }
        profile: VisitorProfile | None = None
        signed = cookies.get(observed.site.config.visitor_cookie)
        vid = verify_visitor_id(signed, self.collect.key) if signed else None
        if vid is not None:
            user["visitor_id"] = vid
            store = self.collect.pipeline.store
            (profile,) = await store.find_profiles(observed.site.config.id, [ProfileQuery(vid)])
        return user, profile


HITS = web.AppKey("hit_proxy", HitProxy)


def parse_hits(observed: Observed) -> list[Hit]:
    """Return the events of a hit by its vendor's parser (may raise; the caller guards)."""
    now = observed.now
    if observed.vendor == "meta":
        form: list[tuple[str, str]] = []
        if observed.body and "json" not in observed.content_type.lower():
            text = observed.body.decode("utf-8", "replace")
            form = parse_qsl(text, keep_blank_values=True, max_num_fields=1000)
        hit = parse_meta_tr(observed.query, form, now=now)
        return [hit] if hit is not None else []
    if observed.vendor == "tiktok":
        return parse_tiktok(observed.body, now=now)
    if observed.vendor == "snap":
        snap = parse_snap(observed.query, observed.body, observed.content_type, now=now)
        return [snap] if snap is not None else []
    return parse_ga4(observed.query, observed.body, now=now)


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
    same = origin.split("://", 1)[-1].lower() == host.lower()
    if origin not in site.config.allowed_origins and not same:
        return None
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


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
