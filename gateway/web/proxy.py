"""GET <prefix><alias>: vendor pixel scripts served from the site's own host, through a cache.

Only the fixed route table below is forwarded. The upstream URL is always
`<configured vendor base> + <path from the table> [+ allow-listed query params]`; nothing of the
request's URL, Host or scheme ever reaches it (shared browser.md §4.1). Aliases are short and
avoid the words filter lists match on (§5.1: `fbevents`, `gtag`, `gtm`, `pixel`, `track`…):

    <prefix>m/<locale>/e.js     meta       /<locale>/fbevents.js          (known locales only)
    <prefix>m/c/<pixel_id>      meta       /signals/config/<pixel_id>     v, r
    <prefix>t/e.js              tiktok     /i18n/pixel/events.js          sdkid (required), lib
    <prefix>g/js                google     /gtag/js                       id (required), l
    <prefix>g/m.js              google     /gtm.js                        id (required), l
    <prefix>s/e.js              snap       /scevent.min.js
    <prefix>i/c.js              pinterest  /ct/core.js
    <prefix>b/u.js              microsoft  /bat.js
    <prefix>r/e.js              reddit     /ads/pixel.js

A request path with anything but `[A-Za-z0-9_.-]` segments (`..`, `//`, `%`-escapes such as
`%2f`/`%5c`, a backslash, a scheme) or an allow-listed parameter that is repeated or malformed is
refused with 400; a well-formed path not in the table (or a vendor the site did not enable) is 404.
Other query parameters (cache busters…) are dropped, so they never split the cache.

Cache (one per gateway, keyed by the upstream URL): a copy is fresh for the site's
`cache_seconds`; after that the next request revalidates it upstream (`If-None-Match` /
`If-Modified-Since`; a 304 keeps the body and restarts freshness). Any upstream failure — connect
error, timeout, a status other than 200/304 (redirects are never followed), a non-JavaScript
Content-Type, an unknown Content-Encoding, a body over 2 MiB (before or after gunzip) — serves the
last good copy while it is at most `max_stale_seconds` past freshness, else answers 502; the URL
is then not asked again for `ERROR_BACKOFF_SECONDS`. Concurrent requests for one URL share a
single upstream fetch. The cache holds at most `MAX_CACHE_BYTES`, least recently used first out.

Responses carry our own headers only: `Cache-Control: public, max-age=<cache_seconds>`, a weak
`ETag` of the script text (304 on `If-None-Match`), the upstream's JavaScript Content-Type,
`Vary: Accept-Encoding`, `nosniff` and `X-Cache` (HIT, MISS, REVALIDATED, STALE). An upstream
gzip body is stored as received and served as is to clients that accept gzip, decompressed to
the others. Upstream `Set-Cookie` and hop-by-hop headers are never passed on; the outbound request
carries no client header (no Cookie, Authorization, User-Agent or Host of the visitor).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

import aiohttp
from aiohttp import web
from multidict import MultiMapping
from yarl import URL

from gateway.config import PROXY_VENDORS, ProxyConfig, SiteConfig
from gateway.web.middleware import error_response

log = logging.getLogger("signalgate.proxy")

Clock = Callable[[], float]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_BODY_BYTES: Final = 2 * 1024 * 1024
"""Largest upstream script, compressed and decompressed."""
MAX_CACHE_BYTES: Final = 64 * 1024 * 1024
ERROR_BACKOFF_SECONDS: Final = 10.0
"""After a failed fetch, the URL is not asked again for this long (stale copy or 502 meanwhile)."""
CONNECT_TIMEOUT: Final = 2.0
USER_AGENT: Final = "signalgate-script-proxy"
JS_TYPES: Final = frozenset(
    {
        "application/javascript",
        "application/x-javascript",
        "text/javascript",
        "application/ecmascript",
        "text/ecmascript",
    }
)
_MAX_BACKOFF_KEYS: Final = 10_000
_MAX_MEMO: Final = 4096
"""Entries of each fast-lane memo (targets, header blocks, Accept-Encoding values)."""
_UNSEEN: Final[Any] = object()
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")
_CHARSET: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

_LOCALES: Final = """
    af_ZA ar_AR az_AZ be_BY bg_BG bn_IN bs_BA ca_ES cs_CZ cy_GB da_DK de_DE el_GR en_GB en_US
    eo_EO es_ES es_LA et_EE eu_ES fa_IR fi_FI fr_CA fr_FR ga_IE gl_ES he_IL hi_IN hr_HR hu_HU hy_AM
    id_ID is_IS it_IT ja_JP ka_GE km_KH ko_KR lt_LT lv_LV mk_MK ml_IN ms_MY nb_NO ne_NP nl_NL nn_NO
    pa_IN pl_PL pt_BR pt_PT ro_RO ru_RU sk_SK sl_SI sq_AL sr_RS sv_SE sw_KE ta_IN te_IN th_TH tl_PH
    tr_TR uk_UA ur_PK vi_VN zh_CN zh_HK zh_TW"""
META_LOCALES: Final = frozenset(_LOCALES.split())
"""Locales of `connect.facebook.net/<locale>/fbevents.js` the proxy forwards."""

_PIXEL_ID: Final = re.compile(r"[0-9]{1,20}")
SLOTS: Final[Mapping[str, Callable[[str], bool]]] = {
    "locale": lambda s: s in META_LOCALES,
    "pixel_id": lambda s: _PIXEL_ID.fullmatch(s) is not None,
}
"""Path segments taken from the request, each checked before it is put in an upstream path."""


@dataclass(frozen=True, slots=True)
class Param:
    """An allow-listed query parameter passed on to the upstream."""

    pattern: re.Pattern[str]
    required: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    """One public alias (segments under the prefix; `{slot}` segments) → one upstream path."""

    vendor: str
    alias: tuple[str, ...]
    upstream: str
    params: Mapping[str, Param] = field(default_factory=dict)

    def match(self, segments: Sequence[str]) -> dict[str, str] | None:
        """Return the slot values when `segments` is this alias, else None."""
        if len(segments) != len(self.alias):
            return None
        slots: dict[str, str] = {}
        for want, got in zip(self.alias, segments, strict=True):
            if want.startswith("{"):
                name = want[1:-1]
                if not SLOTS[name](got):
                    return None
                slots[name] = got
            elif want != got:
                return None
        return slots


_GOOGLE_ID = Param(re.compile(r"(G|GT|AW|DC|MC|UA)-[A-Z0-9-]{2,24}"), required=True)
_GTM_ID = Param(re.compile(r"GTM-[A-Z0-9]{4,12}"), required=True)
_LAYER = Param(_NAME)

ROUTES: Final[tuple[Route, ...]] = (
    Route("meta", ("m", "{locale}", "e.js"), "/{locale}/fbevents.js"),
    Route(
        "meta",
        ("m", "c", "{pixel_id}"),
        "/signals/config/{pixel_id}",
        {"v": Param(re.compile(r"[0-9]{1,3}(\.[0-9]{1,4}){1,3}")), "r": Param(_NAME)},
    ),
    Route(
        "tiktok",
        ("t", "e.js"),
        "/i18n/pixel/events.js",
        {"sdkid": Param(re.compile(r"[A-Z0-9]{8,32}"), required=True), "lib": Param(_NAME)},
    ),
    Route("google", ("g", "js"), "/gtag/js", {"id": _GOOGLE_ID, "l": _LAYER}),
    Route("google", ("g", "m.js"), "/gtm.js", {"id": _GTM_ID, "l": _LAYER}),
    Route("snap", ("s", "e.js"), "/scevent.min.js"),
    Route("pinterest", ("i", "c.js"), "/ct/core.js"),
    Route("microsoft", ("b", "u.js"), "/bat.js"),
    Route("reddit", ("r", "e.js"), "/ads/pixel.js"),
)


class UpstreamError(Exception):
    """The upstream did not give a usable script (the message is a short reason)."""


@dataclass(frozen=True, slots=True)
class SiteScripts:
    """A site's proxy settings, resolved once."""

    prefix: str
    vendors: frozenset[str]
    upstreams: Mapping[str, str]
    cache_seconds: float
    max_stale_seconds: float
    timeout_seconds: float

    @classmethod
    def from_config(cls, config: ProxyConfig) -> SiteScripts:
        """Resolve `[sites.proxy]`."""
        return cls(
            prefix=config.prefix,
            vendors=frozenset(config.vendors),
            upstreams={v: str(getattr(config, f"{v}_upstream")).rstrip("/") for v in PROXY_VENDORS},
            cache_seconds=config.cache_seconds,
            max_stale_seconds=config.max_stale_seconds,
            timeout_seconds=config.timeout_seconds,
        )

    def servable(self, entry: Entry, now: float) -> bool:
        """Return whether `entry` may still be served as a stale copy."""
        return now - entry.validated_at <= self.cache_seconds + self.max_stale_seconds


@dataclass(frozen=True, slots=True)
class Entry:
    """One cached script: the text, the upstream's gzip bytes if any, and validators."""

    body: bytes
    gzipped: bytes | None
    content_type: str
    etag: str
    validated_at: float
    upstream_etag: str | None = None
    last_modified: str | None = None

    @property
    def size(self) -> int:
        """Return the bytes this entry holds."""
        return len(self.body) + len(self.gzipped or b"")


@dataclass
class ProxyStats:
    """Counters of the script proxy."""

    requests: int = 0
    hits: int = 0
    misses: int = 0
    revalidated: int = 0
    stale: int = 0
    bad_gateway: int = 0
    rejected: int = 0
    fetches: int = 0


class ScriptCache:
    """Upstream side: one shared client session, the cache, single-flight fetches, stale copies."""

    def __init__(
        self,
        *,
        clock: Clock,
        stats: ProxyStats | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_cache_bytes: int = MAX_CACHE_BYTES,
    ) -> None:
        self.clock = clock
        self.stats = stats or ProxyStats()
        self.max_body_bytes = max_body_bytes
        self.max_cache_bytes = max_cache_bytes
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._bytes = 0
        self._inflight: dict[str, asyncio.Task[tuple[Entry, str]]] = {}
        self._retry_at: dict[str, float] = {}
        self._session: aiohttp.ClientSession | None = None

    def fresh(self, url: str, site: SiteScripts) -> Entry | None:
        """Return the cached copy of `url` while it is fresh for `site` (a HIT), else None."""
        entry = self._entries.get(url)
        if entry is None or self.clock() - entry.validated_at >= site.cache_seconds:
            return None
        self._entries.move_to_end(url)
        return entry

    async def get(self, url: str, site: SiteScripts) -> tuple[Entry, str]:
        """Return the script at `url` and how it was obtained; raise UpstreamError for none."""
        now = self.clock()
        entry = self._entries.get(url)
        if entry is not None and now - entry.validated_at < site.cache_seconds:
            self._entries.move_to_end(url)
            return entry, "HIT"
        if now < self._retry_at.get(url, 0.0):
            if entry is not None and site.servable(entry, now):
                return entry, "STALE"
            raise UpstreamError("upstream failed recently")
        task = self._inflight.get(url)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._refresh(url, entry, site.timeout_seconds)
            )
            self._inflight[url] = task
            task.add_done_callback(partial(self._forget, url))
        try:
            return await asyncio.shield(task)
        except UpstreamError:
            current = self._entries.get(url)
            if current is not None and site.servable(current, self.clock()):
                return current, "STALE"
            raise

    def _forget(self, url: str, task: asyncio.Task[tuple[Entry, str]]) -> None:
        if self._inflight.get(url) is task:
            del self._inflight[url]
        if not task.cancelled():
            task.exception()  # retrieved here, so an unawaited failure is never reported as lost

    async def _refresh(self, url: str, entry: Entry | None, seconds: float) -> tuple[Entry, str]:
        self.stats.fetches += 1
        try:
            fresh, how = await self._fetch(url, entry, seconds)
        except (aiohttp.ClientError, TimeoutError, UpstreamError) as exc:
            reason = str(exc) if isinstance(exc, UpstreamError) else type(exc).__name__
            self._back_off(url)
            log.warning(
                "Script upstream failed; a cached copy is served if there is one.",
                extra={"path": urlsplit(url).path, "reason": reason},
            )
            raise UpstreamError(reason) from exc
        self._retry_at.pop(url, None)
        self._store(url, fresh)
        return fresh, how

    def _back_off(self, url: str) -> None:
        now = self.clock()
        if len(self._retry_at) >= _MAX_BACKOFF_KEYS:
            self._retry_at = {k: t for k, t in self._retry_at.items() if t > now}
            if len(self._retry_at) >= _MAX_BACKOFF_KEYS:
                self._retry_at.clear()
        self._retry_at[url] = now + ERROR_BACKOFF_SECONDS

    def _store(self, url: str, entry: Entry) -> None:
        old = self._entries.pop(url, None)
        if old is not None:
            self._bytes -= old.size
        self._entries[url] = entry
        self._bytes += entry.size
        while self._bytes > self.max_cache_bytes and len(self._entries) > 1:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.size

    async def _fetch(self, url: str, entry: Entry | None, seconds: float) -> tuple[Entry, str]:
        headers = {"Accept": "*/*", "Accept-Encoding": "gzip", "User-Agent": USER_AGENT}
        if entry is not None and entry.upstream_etag:
            headers["If-None-Match"] = entry.upstream_etag
        if entry is not None and entry.last_modified:
            headers["If-Modified-Since"] = entry.last_modified
        limits = aiohttp.ClientTimeout(total=seconds, connect=min(CONNECT_TIMEOUT, seconds))
        session = self._client()
        async with session.get(url, headers=headers, allow_redirects=False, timeout=limits) as resp:
            conditional = "If-None-Match" in headers or "If-Modified-Since" in headers
            if resp.status == 304 and entry is not None and conditional:
                etag = resp.headers.get("ETag", entry.upstream_etag)
                return replace(entry, validated_at=self.clock(), upstream_etag=etag), "REVALIDATED"
            if resp.status != 200:
                raise UpstreamError(f"status {resp.status}")
            content_type = _script_type(resp)
            raw = await _read_limited(resp, self.max_body_bytes)
            coding = resp.headers.get("Content-Encoding", "identity").strip().lower()
            if coding in ("gzip", "x-gzip"):
                body, gzipped = _gunzip(raw, self.max_body_bytes), raw
            elif coding in ("identity", ""):
                body, gzipped = raw, None
            else:
                raise UpstreamError("unsupported content encoding")
            fresh = Entry(
                body=body,
                gzipped=gzipped,
                content_type=content_type,
                etag=f'W/"{hashlib.sha256(body).hexdigest()[:24]}"',
                validated_at=self.clock(),
                upstream_etag=resp.headers.get("ETag"),
                last_modified=resp.headers.get("Last-Modified"),
            )
            return fresh, "MISS"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                connector=aiohttp.TCPConnector(limit=32, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=10.0, connect=CONNECT_TIMEOUT),
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        """Cancel fetches in flight and close the client session."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, UpstreamError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None


class ScriptProxy:
    """Request side: site by Host, the route table, our response headers."""

    def __init__(
        self, sites: Sequence[SiteConfig], *, clock: Clock, cache: ScriptCache | None = None
    ) -> None:
        self.cache = cache or ScriptCache(clock=clock)
        self.stats = self.cache.stats
        enabled = [s for s in sites if s.proxy.enabled]
        self.by_host = {
            h.lower(): SiteScripts.from_config(s.proxy) for s in enabled for h in s.hosts
        }
        # Like the collect endpoint: a single site without hosts answers on any Host (development).
        only = sites[0] if len(sites) == 1 and not sites[0].hosts else None
        self.fallback = SiteScripts.from_config(only.proxy) if only and only.proxy.enabled else None
        self.prefixes = tuple(sorted({s.proxy.prefix for s in enabled}))
        self._targets: dict[tuple[str, str], tuple[str, SiteScripts] | None] = {}
        self._routes: dict[tuple[str, str], _Routed | None] = {}
        self._answers: dict[tuple[str, float, bool, bool], tuple[Entry, bytes, bytes]] = {}
        self._gzip_ok: dict[str, bool] = {}

    def handler(self, prefix: str) -> Handler:
        """Return the handler of the routes under `prefix`."""

        async def handle(request: web.Request) -> web.StreamResponse:
            return await self.serve(request, prefix)

        return handle

    async def session_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: the shared client session closes with the app."""
        yield
        await self.cache.close()

    def site_for(self, request: web.Request) -> SiteScripts | None:
        """Return the proxy settings of the site served on the request's Host."""
        return self.by_host.get(_bare_host(request.host), self.fallback)

    async def serve(self, request: web.Request, prefix: str) -> web.StreamResponse:
        """Answer one script request (200/304 with the script, 400, 404 or 502)."""
        self.stats.requests += 1
        segments = _segments(request.raw_path.partition("?")[0], prefix)
        if segments is None:
            return self._reject(400, "bad_request", "malformed script path")
        site = self.site_for(request)
        found = _find(segments) if site is not None and site.prefix == prefix else None
        if site is None or found is None or found[0].vendor not in site.vendors:
            return self._reject(404, "not_found", "no such script")
        route, slots = found
        query = _query(request, route)
        if query is None:
            return self._reject(400, "bad_request", "bad script parameters")
        url = site.upstreams[route.vendor] + route.upstream.format(**slots)
        if query:
            url += "?" + urlencode(query)
        try:
            entry, how = await self.cache.get(url, site)
        except UpstreamError:
            self.stats.bad_gateway += 1
            return error_response(
                502, "bad_gateway", "script unavailable", headers={"Cache-Control": "no-store"}
            )
        self._count(how)
        return _respond(request, entry, site, how)

    def _reject(self, status: int, code: str, message: str) -> web.Response:
        self.stats.rejected += 1
        return error_response(status, code, message, headers={"Cache-Control": "no-store"})

    # --- fast lane (gateway/web/fastlane.py) ----------------------------------------------------

    def cached_answer(
        self,
        raw_target: str,
        host: str,
        accept_encoding: str | None,
        if_none_match: str | None,
    ) -> tuple[bytes, bytes] | None:
        """Return (status line + our headers, body) for a fresh cached script, else None.

        The answer is byte for byte the one `serve` gives for a cache HIT (same headers, same
        304 rule, same encoding choice); anything else — a malformed or unknown path, a bad
        parameter, a stale or missing copy — is None, and the caller lets `serve` answer. The
        caller adds Date, Server and Content-Length. Resolutions and header blocks are memoised
        (bounded), so a hot script costs two dict lookups and a clock read.
        """
        key = (raw_target, host)
        target = self._targets.get(key, _UNSEEN)
        if target is _UNSEEN:  # (no try/except: every pixel hit on the lane misses here)
            raw_path = raw_target.partition("?")[0]
            path_key = (raw_path, host)
            routed = self._routes.get(path_key, _UNSEEN)
            if routed is _UNSEEN:
                routed = self._route_of(raw_path, host)
                if len(self._routes) >= _MAX_MEMO:
                    self._routes.clear()
                self._routes[path_key] = routed
            if routed is None:
                return None  # not a script path (a pixel hit…): nothing memoised per query
            target = _with_query(routed, raw_target.partition("?")[2])
            if len(self._targets) >= _MAX_MEMO:
                self._targets.clear()
            self._targets[key] = target
        if target is None:
            return None
        url, site = target
        entry = self.cache.fresh(url, site)
        if entry is None:
            return None
        gzip_ok = False
        if entry.gzipped is not None and accept_encoding:
            known = self._gzip_ok.get(accept_encoding)
            if known is None:
                known = _accepts_gzip(accept_encoding)
                if len(self._gzip_ok) >= _MAX_MEMO:
                    self._gzip_ok.clear()
                self._gzip_ok[accept_encoding] = known
            gzip_ok = known
        not_modified = _etag_matches(if_none_match, entry.etag)
        answer_key = (url, site.cache_seconds, gzip_ok, not_modified)
        built = self._answers.get(answer_key)
        if built is None or built[0] is not entry:
            head, body = _head_and_body(entry, site, "HIT", gzip_ok, not_modified)
            if len(self._answers) >= _MAX_MEMO:
                self._answers.clear()
            built = self._answers[answer_key] = (entry, head, body)
        self.stats.requests += 1
        self.stats.hits += 1
        return built[1], built[2]

    def _route_of(self, raw_path: str, host: str) -> _Routed | None:
        """Return the script route, its slots and the site `serve` would use for a path."""
        site = self.by_host.get(_bare_host(host), self.fallback)
        # The route aiohttp would pick: the first registered prefix the path starts with.
        prefix = next((p for p in self.prefixes if raw_path.startswith(p)), None)
        if site is None or prefix is None or site.prefix != prefix:
            return None
        segments = _segments(raw_path, site.prefix)
        found = _find(segments) if segments is not None else None
        if found is None or found[0].vendor not in site.vendors:
            return None
        route, slots = found
        return route, slots, site

    def _count(self, how: str) -> None:
        if how == "HIT":
            self.stats.hits += 1
        elif how == "MISS":
            self.stats.misses += 1
        elif how == "REVALIDATED":
            self.stats.revalidated += 1
        else:
            self.stats.stale += 1


PROXY = web.AppKey("script_proxy", ScriptProxy)


_Routed = tuple[Route, dict[str, str], SiteScripts]
"""A script path resolved: its route, slot values and site."""


def _with_query(routed: _Routed, raw_query: str) -> tuple[str, SiteScripts] | None:
    """Return the upstream URL and site for a routed path and its raw query, or None."""
    route, slots, site = routed
    try:
        query = _query_of(URL.build(query_string=raw_query, encoded=True).query, route)
    except ValueError:
        return None
    if query is None:
        return None
    url = site.upstreams[route.vendor] + route.upstream.format(**slots)
    return (url + "?" + urlencode(query) if query else url), site


def _segments(raw_path: str, prefix: str) -> list[str] | None:
    """Split the still-encoded path under `prefix`; None when any segment is not plain."""
    if not raw_path.startswith(prefix):
        return None  # an absolute-form target, or an escaped prefix
    tail = raw_path[len(prefix) :]
    if not tail:
        return []
    segments = tail.split("/")
    if not all(_SEGMENT.fullmatch(s) for s in segments):
        return None
    return segments


def _bare_host(host: str) -> str:
    """Return the Host header without its port, lower-cased, without a trailing dot."""
    if not host.endswith("]"):
        host = host.rsplit(":", 1)[0]
    return host.lower().rstrip(".")


def _find(segments: Sequence[str]) -> tuple[Route, dict[str, str]] | None:
    for route in ROUTES:
        slots = route.match(segments)
        if slots is not None:
            return route, slots
    return None


def _query(request: web.Request, route: Route) -> dict[str, str] | None:
    """Return the allow-listed parameters in table order; None when one is bad or repeated."""
    return _query_of(request.query, route)


def _query_of(params: MultiMapping[str], route: Route) -> dict[str, str] | None:
    out: dict[str, str] = {}
    for name, param in route.params.items():
        values = params.getall(name, [])
        if len(values) > 1 or (param.required and not values):
            return None
        if values:
            if not param.pattern.fullmatch(values[0]):
                return None
            out[name] = values[0]
    return out


def _script_type(resp: aiohttp.ClientResponse) -> str:
    media = resp.content_type.lower()
    if media not in JS_TYPES:
        raise UpstreamError("not a script content type")
    charset = resp.charset
    return f"{media}; charset={charset}" if charset and _CHARSET.fullmatch(charset) else media


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise UpstreamError("body over the size limit")
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(65_536):
        buf += chunk
        if len(buf) > limit:
            raise UpstreamError("body over the size limit")
    return bytes(buf)


def _gunzip(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise UpstreamError("bad gzip body") from exc
    if len(out) > limit:
        raise UpstreamError("body over the size limit")
    if not inflater.eof or inflater.unused_data:
        raise UpstreamError("bad gzip body")
    return out


def _head_and_body(
    entry: Entry, site: SiteScripts, how: str, gzip_ok: bool, not_modified: bool
) -> tuple[bytes, bytes]:
    """Return the status line and headers (CRLF-terminated lines) and the body of an answer."""
    headers = _headers(entry, site, how, gzip_ok, not_modified)
    status = b"HTTP/1.1 304 Not Modified\r\n" if not_modified else b"HTTP/1.1 200 OK\r\n"
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    body = b"" if not_modified else entry.gzipped if gzip_ok and entry.gzipped else entry.body
    return status + lines.encode("latin-1"), body


def _headers(
    entry: Entry, site: SiteScripts, how: str, gzip_ok: bool, not_modified: bool
) -> dict[str, str]:
    headers = {
        "Cache-Control": f"public, max-age={int(site.cache_seconds)}",
        "ETag": entry.etag,
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
        "X-Cache": how,
    }
    if not_modified:
        return headers
    if gzip_ok:
        headers["Content-Encoding"] = "gzip"
    headers["Content-Type"] = entry.content_type
    return headers


def _respond(request: web.Request, entry: Entry, site: SiteScripts, how: str) -> web.Response:
    if _etag_matches(request.headers.get("If-None-Match"), entry.etag):
        return web.Response(status=304, headers=_headers(entry, site, how, False, True))
    gzip_ok = entry.gzipped is not None and _accepts_gzip(
        request.headers.get("Accept-Encoding", "")
    )
    body = entry.gzipped if gzip_ok and entry.gzipped is not None else entry.body
    return web.Response(body=body, headers=_headers(entry, site, how, gzip_ok, False))


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    bare = etag.removeprefix("W/")
    return any(t.strip() == "*" or t.strip().removeprefix("W/") == bare for t in header.split(","))


def _accepts_gzip(header: str) -> bool:
    weights: dict[str, float] = {}
    for item in header.lower().split(","):
        name, _, params = item.partition(";")
        weight = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        weights[name.strip()] = weight
    return weights.get("gzip", weights.get("x-gzip", weights.get("*", 0.0))) > 0
