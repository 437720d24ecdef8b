"""The pixel hit mirror (gateway/web/hits.py forwards the hit; this turns it into events).

The mirror runs while the upstream request travels (on an idle kept-alive connection it is written
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
import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Final

from gateway.core.clickids import capture, click_ids_from_cookies
from gateway.core.consent import Decision, Tier, apply, is_explicit_denial
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
from gateway.web.browserconsent import consent_of
from gateway.web.collect import Collect
from gateway.web.cookies import verify_visitor_id
from gateway.web.hitroutes import DIGEST_RULES, HIT_FORMATS, OWN_DESTINATIONS
from gateway.web.hitvalues import MEMO_MAX, MEMO_TEXT_MAX, HitStats, Observed
from gateway.web.tallying import count_offered, hit_source

log = logging.getLogger("signalgate.hits")

LINGER_TURNS: Final = 8
"""Loop turns a mirror batch may wait for more hits under load (see `_mirror_turn`)."""


class HitMirror:
    """Mirrors admitted hits to the outbox, a loop turn's hits in one batch."""

    def __init__(self, collect: Collect, stats: HitStats) -> None:
        self.collect = collect
        self.stats = stats
        """The hit proxy's counters (shared with `HitProxy`)."""
        self._captures: dict[tuple[str | None, str | None], dict[str, str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._turn: list[tuple[Observed, Callable[[bool], None]]] = []
        """Mirrors queued in this loop turn (the next turn's batch commits them together)."""
        self.batches: set[asyncio.Future[None]] = set()
        """Mirror batches in progress (shutdown waits for them)."""
        self._last_batch = 0
        self.fast_hits = True
        """Take the fast road for the usual Meta hit (meta.hitwire); tests compare both roads."""

    def soon(self, observed: Observed) -> asyncio.Future[None]:
        """Queue the hit's mirror for this loop turn's batch; the future is done once it is
        committed (or failed, counted and logged: the pass-through never depends on it)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self.then(observed, partial(_settle, future))
        return future

    def then(self, observed: Observed, done: Callable[[bool], None]) -> None:
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
            self.batches.add(task)
            task.add_done_callback(self.batches.discard)

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
                observed, consent_of(raw_consent) if raw_consent is not None else None
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
        return self.collect.consent.of_hit(
            observed.site, observed.cookies, observed.gpc, observed.region, explicit
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
            if len(url or "") + len(referrer or "") <= MEMO_TEXT_MAX:
                if len(self._captures) >= MEMO_MAX:
                    self._captures.clear()
                self._captures[key] = found
        return found


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


def _http_url(value: str | None) -> bool:
    return (
        value is not None
        and len(value) <= 4096
        and value.lower().startswith(("http://", "https://"))
        and value.isprintable()
    )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
