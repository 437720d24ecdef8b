"""GET <prefix><alias>: vendor pixel scripts served from the site's own host, through a cache.

The route table and how a request is read against it live in gateway/web/script_routes.py; the
cache and its upstream fetches in gateway/web/script_cache.py. This module is the request side:
the site by Host, the route, and our answer (through aiohttp, or prebuilt for the fast lane).

Responses carry our own headers only: `Cache-Control: public, max-age=<cache_seconds>`, a weak
`ETag` of the script text (304 on `If-None-Match`), the upstream's JavaScript Content-Type,
`Vary: Accept-Encoding`, `nosniff` and `X-Cache` (HIT, MISS, REVALIDATED, STALE). An upstream
gzip body is stored as received and served as is to clients that accept gzip, decompressed to
the others. Upstream `Set-Cookie` and hop-by-hop headers are never passed on; the outbound request
carries no client header (no Cookie, Authorization, User-Agent or Host of the visitor).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web
from yarl import URL

from gateway.config import SiteConfig
from gateway.web.middleware import error_response
from gateway.web.script_cache import Clock, Entry, ScriptCache, SiteScripts, UpstreamError
from gateway.web.script_routes import Route, find_route, path_segments, query_of, route_query

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_MAX_MEMO: Final = 4096
"""Entries of each fast-lane memo (targets, header blocks, Accept-Encoding values)."""
_UNSEEN: Final[Any] = object()


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
        segments = path_segments(request.raw_path.partition("?")[0], prefix)
        if segments is None:
            return self._reject(400, "bad_request", "malformed script path")
        site = self.site_for(request)
        found = find_route(segments) if site is not None and site.prefix == prefix else None
        if site is None or found is None or found[0].vendor not in site.vendors:
            return self._reject(404, "not_found", "no such script")
        route, slots = found
        query = route_query(request, route)
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
        segments = path_segments(raw_path, site.prefix)
        found = find_route(segments) if segments is not None else None
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
        query = query_of(URL.build(query_string=raw_query, encoded=True).query, route)
    except ValueError:
        return None
    if query is None:
        return None
    url = site.upstreams[route.vendor] + route.upstream.format(**slots)
    return (url + "?" + urlencode(query) if query else url), site


def _bare_host(host: str) -> str:
    """Return the Host header without its port, lower-cased, without a trailing dot."""
    if not host.endswith("]"):
        host = host.rsplit(":", 1)[0]
    return host.lower().rstrip(".")


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
