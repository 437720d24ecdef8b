"""The write of a collect hit (gateway/web/collect.py): its event and its visitor's profile.

The body is parsed and hashed through the shared pipeline; with full consent the profile is
merged and the event (enriched from the merged profile) appended in one store transaction,
otherwise the event is committed with consent applied. Control events (`sg:*`, e.g.
`sg:identify`) only touch the profile. The hit is answered once the write is committed.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Final

from gateway.core.consent import Decision, Tier, apply
from gateway.core.event import Event
from gateway.core.profile import VisitorProfile, enrich
from gateway.core.record import encode
from gateway.store.base import NewEvent
from gateway.web.collectvalues import CollectStats
from gateway.web.collectvisitor import VisitorPlan
from gateway.web.pipeline import Pipeline, Site
from gateway.web.tallying import count_appended, count_offered

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


class CollectWrite:
    """Prepares a collect hit's event and commits it with its visitor's profile."""

    def __init__(self, pipeline: Pipeline, stats: CollectStats) -> None:
        self.pipeline = pipeline
        self.stats = stats

    async def event(
        self,
        site: Site,
        body: dict[str, Any],
        plan: VisitorPlan | None,
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
        self, site: Site, plan: VisitorPlan, now: float, event: Event | None, decision: Decision
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


def _loader_event(event: Event, profile: VisitorProfile | None, decision: Decision) -> Event | None:
    """Return the event as stored: enriched, channel "loader", LDU marked, consent applied."""
    enriched = enrich(event, profile)
    if decision.ldu:
        return apply(decision, replace(enriched, channel="loader", ldu=True))
    return apply(decision, replace(enriched, channel="loader"))
