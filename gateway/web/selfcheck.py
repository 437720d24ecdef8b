"""GET <selfcheck_path>: the visitor's own cookie and Safari self-check (HTML, or JSON).

Served on the site's own host(s) (`sites[].selfcheck_path`, default ``/selfcheck``; behind the
shop's nginx in path mode it is ``/t/selfcheck``). It is public: it shows only what the
requesting browser itself sent (cookie values masked to a short prefix) and what the gateway
would set, and it is rate-limited per client address and in total. It shows:

* every cookie the gateway manages (its own visitor id, the consent choice, the vendor cookies
  of ``gateway.destinations.COOKIES``) with the attributes the gateway issues it with (Max-Age,
  Domain, Path, Secure, HttpOnly, SameSite, built by the same ``set_cookie_header``) and whether
  this browser sent it (a browser never sends attributes back);
* the host verdict, server side: whether the request Host is one of the site's, whether it came
  through a trusted proxy, and for every served host whether Safari caps its cookies for pages
  on the site's page hosts (the hosts of `allowed_origins`, else the request host itself:
  same-origin path mode), from DNS (``gateway.core.safari``, through an injectable resolver);
* with ``?format=json`` the same as a document (``signalgate check-site`` reads it).

The HTML carries one small inline script (CSP nonce, no external resource) that compares
``document.cookie`` with what the server saw: a cookie that is not HttpOnly must be visible to
script, an HttpOnly one must not. Nothing is logged but a count.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import web

from gateway.core.buckets import Buckets
from gateway.core.clickids import CookieKind
from gateway.core.jsoncodec import dumps
from gateway.core.safari import CAP_SECONDS, HostVerdict, Resolution, assess, safari_max_age
from gateway.core.safari import shares_half as _shares_half
from gateway.destinations import PLATFORMS
from gateway.web.browserconsent import CONSENT_COOKIE
from gateway.web.cookies import (
    normalize_host,
    parse_cookie_header,
    registrable_domain,
    set_cookie_header,
)
from gateway.web.middleware import Network, client_ip_of, proxied_https
from gateway.web.pipeline import Site
from gateway.web.resolver import CachedResolver, DnsResolver, Resolver
from gateway.web.selfcheck_page import render

__all__ = ["SELFCHECK", "ManagedCookie", "SelfCheck", "install", "managed_cookies"]

PER_CLIENT_BURST: Final = 10.0
PER_CLIENT_PER_SECOND: Final = 0.2
"""A client may load the page 10 times at once, then once every 5 seconds."""
TOTAL_BURST: Final = 60.0
TOTAL_PER_SECOND: Final = 2.0
"""All clients together: 60 at once, then 2 a second (bounds the DNS lookups it causes)."""
DNS_BUDGET_SECONDS: Final = 5.0
"""The page answers within this long even when DNS does not (verdicts then say unknown)."""
MAX_HOSTS: Final = 12
"""Served and page hosts checked per request at most."""
PREFIX_CHARS: Final = 6


@dataclass(frozen=True, slots=True)
class ManagedCookie:
    """One cookie the gateway sets, as it sets it."""

    name: str
    owner: str
    """``signalgate`` or the platform whose cookie it is."""
    purpose: str
    max_age: int
    http_only: bool


def managed_cookies(site: Site) -> list[ManagedCookie]:
    """Return the cookies the gateway issues for `site`, with collect's lifetimes and flags."""
    cfg = site.config
    id_age = int(cfg.id_cookie_days * 86400)
    click_age = int(cfg.click_cookie_days * 86400)
    rows = [
        ManagedCookie(cfg.visitor_cookie, "signalgate", "visitor id (signed)", id_age, True),
        ManagedCookie(CONSENT_COOKIE, "signalgate", "consent choice", id_age, True),
    ]
    for platform in PLATFORMS.values():
        for spec in platform.cookies:
            if spec.kind is CookieKind.READ:
                continue
            visitor = spec.kind is CookieKind.VISITOR
            rows.append(
                ManagedCookie(
                    spec.name,
                    platform.name,
                    "browser id" if visitor else f"click id ({spec.click_id})",
                    id_age if visitor else click_age,
                    False,
                )
            )
    return rows


def host_name(raw: str) -> str:
    """The request Host as a name: no port, lower-case; an IPv6 literal without brackets."""
    name = normalize_host(raw)
    if name is not None:
        return name
    if raw.startswith("["):
        return raw[1:].partition("]")[0].lower()
    return raw.lower()


def mask(value: str) -> str:
    """Return a short prefix of a cookie value and its length (never the whole value)."""
    keep = min(PREFIX_CHARS, len(value) // 2)
    return f"{value[:keep]}… ({len(value)} chars)"


def page_hosts(site: Site, request_host: str) -> list[str]:
    """The hosts the shop's pages are served from: `allowed_origins`' hosts; without any, the
    served hosts themselves (same-origin path mode: each host serves its own pages)."""
    hosts: list[str] = []
    for origin in site.config.allowed_origins:
        try:
            name = urlsplit(origin).hostname
        except ValueError:
            continue
        name = (name or "").lower().rstrip(".")
        if name and name not in hosts:
            hosts.append(name)
    return hosts or served_hosts(site, request_host)


def served_hosts(site: Site, request_host: str) -> list[str]:
    """The hosts the gateway serves the site on (its configured hosts, else this host)."""
    hosts = [h.lower().rstrip(".") for h in site.config.hosts]
    if request_host not in hosts:
        hosts.insert(0, request_host)
    return list(dict.fromkeys(hosts))


class SelfCheck:
    """The self-check handler; `resolver` may be replaced before the first request (tests)."""

    def __init__(
        self,
        sites: Sequence[Site],
        *,
        trusted_proxies: Sequence[Network],
        clock: Callable[[], float],
        resolver: Resolver | None = None,
    ) -> None:
        self.clock = clock
        self.trusted = tuple(trusted_proxies)
        self.resolver: Resolver = resolver or CachedResolver(DnsResolver(), clock)
        self.by_host: dict[str, Site] = {h.lower(): s for s in sites for h in s.config.hosts}
        self.fallback = sites[0] if len(sites) == 1 and not sites[0].config.hosts else None
        self.resolvable = frozenset(
            {*self.by_host, *(h for s in sites for h in page_hosts(s, "") if h)}
        )
        """Names the page may look up: configured hosts and page hosts, never a Host header's."""
        self.per_client = Buckets(PER_CLIENT_BURST, PER_CLIENT_PER_SECOND)
        self.total = Buckets(TOTAL_BURST, TOTAL_PER_SECOND)
        self.served = 0
        self.limited = 0

    def _site(self, host: str) -> Site | None:
        return self.by_host.get(host_name(host), self.fallback)

    async def get(self, request: web.Request) -> web.Response:
        """Answer the self-check of the requesting browser (429 past the rate limit)."""
        site = self._site(request.host)
        if site is None:
            raise web.HTTPNotFound(text="unknown site host")
        client = client_ip_of(
            request.remote, request.headers.getall("X-Forwarded-For", []), self.trusted
        )
        now = self.clock()
        wait = max(self.per_client.take(client, now), self.total.take(None, now))
        if wait > 0:
            self.limited += 1
            return web.json_response(
                {"error": "rate_limited", "message": "too many self-checks; try again later"},
                status=429,
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        self.served += 1
        report = await self.report(site, request)
        headers = {
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
        }
        if request.query.get("format") == "json":
            return web.Response(
                body=dumps(report), content_type="application/json", headers=headers
            )
        nonce = secrets.token_urlsafe(16)
        headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}';"
            " base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
        return web.Response(
            text=render(report, nonce), content_type="text/html", charset="utf-8", headers=headers
        )

    async def report(self, site: Site, request: web.Request) -> dict[str, Any]:
        """Return the self-check of this request as a JSON-ready document."""
        cfg = site.config
        host = host_name(request.host)
        peer = request.remote
        via_proxy = _is_trusted(peer, self.trusted)
        secure = request.secure or proxied_https(
            peer, request.headers.get("X-Forwarded-Proto"), self.trusted
        )
        domain = cfg.cookie_domain or registrable_domain(request.host)
        pages = page_hosts(site, host)[:MAX_HOSTS]
        served = served_hosts(site, host)[:MAX_HOSTS]
        verdicts, resolved = await self._verdicts(served, pages)
        own = [v for v in verdicts if v.host == host]
        capped = _worst(own)
        cookies = managed_cookies(site)
        sent = parse_cookie_header(request.headers.get("Cookie"), {c.name for c in cookies})
        rows = []
        for cookie in cookies:
            line = set_cookie_header(
                cookie.name,
                "v",
                domain=domain,
                max_age=cookie.max_age,
                secure=secure,
                http_only=cookie.http_only,
            )
            value = sent.get(cookie.name)
            rows.append(
                {
                    "name": cookie.name,
                    "owner": cookie.owner,
                    "purpose": cookie.purpose,
                    "max_age": cookie.max_age,
                    "domain": domain,
                    "path": "/",
                    "secure": secure,
                    "http_only": cookie.http_only,
                    "same_site": "Lax",
                    "attributes": line.partition(";")[2].strip(),
                    "sent": value is not None,
                    "value_prefix": mask(value) if value is not None else None,
                    "safari_max_age": safari_max_age(cookie.max_age, capped),
                }
            )
        return {
            "site": cfg.id,
            "host": host,
            "host_configured": host in self.by_host,
            "via_proxy": via_proxy,
            "secure": secure,
            "page_hosts": pages,
            "served_hosts": served,
            "capped": capped,
            "safari_cap_seconds": CAP_SECONDS,
            "cookies": rows,
            "verdicts": [_verdict_json(v, resolved) for v in verdicts],
            "connected": self._connected(request, via_proxy, pages, resolved),
        }

    async def _verdicts(
        self, served: Sequence[str], pages: Sequence[str]
    ) -> tuple[list[HostVerdict], dict[str, Resolution]]:
        names = list(dict.fromkeys([*served, *pages]))
        resolved: dict[str, Resolution] = {}

        async def one(name: str) -> None:
            if name in self.resolvable or _is_ip(name):
                resolved[name] = await self.resolver.resolve(name)
            else:  # a Host header the config does not name (single-site fallback): no query
                resolved[name] = Resolution(name, error="not a configured host: not looked up")

        try:
            async with asyncio.timeout(DNS_BUDGET_SECONDS):
                await asyncio.gather(*(one(n) for n in names))
        except TimeoutError:
            pass
        for name in names:
            resolved.setdefault(name, Resolution(name, error="DNS did not answer in time"))
        verdicts = [
            assess(resolved[s], resolved[p], registrable_domain)
            for s in served
            for p in pages
            if not (s in pages and s != p)  # a page host is checked against itself only
        ]
        return verdicts, resolved

    def _connected(
        self,
        request: web.Request,
        via_proxy: bool,
        pages: Sequence[str],
        resolved: Mapping[str, Resolution],
    ) -> dict[str, Any] | None:
        """The address this browser reached the gateway at (direct connections only)."""
        if via_proxy or request.transport is None:
            return None
        sockname = request.transport.get_extra_info("sockname")
        if not isinstance(sockname, tuple) or not sockname:
            return None
        address = str(sockname[0])
        try:
            public = ipaddress.ip_address(address).is_global
        except ValueError:
            return None
        page_addresses = [a for p in pages for a in resolved[p].addresses]
        shares = any(_shares_half(address, a) for a in page_addresses) if page_addresses else None
        return {"address": address if public else None, "public": public, "shares_half": shares}


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _is_trusted(peer: str | None, trusted: Sequence[Network]) -> bool:
    if not peer or not trusted:
        return False
    try:
        addr = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(addr in net for net in trusted)


def _worst(verdicts: Sequence[HostVerdict]) -> bool | None:
    if any(v.capped for v in verdicts):
        return True
    if any(v.capped is None for v in verdicts):
        return None
    return False


def _verdict_json(verdict: HostVerdict, resolved: Mapping[str, Resolution]) -> dict[str, Any]:
    doc = asdict(verdict)
    doc["pairs"] = [dict(p, ok=p["shared_bits"] >= p["needed_bits"]) for p in doc["pairs"]]
    doc["cnames"] = list(resolved[verdict.host].cnames)
    doc["addresses"] = list(resolved[verdict.host].addresses)
    doc["page_addresses"] = list(resolved[verdict.page_host].addresses)
    return doc


SELFCHECK: Final = web.AppKey("selfcheck", SelfCheck)


def install(
    app: web.Application,
    sites: Sequence[Site],
    trusted_proxies: Sequence[Network],
    clock: Callable[[], float],
) -> SelfCheck | None:
    """Serve the self-check at every site's `selfcheck_path` (app[SELFCHECK]); None if off."""
    paths = sorted({s.config.selfcheck_path for s in sites if s.config.selfcheck_path})
    if not paths:
        return None
    check = SelfCheck(sites, trusted_proxies=trusted_proxies, clock=clock)
    app[SELFCHECK] = check
    for path in paths:
        app.router.add_get(path, check.get)
    return check
