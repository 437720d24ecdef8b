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
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from aiohttp import web
from multidict import CIMultiDict

from gateway.core.clickids import CookieKind, capture, click_ids_from_cookies, plan_cookies
from gateway.core.consent import (
    ConsentPolicy,
    Decision,
    Signals,
    Tier,
    apply,
    decide,
    is_explicit_denial,
)
from gateway.core.event import Consent, Event
from gateway.core.jsoncodec import loads
from gateway.core.profile import ProfileUpdate, VisitorProfile, enrich
from gateway.core.record import encode
from gateway.destinations import (
    CARRIED_COOKIES,
    CLICK_IDS,
    COOKIES,
    READ_COOKIES,
    TRACKING_COOKIES,
    VENDOR_COOKIES,
)
from gateway.destinations.meta.clickids import format_fbp
from gateway.store.base import NewEvent, ProfileQuery
from gateway.web.cookies import (
    delete_cookie_header,
    parse_cookie_header,
    registrable_domain,
    set_cookie_header,
    sign_visitor_id,
    subdomain_index,
    verify_visitor_id,
)
from gateway.web.fastlane import Answer, LaneRequest, Reply
from gateway.web.middleware import BodyError, Network, client_ip_of, proxied_https, read_body
from gateway.web.origins import origin_allowed
from gateway.web.pipeline import Pipeline, Site
from gateway.web.tallying import count_appended, count_offered

log = logging.getLogger("signalgate.collect")

MAX_BODY: Final = 65_536
"""keepalive fetches and beacons are capped at 64 KiB by browsers anyway."""
CONSENT_COOKIE: Final = "_sgc"
"""Strictly necessary: remembers the visitor's explicit consent choice (no identifier)."""
TC_COOKIE: Final = "euconsent-v2"
CLICK_COOKIES: Final = frozenset(c.name for c in COOKIES if c.kind is not CookieKind.VISITOR)
_VID_RE: Final = re.compile(r"^(\d{13})-([0-9a-f]{16})$")
_CANDIDATE_SKEW_MS: Final = 86_400_000
_CONSENT_CODES: Final = {"g": True, "d": False, "u": None}
_ALLOWED_KEYS: Final = ("event", "event_id", "url", "referrer", "data", "consent")
_IDENTIFY_KEYS: Final = frozenset(
    {
        "email",
        "phone",
        "external_id",
        "first_name",
        "last_name",
        "city",
        "state",
        "zip",
        "country",
        "date_of_birth",
        "gender",
    }
)
_JSON: Final = "application/json; charset=utf-8"
_MEMO_MAX: Final = 1024
"""Entries kept by each per-process memo (consent decisions, client addresses)."""
_MEMO_VALUE_MAX: Final = 512
"""Signals with a longer TC string or CMP cookie are decided afresh, not memoised."""


@dataclass
class CollectStats:
    """Counters of the collect endpoint (aggregates only, never identifiers)."""

    hits: int = 0
    accepted: int = 0
    rejected: int = 0
    control: int = 0
    by_tier: dict[str, int] = field(default_factory=dict)
    consent_reasons: dict[str, int] = field(default_factory=dict)
    site_tiers: dict[tuple[str, str], int] = field(default_factory=dict)
    """(site, tier) → hits: `by_tier` per site, for the per-minute rollups."""
    site_reasons: dict[tuple[str, str], int] = field(default_factory=dict)
    """(site, reason) → hits: `consent_reasons` per site."""

    def totals(self) -> dict[str, object]:
        """The counters as a JSON-ready dict (`/v1/debug/recent`), without the per-site ones."""
        return {
            "hits": self.hits,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "control": self.control,
            "by_tier": dict(self.by_tier),
            "consent_reasons": dict(self.consent_reasons),
        }


@dataclass(frozen=True, slots=True)
class CollectRequest:
    """One hit as plain inputs, whichever road it came by.

    `headers` answers lower-case names (aiohttp's case-insensitive headers, or the lane's
    lower-cased dict); `forwarded` holds every X-Forwarded-For value.
    """

    host: str
    headers: Mapping[str, str]
    peer: str | None
    forwarded: tuple[str, ...]
    body: bytes
    secure: bool


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a hit with full consent tells about its visitor (computed before the write)."""

    visitor_id: str
    update: ProfileUpdate
    user: dict[str, Any]


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
        self.trusted = tuple(trusted_proxies)
        self.key = cookie_key
        self.new_token = new_token
        self.stats = CollectStats()
        self.by_host: dict[str, Site] = {h.lower(): s for s in sites for h in s.config.hosts}
        # A single site without configured hosts answers on any Host (development); otherwise
        # the Host must be one of the site's, so cookies are never set for a stranger's domain.
        self.fallback = sites[0] if len(sites) == 1 and not sites[0].config.hosts else None
        self.policies = {s.config.id: _policy(s) for s in sites}
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
        self._region_headers = {
            s.config.id: s.config.consent.region_header.lower()
            for s in sites
            if s.config.consent.region_header
        }
        self._decisions: dict[tuple[str, Signals], Decision] = {}
        self._ips: dict[tuple[str | None, tuple[str, ...]], str | None] = {}
        self._https: dict[tuple[str | None, str], bool] = {}

    def site_for(self, request: web.Request) -> Site | None:
        """Return the site served on the request's Host (the only site, if just one)."""
        return self._site(request.host)

    def _site(self, host: str) -> Site | None:
        host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return self.by_host.get(host.lower().rstrip("."), self.fallback)

    def _cors(self, origin: str | None, host: str, site: Site) -> list[tuple[str, str]] | None:
        if origin is None:
            return []
        # Scheme, host and port; same origin (path deployment) is always allowed.
        if not origin_allowed(origin, host, site.config.allowed_origins):
            return None
        return [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Credentials", "true"),
            ("Vary", "Origin"),
        ]

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
        explicit = _consent_of(raw_consent) or _decode_consent(cookies.get(CONSENT_COOKIE))
        decision = self._decide(site, headers, cookies, explicit)
        self._count_consent(cfg.id, decision)
        domain = cfg.cookie_domain or registrable_domain(hit.host)
        secure = hit.secure or self.proxied_https(hit.peer, headers.get("x-forwarded-proto"))
        set_cookies: list[str] = []
        if raw_consent is not None and explicit is not None:
            set_cookies.append(
                set_cookie_header(
                    CONSENT_COOKIE,
                    _encode_consent(explicit),
                    domain=domain,
                    max_age=int(cfg.id_cookie_days * 86400),
                    secure=secure,
                    http_only=True,
                )
            )
        plan: _Plan | None = None
        if decision.tier is Tier.FULL:
            plan = await self._identify(hit, site, body, cookies, domain, secure, set_cookies, now)
        elif is_explicit_denial(decision):
            set_cookies.extend(deletions(cookies, cfg.visitor_cookie, domain, secure))
        status, payload = await self._event(site, body, plan, decision, now)
        headers_out = [*cors, *(("Set-Cookie", line) for line in set_cookies)]
        if payload:
            headers_out.append(("Content-Type", _JSON))
        return Reply(status, tuple(headers_out), payload)

    def _decide(
        self,
        site: Site,
        headers: Mapping[str, str],
        cookies: Mapping[str, str],
        explicit: Consent | None,
    ) -> Decision:
        """Return the consent decision (memoised: `decide` is pure and signals repeat)."""
        cfg = site.config
        cmp_cookie = cfg.consent.cmp_cookie
        region_header = self._region_headers.get(cfg.id)
        signals = Signals(
            gpc=headers.get("sec-gpc", "").strip() == "1",
            consent=explicit,
            tc_string=cookies.get(TC_COOKIE),
            cmp_cookie_value=cookies.get(cmp_cookie) if cmp_cookie else None,
            region=_region(headers.get(region_header)) if region_header else None,
        )
        return self.decide(site, signals)

    def decide(self, site: Site, signals: Signals) -> Decision:
        """`decide` for the site's policy, memoised on short signals (it is a pure function);
        the hit proxy shares this memo."""
        key = (site.config.id, signals)
        decision = self._decisions.get(key)
        if decision is None:
            decision = decide(self.policies[site.config.id], signals)
            if (
                len(signals.tc_string or "") <= _MEMO_VALUE_MAX
                and len(signals.cmp_cookie_value or "") <= _MEMO_VALUE_MAX
            ):
                if len(self._decisions) >= _MEMO_MAX:
                    self._decisions.clear()
                self._decisions[key] = decision
        return decision

    async def _identify(
        self,
        hit: CollectRequest,
        site: Site,
        body: dict[str, Any],
        cookies: Mapping[str, str],
        domain: str | None,
        secure: bool,
        set_cookies: list[str],
        now: float,
    ) -> _Plan:
        """Resolve the visitor and plan its cookies; return its profile update and user fields."""
        cfg = site.config
        now_ms = int(now * 1000)
        signed = cookies.get(cfg.visitor_cookie)
        known = verify_visitor_id(signed, self.key) if signed else None
        returning = known is not None
        vid = known or _candidate(body.get("vid"), now_ms) or f"{now_ms}-{self.new_token()}"
        profile_values: Mapping[str, str] = {}
        if returning and _needs_profile(cookies):
            # A lost or malformed vendor cookie of a known visitor is restored from the profile.
            (profile,) = await self.pipeline.store.find_profiles(cfg.id, [ProfileQuery(vid)])
            profile_values = profile.browser_ids if profile is not None else {}
        click_ids = capture(_text(body.get("url")), _text(body.get("referrer")), CLICK_IDS)
        index = subdomain_index(domain)
        bits = self._bits(vid)
        plan = plan_cookies(
            click_ids=click_ids,
            existing=cookies,
            profile_values=profile_values,
            now_ms=now_ms,
            random_bits=bits,
            subdomain_index=index,
            specs=COOKIES,
            table=CLICK_IDS,
        )
        if "_fbp" in plan and plan["_fbp"] not in (cookies.get("_fbp"), profile_values.get("_fbp")):
            # A new _fbp is derived from the visitor id alone, so near-simultaneous first hits
            # of one visitor (same candidate id) can never mint two different values.
            plan["_fbp"] = format_fbp(_minted_ms(vid, now_ms), bits(31), index)
        click_age = int(cfg.click_cookie_days * 86400)
        id_age = int(cfg.id_cookie_days * 86400)
        for name, value in plan.items():
            set_cookies.append(
                set_cookie_header(
                    name,
                    value,
                    domain=domain,
                    max_age=click_age if name in CLICK_COOKIES else id_age,
                    secure=secure,
                    http_only=False,
                )
            )
        set_cookies.append(
            set_cookie_header(
                cfg.visitor_cookie,
                sign_visitor_id(vid, self.key),
                domain=domain,
                max_age=id_age,
                secure=secure,
                http_only=True,
            )
        )
        ip = self._client_ip(hit.peer, hit.forwarded)
        ua = hit.headers.get("user-agent", "")[:1024] or None
        # The plan holds every managed cookie's value (a request cookie it lacks is malformed);
        # the request still holds the read-only ones (_epik, _rdt_uuid).
        all_clicks = {**click_ids_from_cookies({**cookies, **plan}, COOKIES), **click_ids}
        user: dict[str, Any] = {"visitor_id": vid, "click_ids": all_clicks}
        if ip:
            user["ip"] = ip
        if ua:
            user["user_agent"] = ua
        if fbc := plan.get("_fbc"):
            user["fbc"] = fbc
        if fbp := plan.get("_fbp"):
            user["fbp"] = fbp
        update = ProfileUpdate(
            click_ids=all_clicks, browser_ids=plan, ip=ip, user_agent=ua, consent=Tier.FULL.value
        )
        return _Plan(vid, update, user)

    async def _event(
        self,
        site: Site,
        body: dict[str, Any],
        plan: _Plan | None,
        decision: Decision,
        now: float,
    ) -> tuple[int, bytes]:
        """Parse the event; merge the profile (full consent) and append it in one write.

        Return the status and, for a refused event, its JSON error body.
        """
        name = body.get("event")
        identify = body.get("user")
        user: dict[str, Any] = {}
        if isinstance(identify, dict):
            user = {k: v for k, v in identify.items() if k in _IDENTIFY_KEYS}
        if plan is not None:
            user.update(plan.user)
        doc: dict[str, Any] = {k: body[k] for k in _ALLOWED_KEYS if k in body}
        doc["user"] = user
        control = isinstance(name, str) and name.startswith("sg:")
        if control:
            self.stats.control += 1
            if name == "sg:identify" and plan is not None:
                doc["event"] = "Identify"
                prepared = self.pipeline.prepare(site, doc, now=now)
                if prepared.event is not None and prepared.event.user.hashed:
                    plan = replace(
                        plan, update=replace(plan.update, hashed=prepared.event.user.hashed)
                    )
            if plan is not None:
                await self._touch(site, plan, now, None, decision)
            return 204, b""
        prepared = self.pipeline.prepare(site, doc, now=now)
        event = prepared.event
        count_offered(self.pipeline.tally, site.config.id, "loader", event)
        if plan is not None:
            # Identifiers the visitor gave earlier (sg('identify') on the checkout page) live in
            # the profile, not in the page: the event is enriched from the merged profile.
            await self._touch(site, plan, now, event, decision)
        elif event is not None:
            stored = _loader_event(event, None, decision)
            if stored is None:
                self.pipeline.routes_for(site, decision.tier, 1)  # counts it consent_denied
            else:
                await self.pipeline.commit(site, [stored], tier=decision.tier)
        if event is None:
            self.stats.rejected += 1
            errors = [e.as_dict() for e in prepared.errors]
            return 400, json.dumps({"error": "bad_request", "errors": errors}).encode()
        if decision.tier is not Tier.NONE:
            self.stats.accepted += 1
        return 204, b""

    async def _touch(
        self, site: Site, plan: _Plan, now: float, event: Event | None, decision: Decision
    ) -> None:
        """Merge the visitor's profile and append its enriched event in one transaction."""
        site_id = site.config.id
        # The routes its name takes (the destinations' event lists), split here on the loop:
        # `events_for` may run on the store's writer thread.
        routed = site.table.route(event.event, site.routes, "loader") if event is not None else None
        built: list[bool] = []
        appended: list[NewEvent] = []

        def events_for(profile: VisitorProfile) -> tuple[NewEvent, ...]:
            if event is None or routed is None or not site.routes:
                return ()
            stored = _loader_event(event, profile, decision)
            if stored is None:
                return ()
            built.append(True)
            if not routed.kept:
                return ()
            appended[:] = [  # kept for the debug view; a second call replaces it
                NewEvent(
                    site=site_id,
                    event_name=stored.event,
                    event_id=stored.event_id,
                    event_time=float(stored.time),
                    record=encode(stored),
                    routes=routed.kept,
                )
            ]
            return tuple(appended)

        _, results = await self.pipeline.store.touch_and_append(
            site_id, plan.visitor_id, plan.update, now, events_for
        )
        if self.pipeline.debug is not None and appended:  # gateway/web/debugview.py
            self.pipeline.debug.received(appended, results)
        if built and routed is not None:
            self.pipeline.count_routed_away(routed.away)
        if event is not None and results and routed is not None and routed.kept:
            count_appended(self.pipeline.tally, event.event, routed.kept, results[0])

    def proxied_https(self, peer: str | None, proto: str | None) -> bool:
        """`middleware.proxied_https` with the trusted proxies, memoised per (peer, value)."""
        if proto is None:
            return False
        key = (peer, proto)
        found = self._https.get(key)
        if found is None:
            found = proxied_https(peer, proto, self.trusted)
            if len(self._https) >= _MEMO_MAX:
                self._https.clear()
            self._https[key] = found
        return found

    def _client_ip(self, peer: str | None, forwarded: tuple[str, ...]) -> str | None:
        """`client_ip_of`, memoised (an address parse per hit costs more than the lookup)."""
        key = (peer, forwarded)
        try:
            return self._ips[key]
        except KeyError:
            pass
        ip = client_ip_of(peer, forwarded, self.trusted)
        if len(self._ips) >= _MEMO_MAX:
            self._ips.clear()
        self._ips[key] = ip
        return ip

    def _bits(self, vid: str) -> Callable[[int], int]:
        """Return deterministic random bits per visitor (keyed by the bit count)."""
        memo: dict[int, int] = {}

        def bits(k: int) -> int:
            value = memo.get(k)
            if value is None:
                mac = hmac.digest(self.key, f"{vid}:{k}".encode(), "sha256")
                value = memo[k] = int.from_bytes(mac, "big") >> (256 - k)
            return value

        return bits

    def _count_consent(self, site: str, decision: Decision) -> None:
        """Count a hit's tier and reasons, in total and per site."""
        stats = self.stats
        tier = decision.tier.value
        stats.by_tier[tier] = stats.by_tier.get(tier, 0) + 1
        key = (site, tier)
        stats.site_tiers[key] = stats.site_tiers.get(key, 0) + 1
        for reason in decision.reasons:
            stats.consent_reasons[reason] = stats.consent_reasons.get(reason, 0) + 1
            key = (site, reason)
            stats.site_reasons[key] = stats.site_reasons.get(key, 0) + 1

    def _reject(self, status: int, headers: list[tuple[str, str]], reason: str) -> Reply:
        self.stats.rejected += 1
        return _json(status, headers, {"error": "rejected", "message": reason})


def _json(status: int, headers: list[tuple[str, str]], doc: dict[str, Any]) -> Reply:
    """Return a JSON answer shaped like aiohttp's `json_response`."""
    return Reply(status, (*headers, ("Content-Type", _JSON)), json.dumps(doc).encode())


def _needs_profile(cookies: Mapping[str, str]) -> bool:
    """Return whether a known visitor's vendor cookies need the profile: one is malformed, or
    one it normally carries (`CARRIED_COOKIES`, from the platforms' cookie specs) is missing."""
    for name in CARRIED_COOKIES:
        if name not in cookies:
            return True
    for name, check in VENDOR_COOKIES.items():
        value = cookies.get(name)
        if value is not None and check(value) is None:
            return True
    return False


def deletions(
    cookies: Mapping[str, str], visitor_cookie: str, domain: str | None, secure: bool
) -> list[str]:
    """Return Set-Cookie lines deleting every tracking cookie the request carries (vendor
    click and browser ids, our visitor cookie) on the Domain and Path they were set with."""
    return [
        delete_cookie_header(name, domain, secure=secure)
        for name in (*TRACKING_COOKIES, visitor_cookie)
        if name in cookies
    ]


def _loader_event(event: Event, profile: VisitorProfile | None, decision: Decision) -> Event | None:
    """Return the event as stored: enriched, channel "loader", LDU marked, consent applied."""
    enriched = enrich(event, profile)
    if decision.ldu:
        return apply(decision, replace(enriched, channel="loader", ldu=True))
    return apply(decision, replace(enriched, channel="loader"))


def _policy(site: Site) -> ConsentPolicy:
    c = site.config.consent
    return ConsentPolicy(
        default=Tier(c.default),
        honor_gpc=c.gpc,
        tcf=c.tcf,
        tcf_vendor_ids=c.tcf_vendor_ids,
        cmp_cookie=c.cmp_cookie,
        cmp_mapping={k: Tier(v) for k, v in c.cmp_mapping.items()},
        ldu_regions=c.ldu_regions,
    )


def _region(raw: str | None) -> str | None:
    """Return the region a trusted upstream (CDN, nginx GeoIP) put in the configured header."""
    if raw is None:
        return None
    value = raw.strip().upper()
    return value if 0 < len(value) <= 8 and value.replace("-", "").isalnum() else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and len(value) <= 4096 else None


def _candidate(value: Any, now_ms: int) -> str | None:
    """Accept the loader's visitor id candidate: `<ms>-<16 hex>`, minted within a day."""
    if not isinstance(value, str):
        return None
    match = _VID_RE.match(value)
    if match is None or abs(int(match.group(1)) - now_ms) > _CANDIDATE_SKEW_MS:
        return None
    return value


def _minted_ms(vid: str, default: int) -> int:
    """Return the creation time embedded in a visitor id (ours are `<ms>-<hex>`)."""
    head = vid.split("-", 1)[0]
    return int(head) if head.isdigit() and len(head) == 13 else default


def _consent_of(raw: Any) -> Consent | None:
    if not isinstance(raw, dict):
        return None
    values: dict[str, bool | None] = {}
    for key in ("ad_storage", "analytics_storage", "ad_user_data", "ad_personalization"):
        v = raw.get(key)
        values[key] = True if v == "granted" else False if v == "denied" else None
    return Consent(**values)


def _encode_consent(c: Consent) -> str:
    return "".join(
        "u" if v is None else "g" if v else "d"
        for v in (c.ad_storage, c.analytics_storage, c.ad_user_data, c.ad_personalization)
    )


def _decode_consent(raw: str | None) -> Consent | None:
    if raw is None or len(raw) != 4 or any(ch not in _CONSENT_CODES for ch in raw):
        return None
    return Consent(*(_CONSENT_CODES[ch] for ch in raw))
