"""The pixel hit mirror (gateway/web/hits.py forwards the hit; this turns it into events).

The mirror runs while the upstream request travels (on an idle kept-alive connection it is written
at the end of the loop turn, with the turn's other hits, before the mirror batch's first step),
always committed before the answer: the mirrors of the hits that arrive in one loop turn are one
batch (under load the batch waits a few more turns while hits keep coming, at most
`LINGER_TURNS`), parsed together and committed with one `Pipeline.commit` per site and
destination set (each event alone if that fails); each hit's answer waits for its batch's
durable commit. A lane hit needs no task: the batch and the upstream answer call it back. Each
hit is read into its events' documents by gateway/web/hitreader.py (its platform's parser, the
consent decision and the server fields of `POST /e`; any exception is logged at WARNING without
the hit's content and counted; the pass-through never depends on it). For each event: with full
consent that visitor's stored profile, read once per batch; then `Pipeline.prepare` → channel
"pixel" → consent `apply` → `Pipeline.commit` to every destination of the site that the event's
tier may reach (core.consent `forwards`; the others count it `consent_denied`). The event keeps
the hit's event id (GA4 purchase: the transaction id), so the vendor deduplicates it against the
pixel's own copy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Final

from gateway.core.consent import Tier, apply, is_explicit_denial
from gateway.core.event import Event
from gateway.core.eventbuild import with_channel, with_hashed
from gateway.core.pixeldigests import given_digests, scope_hit_digests
from gateway.core.profile import VisitorProfile, enrich
from gateway.store.availability import StoreUnavailableError
from gateway.store.base import ProfileQuery
from gateway.web.collect import Collect
from gateway.web.hitreader import HitDoc, HitReader
from gateway.web.hitroutes import HIT_FORMATS
from gateway.web.hitvalues import HitStats, Observed
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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._turn: list[tuple[Observed, Callable[[bool], None]]] = []
        """Mirrors queued in this loop turn (the next turn's batch commits them together)."""
        self.batches: set[asyncio.Future[None]] = set()
        """Mirror batches in progress (shutdown waits for them)."""
        self._last_batch = 0
        self.reader = HitReader(collect)
        """Reads each hit into its events' documents (gateway/web/hitreader.py)."""

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
        docs: list[HitDoc] = []
        for observed in batch:
            try:
                found = self.reader.read(observed)
            except Exception as exc:
                self._mirror_failed(observed.vendor, exc)
                continue
            if not found:
                self.stats.not_events += 1
                if observed.cookies and is_explicit_denial(self.reader.decision(observed, None)):
                    observed.deny = True
            docs.extend(found)
        if not docs:
            return
        profiles = await self._profiles(docs)
        groups: dict[tuple[str, frozenset[str] | None, Tier], list[HitDoc]] = {}
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

    async def _profiles(self, docs: Sequence[HitDoc]) -> dict[tuple[str, str], VisitorProfile]:
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
        self, docs: Sequence[HitDoc], profiles: Mapping[tuple[str, str], VisitorProfile]
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


def _settle(future: asyncio.Future[None], cancelled: bool) -> None:
    if not future.done():
        if cancelled:
            future.cancel()
        else:
            future.set_result(None)


def _own_digests(event: Event, rules: str, user: object) -> Event:
    """The event without digests the vendor's pixel made (in the form of rule set `rules`) in
    a form other rule sets do not use (a TikTok '+' phone digest is not Meta's phone digest:
    core.pixeldigests)."""
    given = given_digests(user)
    if not given:
        return event
    scoped = scope_hit_digests(event.user.hashed, rules, given)
    return event if scoped is None else with_hashed(event, scoped)
