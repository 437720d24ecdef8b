"""POST /e: browser events from the loader, with cookies, visitor profile and consent.

One hit: resolve the site by Host → check Origin (CORS) → read the body (JSON, also text/plain
from beacons) → decide consent (Sec-GPC, the loader's consent state, CMP cookie, TCF) → resolve
the visitor (signed cookie, else the loader's candidate id, else new) → plan and (re)issue vendor
cookies (click ids from URL and referrer, lost cookies restored from the profile) → merge the
profile → parse, hash and append the event through the shared pipeline → 204.

Browser-supplied ip/user_agent/fbc/fbp/click ids are ignored: the gateway takes them from the
connection, the headers and the cookies it manages.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from aiohttp import web

from gateway.core.clickids import (
    VENDOR_COOKIES,
    capture,
    click_ids_from_cookies,
    format_fbp,
    plan_cookies,
)
from gateway.core.consent import ConsentPolicy, Decision, Signals, Tier, apply, decide
from gateway.core.event import Consent
from gateway.core.profile import ProfileUpdate, VisitorProfile, enrich
from gateway.store.base import ProfileQuery
from gateway.web.cookies import (
    delete_cookie_header,
    parse_cookie_header,
    registrable_domain,
    set_cookie_header,
    sign_visitor_id,
    subdomain_index,
    verify_visitor_id,
)
from gateway.web.middleware import BodyError, Network, client_ip, read_body
from gateway.web.pipeline import Pipeline, Site

log = logging.getLogger("signalgate.collect")

MAX_BODY: Final = 65_536
"""keepalive fetches and beacons are capped at 64 KiB by browsers anyway."""
CONSENT_COOKIE: Final = "_sgc"
"""Strictly necessary: remembers the visitor's explicit consent choice (no identifier)."""
TC_COOKIE: Final = "euconsent-v2"
CLICK_COOKIES: Final = frozenset({"_fbc", "_gcl_aw", "ttclid", "_scclid", "_uetmsclkid"})
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


@dataclass
class CollectStats:
    """Counters of the collect endpoint (aggregates only, never identifiers)."""

    hits: int = 0
    accepted: int = 0
    rejected: int = 0
    control: int = 0
    by_tier: dict[str, int] = field(default_factory=dict)
    consent_reasons: dict[str, int] = field(default_factory=dict)


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
                {*VENDOR_COOKIES, s.config.visitor_cookie, CONSENT_COOKIE, TC_COOKIE}
                | ({s.config.consent.cmp_cookie} if s.config.consent.cmp_cookie else set())
            )
            for s in sites
        }
        """Cookie names each site reads, computed once instead of on every hit."""

    def site_for(self, request: web.Request) -> Site | None:
        """Return the site served on the request's Host (the only site, if just one)."""
        host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
        return self.by_host.get(host.lower().rstrip("."), self.fallback)

    def _cors(self, request: web.Request, site: Site) -> dict[str, str] | None:
        origin = request.headers.get("Origin")
        if origin is None:
            return {}
        # Same origin (the path deployment behind the shop's own nginx) is always allowed.
        same = origin.split("://", 1)[-1].lower() == request.host.lower()
        if origin not in site.config.allowed_origins and not same:
            return None
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }

    async def preflight(self, request: web.Request) -> web.Response:
        """Answer a CORS preflight for allowed origins only."""
        site = self.site_for(request)
        cors = self._cors(request, site) if site else None
        if not cors:
            return web.Response(status=403)
        cors["Access-Control-Allow-Methods"] = "POST"
        cors["Access-Control-Allow-Headers"] = "Content-Type"
        cors["Access-Control-Max-Age"] = "86400"
        return web.Response(status=204, headers=cors)

    async def post(self, request: web.Request) -> web.Response:
        """Take one browser event; answer 204 (or 4xx for bad input), never 500."""
        self.stats.hits += 1
        site = self.site_for(request)
        if site is None:
            return _reject(self.stats, 404, {}, "unknown site host")
        cors = self._cors(request, site)
        if cors is None:
            return _reject(self.stats, 403, {}, "origin not allowed")
        try:
            body = json.loads(await read_body(request, MAX_BODY))
        except BodyError as exc:
            return _reject(self.stats, exc.status, cors, exc.reason)
        except (ValueError, RecursionError):
            return _reject(self.stats, 400, cors, "body is not valid JSON")
        if not isinstance(body, dict):
            return _reject(self.stats, 400, cors, "expected a JSON object")
        return await self._hit(request, site, body, cors)

    async def _hit(
        self, request: web.Request, site: Site, body: dict[str, Any], cors: dict[str, str]
    ) -> web.Response:
        now = self.clock()
        cfg = site.config
        policy = self.policies[cfg.id]
        cookies = parse_cookie_header(request.headers.get("Cookie"), self.wanted[cfg.id])
        explicit = _consent_of(body.get("consent")) or _decode_consent(cookies.get(CONSENT_COOKIE))
        decision = decide(
            policy,
            Signals(
                gpc=request.headers.get("Sec-GPC", "").strip() == "1",
                consent=explicit,
                tc_string=cookies.get(TC_COOKIE),
                cmp_cookie_value=cookies.get(cfg.consent.cmp_cookie)
                if cfg.consent.cmp_cookie
                else None,
                region=_region(request, cfg.consent.region_header),
            ),
        )
        self.stats.by_tier[decision.tier.value] = self.stats.by_tier.get(decision.tier.value, 0) + 1
        for reason in decision.reasons:
            self.stats.consent_reasons[reason] = self.stats.consent_reasons.get(reason, 0) + 1
        domain = cfg.cookie_domain or registrable_domain(request.host)
        secure = request.secure or request.headers.get("X-Forwarded-Proto") == "https"
        headers = dict(cors)
        set_cookies: list[str] = []
        if body.get("consent") is not None and explicit is not None:
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
        user: dict[str, Any] = {}
        profile: VisitorProfile | None = None
        if decision.tier is Tier.FULL:
            user, profile = await self._identify(
                request, site, body, cookies, domain, secure, set_cookies, now
            )
        elif decision.tier is Tier.NONE and explicit is not None:
            set_cookies.extend(
                delete_cookie_header(name, domain, secure=secure)
                for name in (*CLICK_COOKIES, cfg.visitor_cookie)
                if name in cookies
            )
        response = await self._event(site, body, user, profile, decision, now, headers)
        for line in set_cookies:
            response.headers.add("Set-Cookie", line)
        return response

    async def _identify(
        self,
        request: web.Request,
        site: Site,
        body: dict[str, Any],
        cookies: Mapping[str, str],
        domain: str | None,
        secure: bool,
        set_cookies: list[str],
        now: float,
    ) -> tuple[dict[str, Any], VisitorProfile]:
        """Resolve the visitor, plan its cookies, merge its profile; return user fields, profile."""
        cfg = site.config
        now_ms = int(now * 1000)
        signed = cookies.get(cfg.visitor_cookie)
        known = verify_visitor_id(signed, self.key) if signed else None
        returning = known is not None
        vid = known or _candidate(body.get("vid"), now_ms) or f"{now_ms}-{self.new_token()}"
        profile_values: Mapping[str, str] = {}
        if returning and any(name not in cookies for name in ("_fbp", "_fbc")):
            (profile,) = await self.pipeline.store.find_profiles(cfg.id, [ProfileQuery(vid)])
            profile_values = profile.browser_ids if profile is not None else {}
        url, referrer = _text(body.get("url")), _text(body.get("referrer"))
        click_ids = capture(url, referrer)
        index = subdomain_index(domain)
        plan = plan_cookies(
            click_ids=click_ids,
            existing=cookies,
            profile_values=profile_values,
            now_ms=now_ms,
            random_bits=self._bits(vid),
            subdomain_index=index,
        )
        if "_fbp" in plan and plan["_fbp"] not in (cookies.get("_fbp"), profile_values.get("_fbp")):
            # A new _fbp is derived from the visitor id alone, so near-simultaneous first hits
            # of one visitor (same candidate id) can never mint two different values.
            plan["_fbp"] = format_fbp(_minted_ms(vid, now_ms), self._bits(vid)(31), index)
        click_age = int(cfg.click_cookie_days * 86400)
        id_age = int(cfg.id_cookie_days * 86400)
        for name, value in plan.items():
            age = click_age if name in CLICK_COOKIES else id_age
            set_cookies.append(
                set_cookie_header(
                    name, value, domain=domain, max_age=age, secure=secure, http_only=False
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
        ip = client_ip(request, self.trusted)
        ua = request.headers.get("User-Agent", "")[:1024] or None
        all_clicks = {**click_ids_from_cookies(plan), **click_ids}
        profile = await self.pipeline.store.touch_profile(
            cfg.id,
            vid,
            ProfileUpdate(
                click_ids=all_clicks,
                browser_ids=plan,
                ip=ip,
                user_agent=ua,
                consent=Tier.FULL.value,
            ),
            now,
        )
        user: dict[str, Any] = {"visitor_id": vid, "click_ids": all_clicks}
        server_fields: tuple[tuple[str, str | None], ...] = (
            ("ip", ip),
            ("user_agent", ua),
            ("fbc", plan.get("_fbc")),
            ("fbp", plan.get("_fbp")),
        )
        for key, found in server_fields:
            if found:
                user[key] = found
        return user, profile

    async def _event(
        self,
        site: Site,
        body: dict[str, Any],
        server_user: dict[str, Any],
        profile: VisitorProfile | None,
        decision: Decision,
        now: float,
        headers: dict[str, str],
    ) -> web.Response:
        name = body.get("event")
        identify = body.get("user")
        user: dict[str, Any] = {}
        if isinstance(identify, dict):
            user = {k: v for k, v in identify.items() if k in _IDENTIFY_KEYS}
        user.update(server_user)
        doc: dict[str, Any] = {k: body[k] for k in _ALLOWED_KEYS if k in body}
        doc["user"] = user
        if isinstance(name, str) and name.startswith("sg:"):
            self.stats.control += 1
            if name == "sg:identify" and decision.tier is Tier.FULL and server_user:
                doc["event"] = "Identify"
                prepared = self.pipeline.prepare(site, doc, now=now)
                if prepared.event is not None and prepared.event.user.hashed:
                    await self.pipeline.store.touch_profile(
                        site.config.id,
                        server_user["visitor_id"],
                        ProfileUpdate(hashed=prepared.event.user.hashed),
                        now,
                    )
            return web.Response(status=204, headers=headers)
        prepared = self.pipeline.prepare(site, doc, now=now)
        if prepared.event is None:
            self.stats.rejected += 1
            errors = [e.as_dict() for e in prepared.errors]
            return web.json_response(
                {"error": "bad_request", "errors": errors}, status=400, headers=headers
            )
        # Identifiers the visitor gave earlier (sg('identify') on the checkout page) live in the
        # profile, not in the page: add them to this event.
        event = apply(decision, replace(enrich(prepared.event, profile), channel="loader"))
        if event is not None:
            if decision.ldu:
                event = replace(event, ldu=True)
            await self.pipeline.commit(site, [event])
            self.stats.accepted += 1
        return web.Response(status=204, headers=headers)

    def _bits(self, vid: str) -> Callable[[int], int]:
        """Return deterministic random bits per visitor (keyed by the bit count)."""

        def bits(k: int) -> int:
            mac = hmac.new(self.key, f"{vid}:{k}".encode(), hashlib.sha256).digest()
            return int.from_bytes(mac, "big") >> (256 - k)

        return bits


def _reject(stats: CollectStats, status: int, headers: dict[str, str], reason: str) -> web.Response:
    stats.rejected += 1
    return web.json_response(
        {"error": "rejected", "message": reason}, status=status, headers=headers
    )


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


def _region(request: web.Request, header: str | None) -> str | None:
    """Return the region a trusted upstream (CDN, nginx GeoIP) put in the configured header."""
    if header is None:
        return None
    value = request.headers.get(header, "").strip().upper()
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
