"""What one pixel hit tells: its events as canonical event objects, each with the consent
decision and the server fields of `POST /e` (gateway/web/hitmirror.py batches and commits them).

The hit is parsed by its platform's parser (`HitFormat.parse`, gateway/destinations/<name>/hits.py;
shared rules in `gateway.core.hits`). For each parsed event: `url` from the Referer when the hit
has none; consent decided like `POST /e` (gateway/web/browserconsent.py: Sec-GPC, the hit's own
consent — GA4 `gcs` — else the `_sgc` cookie, TCF and CMP cookies, region header); with full
consent the server fields of `POST /e` are added (ip, user_agent, `fbp`/`fbc` from the cookies
when the hit lacks them, click ids from cookies and URL, the visitor id from our signed cookie,
read only). The usual bodiless Meta hit takes a fast road (meta.hitwire) that builds the same
Event straight from the query, or declines and leaves it to the general road.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from gateway.core.clickids import capture, click_ids_from_cookies
from gateway.core.consent import Decision, Tier, is_explicit_denial
from gateway.core.event import PII_FIELDS, Consent, Event, User, derive_event_id
from gateway.core.eventbuild import _new_event, _new_user
from gateway.core.eventfast import (
    _WEBSITE,
    _click_ids_common,
    _ip_common,
    _matching,
    _text,
    _Unusual,
)
from gateway.core.eventschema import _FB_COOKIE_RE, MAX_ID, MAX_UA
from gateway.core.hits import Hit
from gateway.core.identity import PiiHasher
from gateway.core.pixeldigests import given_digests, scope_hit_digests
from gateway.destinations import CLICK_IDS, COOKIES
from gateway.destinations.meta.clickids import parse_fbc, parse_fbp
from gateway.destinations.meta.hitwire import MetaHit, check_url, meta_hit
from gateway.web.browserconsent import consent_of
from gateway.web.collect import Collect
from gateway.web.cookies import verify_visitor_id
from gateway.web.hitroutes import DIGEST_RULES, HIT_FORMATS, OWN_DESTINATIONS
from gateway.web.hitvalues import MEMO_MAX, MEMO_TEXT_MAX, Observed


class HitReader:
    """Reads one hit into its events' documents, with consent decision and server fields."""

    def __init__(self, collect: Collect) -> None:
        self.collect = collect
        self._captures: dict[tuple[str | None, str | None], dict[str, str]] = {}
        self.fast_hits = True
        """Take the fast road for the usual Meta hit (meta.hitwire); tests compare both roads."""

    def read(self, observed: Observed) -> list[HitDoc]:
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
        out: list[HitDoc] = []
        for hit in hits:
            doc = hit.event  # the parser's own fresh object: filled in place
            if referer is not None and "url" not in doc:
                doc["url"] = referer
            raw_consent = doc.get("consent")
            decision = self.decision(
                observed, consent_of(raw_consent) if raw_consent is not None else None
            )
            vid: str | None = None
            if decision.tier is Tier.FULL:
                doc["user"], vid = self._server_user(observed, doc)
            elif is_explicit_denial(decision):
                observed.deny = True
            out.append(HitDoc(observed, doc, decision, vid, own))
        return out

    def decision(self, observed: Observed, explicit: Consent | None) -> Decision:
        """The hit's consent decision (`explicit`: the hit's own consent, if any)."""
        return self.collect.consent.of_hit(
            observed.site, observed.cookies, observed.gpc, observed.region, explicit
        )

    def _fast_doc(self, observed: Observed) -> HitDoc | None:
        """`read` + `Pipeline.prepare` of a bodiless Meta hit in one go (meta.hitwire), giving
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
            decision = self.decision(observed, None)
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
        # channel and ldu as `HitMirror._events` sets them (`with_channel`) on the general road
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
        return HitDoc(observed, None, decision, vid, own, event)

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
            if len(url or "") + len(referrer or "") <= MEMO_TEXT_MAX:
                if len(self._captures) >= MEMO_MAX:
                    self._captures.clear()
                self._captures[key] = found
        return found


class HitDoc:
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


_PII: Final = tuple(PII_FIELDS.items())


def parse_hits(observed: Observed) -> list[Hit]:
    """Return the events of a hit by its platform's parser (may raise; the caller guards)."""
    parse = HIT_FORMATS[observed.vendor].parse
    return parse(observed.query, observed.body, observed.content_type, now=observed.now)


def _http_url(value: str | None) -> bool:
    return (
        value is not None
        and len(value) <= 4096
        and value.lower().startswith(("http://", "https://"))
        and value.isprintable()
    )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
