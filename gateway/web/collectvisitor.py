"""Who a collect hit's visitor is, and the cookies that say so (gateway/web/collect.py).

With full consent the visitor is resolved (signed cookie, else the loader's candidate id, else
new) and its vendor cookies planned and (re)issued: click ids from URL and referrer, lost or
malformed cookies of a known visitor restored from the profile, a new `_fbp` derived from the
visitor id alone. The result is the profile update and the server's user fields of the event.
An explicit denial deletes every tracking cookie instead (`deletions`, also used by the hit
proxy).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.core.clickids import CookieKind, capture, click_ids_from_cookies, plan_cookies
from gateway.core.consent import Tier
from gateway.core.profile import ProfileUpdate
from gateway.destinations import (
    CARRIED_COOKIES,
    CLICK_IDS,
    COOKIES,
    TRACKING_COOKIES,
    VENDOR_COOKIES,
)
from gateway.destinations.meta.clickids import format_fbp
from gateway.store.base import ProfileQuery
from gateway.web.collectvalues import CollectRequest
from gateway.web.cookies import (
    delete_cookie_header,
    set_cookie_header,
    sign_visitor_id,
    subdomain_index,
    verify_visitor_id,
)
from gateway.web.forwarded import TrustedProxies
from gateway.web.pipeline import Pipeline, Site

CLICK_COOKIES: Final = frozenset(c.name for c in COOKIES if c.kind is not CookieKind.VISITOR)
_VID_RE: Final = re.compile(r"^(\d{13})-([0-9a-f]{16})$")
_CANDIDATE_SKEW_MS: Final = 86_400_000


@dataclass(frozen=True, slots=True)
class VisitorPlan:
    """What a hit with full consent tells about its visitor (computed before the write)."""

    visitor_id: str
    update: ProfileUpdate
    user: dict[str, Any]


class VisitorCookies:
    """Resolves a collect hit's visitor and plans the cookies that identify it."""

    def __init__(
        self,
        pipeline: Pipeline,
        proxies: TrustedProxies,
        *,
        cookie_key: bytes,
        new_token: Callable[[], str],
    ) -> None:
        self.pipeline = pipeline
        self.proxies = proxies
        self.key = cookie_key
        self.new_token = new_token

    async def identify(
        self,
        hit: CollectRequest,
        site: Site,
        body: dict[str, Any],
        cookies: Mapping[str, str],
        domain: str | None,
        secure: bool,
        set_cookies: list[str],
        now: float,
    ) -> VisitorPlan:
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
        ip = self.proxies.client_ip(hit.peer, hit.forwarded)
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
        return VisitorPlan(vid, update, user)

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
