"""POST /e: browser events from the loader, with cookies, visitor profile and consent.

One hit: resolve the site by Host → check Origin (CORS) → read the body (JSON, also text/plain
from beacons) → decide consent (Sec-GPC, the loader's consent state, CMP cookie, TCF) → resolve
the visitor (signed cookie, else the loader's candidate id, else new) → plan and (re)issue vendor
cookies (click ids from URL and referrer, lost or malformed cookies of a known visitor restored
from the profile; an explicit denial deletes every tracking cookie instead) → parse and
hash the event through the shared pipeline → merge the profile and append the event (enriched
from the merged profile) in one store transaction → 204 once it is committed.

Browser-supplied ip/user_agent/fbc/fbp/click ids are ignored: the gateway takes them from the
connection, the headers and the cookies it manages.

One code path serves both roads a request can take: aiohttp (`Collect.post`) and the fast lane
(`Collect.fast_answer`, gateway/web/fastlane.py), which answers a `POST` to a collect path whose
body it read whole (no Content-Encoding, at most `MAX_BODY` bytes) straight from the socket. Both
turn the request into plain inputs (`CollectRequest`) and answer with the same `Reply`.
`secure` (cookies marked `Secure`) is true on a connection the gateway terminates TLS on itself
(`tls.enabled`: aiohttp's `request.secure`, the lane's `LaneRequest.secure`) or when
`X-Forwarded-Proto: https` says a trusted proxy in front did (`server.trusted_proxies`; from
any other peer the header is ignored).

The hit's steps are collaborators, each of one idea: the consent decision
(gateway/web/browserconsent.py), the trusted proxies' word on the connection
(gateway/web/forwarded.py), the visitor and its cookies (gateway/web/collectvisitor.py) and the
event and profile write (gateway/web/collectwrite.py); the request and counters are in
gateway/web/collectvalues.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from aiohttp import web
from multidict import CIMultiDict

from gateway.core.consent import Tier, is_explicit_denial
from gateway.core.jsoncodec import loads
from gateway.destinations import READ_COOKIES, VENDOR_COOKIES
from gateway.web.browserconsent import (
    CONSENT_COOKIE,
    TC_COOKIE,
    ConsentDecider,
    consent_of,
    decode_consent,
    encode_consent,
)
from gateway.web.collectvalues import CollectRequest, CollectStats
from gateway.web.collectvisitor import VisitorCookies, VisitorPlan, deletions
from gateway.web.collectwrite import CollectWrite
from gateway.web.cookies import parse_cookie_header, registrable_domain, set_cookie_header
from gateway.web.fastlane import Answer, LaneRequest, Reply
from gateway.web.forwarded import TrustedProxies
from gateway.web.middleware import BodyError, Network, read_body
from gateway.web.origins import cors_headers
from gateway.web.pipeline import Pipeline, Site

log = logging.getLogger("signalgate.collect")

MAX_BODY: Final = 65_536
"""keepalive fetches and beacons are capped at 64 KiB by browsers anyway."""
_JSON: Final = "application/json; charset=utf-8"


class Collect:
    """Handlers of the browser collect endpoint."""

    def __init__(
        self,
        pipeline: Pipeline,
        sites: Sequence[Site],
        *,
        clock: Callable[[], float],
        trusted_proxies: Sequence[Network],
        cookie_key: bytes,
        new_token: Callable[[], str],
    ) -> None:
        self.pipeline = pipeline
        self.clock = clock
        self.key = cookie_key
        self.stats = CollectStats()
        self.proxies = TrustedProxies(trusted_proxies)
        """The trusted proxies' word on a connection (client address, HTTPS), memoised."""
        self.consent = ConsentDecider(sites)
        """Each site's consent policy and the decisions' memo (shared with the hit mirror)."""
        self.visitors = VisitorCookies(
            pipeline, self.proxies, cookie_key=cookie_key, new_token=new_token
        )
        """Resolves the visitor of a hit with full consent and plans its cookies."""
        self.write = CollectWrite(pipeline, self.stats)
        """Prepares the hit's event and commits it with the visitor's profile."""
        self.by_host: dict[str, Site] = {h.lower(): s for s in sites for h in s.config.hosts}
        # A single site without configured hosts answers on any Host (development); otherwise
        # the Host must be one of the site's, so cookies are never set for a stranger's domain.
        self.fallback = sites[0] if len(sites) == 1 and not sites[0].config.hosts else None
        self.wanted: dict[str, frozenset[str]] = {
            s.config.id: frozenset(
                {*VENDOR_COOKIES, *READ_COOKIES, s.config.visitor_cookie, CONSENT_COOKIE, TC_COOKIE}
                | ({s.config.consent.cmp_cookie} if s.config.consent.cmp_cookie else set())
            )
            for s in sites
        }
        """Cookie names each site reads, computed once instead of on every hit."""
        self.paths = frozenset(s.config.collect_path for s in sites)
        """The collect paths (every site's path takes every site's hits, as routed by aiohttp)."""

    def site_for(self, request: web.Request) -> Site | None:
        """Return the site served on the request's Host (the only site, if just one)."""
        return self._site(request.host)

    def _site(self, host: str) -> Site | None:
        host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return self.by_host.get(host.lower().rstrip("."), self.fallback)

    def _cors(self, origin: str | None, host: str, site: Site) -> list[tuple[str, str]] | None:
        return cors_headers(origin, host, site.config.allowed_origins)

    async def preflight(self, request: web.Request) -> web.Response:
        """Answer a CORS preflight for allowed origins only."""
        site = self.site_for(request)
        cors = self._cors(request.headers.get("Origin"), request.host, site) if site else None
        if not cors:
            return web.Response(status=403)
        cors.append(("Access-Control-Allow-Methods", "POST"))
        cors.append(("Access-Control-Allow-Headers", "Content-Type"))
        cors.append(("Access-Control-Max-Age", "86400"))
        return web.Response(status=204, headers=CIMultiDict(cors))

    # --- the two roads in -------------------------------------------------------------------

    async def post(self, request: web.Request) -> web.Response:
        """Take one browser event from aiohttp; answer 204 (or 4xx for bad input), never 500."""
        host = request.host
        admitted = self._admit(host, request.headers.get("Origin"))
        if isinstance(admitted, Reply):
            return admitted.response()
        site, cors = admitted
        try:
            body = await read_body(request, MAX_BODY)
        except BodyError as exc:
            return self._reject(exc.status, cors, exc.reason).response()
        hit = CollectRequest(
            host=host,
            headers=request.headers,
            peer=request.remote,
            forwarded=tuple(request.headers.getall("X-Forwarded-For", ())),
            body=body,
            secure=request.secure,
        )
        return (await self.answer(site, cors, hit)).response()

    def fast_answer(self, request: LaneRequest) -> Awaitable[Answer] | None:
        """The fast lane's entry (gateway/web/fastlane.py): a collect hit's answer, else None.

        Same checks and answers as `post`. A body over `MAX_BODY` and a request without Host
        are left to aiohttp (its 413, its notion of the host).
        """
        if (
            request.method != "POST"
            or request.target.partition("?")[0] not in self.paths
            or len(request.body) > MAX_BODY
            or "host" not in request.headers
        ):
            return None
        return self._fast(request)

    async def _fast(self, request: LaneRequest) -> Answer:
        headers = request.headers
        host = headers["host"]
        admitted = self._admit(host, headers.get("origin"))
        if isinstance(admitted, Reply):
            return admitted.encode()
        site, cors = admitted
        forwarded = headers.get("x-forwarded-for")
        hit = CollectRequest(
            host=host,
            headers=headers,
            peer=request.peer,
            forwarded=(forwarded,) if forwarded is not None else (),
            body=request.body,
            secure=request.secure,
        )
        return (await self.answer(site, cors, hit)).encode()

    def _admit(self, host: str, origin: str | None) -> tuple[Site, list[tuple[str, str]]] | Reply:
        """Return the hit's site and CORS headers, or the rejection (unknown host, origin)."""
        self.stats.hits += 1
        site = self._site(host)
        if site is None:
            return self._reject(404, [], "unknown site host")
        cors = self._cors(origin, host, site)
        if cors is None:
            return self._reject(403, [], "origin not allowed")
        return site, cors

    # --- the hit ----------------------------------------------------------------------------

    async def answer(self, site: Site, cors: list[tuple[str, str]], hit: CollectRequest) -> Reply:
        """Answer an admitted hit: cookies, profile and event, committed before the 204."""
        try:
            body = loads(hit.body)
        except (ValueError, RecursionError):
            return self._reject(400, cors, "body is not valid JSON")
        if not isinstance(body, dict):
            return self._reject(400, cors, "expected a JSON object")
        now = self.clock()
        cfg = site.config
        headers = hit.headers
        cookies = parse_cookie_header(headers.get("cookie"), self.wanted[cfg.id])
        raw_consent = body.get("consent")
        explicit = consent_of(raw_consent) or decode_consent(cookies.get(CONSENT_COOKIE))
        decision = self.consent.of_request(site, headers, cookies, explicit)
        self.stats.count_consent(cfg.id, decision)
        domain = cfg.cookie_domain or registrable_domain(hit.host)
        secure = hit.secure or self.proxies.proxied_https(
            hit.peer, headers.get("x-forwarded-proto")
        )
        set_cookies: list[str] = []
        if raw_consent is not None and explicit is not None:
            set_cookies.append(
                set_cookie_header(
                    CONSENT_COOKIE,
                    encode_consent(explicit),
                    domain=domain,
                    max_age=int(cfg.id_cookie_days * 86400),
                    secure=secure,
                    http_only=True,
                )
            )
        plan: VisitorPlan | None = None
        if decision.tier is Tier.FULL:
            plan = await self.visitors.identify(
                hit, site, body, cookies, domain, secure, set_cookies, now
            )
        elif is_explicit_denial(decision):
            set_cookies.extend(deletions(cookies, cfg.visitor_cookie, domain, secure))
        status, payload = await self.write.event(site, body, plan, decision, now)
        headers_out = [*cors, *(("Set-Cookie", line) for line in set_cookies)]
        if payload:
            headers_out.append(("Content-Type", _JSON))
        return Reply(status, tuple(headers_out), payload)

    def _reject(self, status: int, headers: list[tuple[str, str]], reason: str) -> Reply:
        self.stats.rejected += 1
        return _json(status, headers, {"error": "rejected", "message": reason})


def _json(status: int, headers: list[tuple[str, str]], doc: dict[str, Any]) -> Reply:
    """Return a JSON answer shaped like aiohttp's `json_response`."""
    return Reply(status, (*headers, ("Content-Type", _JSON)), json.dumps(doc).encode())
