"""What the destinations will refuse, said at 202 time: a warning per accepted event.

Each destination's `validate` is what the delivery worker runs before sending; an event it
would refuse ends as an `invalid_field` dead letter. The same check runs here on the accepted
events, so the caller learns it in the 202's `warnings` (with a field path) instead of only in
`/v1/debug/dead` later. The event is still accepted: a browser copy with the same event_id
may merge the missing fields in before delivery (`delivery.merge_seconds`).

Most events carry a user agent and a strong identifier, which every check passes; those skip
the destinations' checks (the usual request pays one look at a few fields per event) — except
the destinations in `ALWAYS_CHECKED`, which refuse on more than that and are always asked:
Snap (event names without a Snap event, no e-mail/phone and not both IP and user agent),
Pinterest (app events, no e-mail and not both IP and user agent), Reddit (custom names over 64
characters, no identifier it takes), LinkedIn (events without a conversion rule, no e-mail or
li_fat_id, test events), Microsoft (test events, no identifier it takes), X (events without
an X event id, test events, no twclid, e-mail or phone) and GA4 (no `_ga` client id, names and
parameters outside GA4's rules).

For stored events (`stored`), a destination whose cheap proof (web/baseline_proofs.py) shows
from the record's few fields that its check passes is not asked, and a record no destination
needs to be asked about is not decoded: the same warnings, for a fraction of the work.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final

from gateway.core.event import VALUE_EVENTS, Event, Source
from gateway.core.fielderrors import FieldError
from gateway.core.record import Stored, decode, encode_stored
from gateway.core.routing import NO_RULES, RouteRules, renamed
from gateway.destinations import DESTINATIONS
from gateway.destinations.base import Destination
from gateway.web.baseline_proofs import REFUSED, Holds, Proof, proof_for
from gateway.web.pipeline import Site

_STRONG_KEYS: Final = ("em", "ph", "external_id")
"""Hashed identifiers that alone meet any platform's matching baseline."""
ALWAYS_CHECKED: Final = frozenset(
    {"snap", "pinterest", "reddit", "linkedin", "microsoft", "x", "ga4"}
)
"""Destinations whose refusals `_surely_fine` does not cover: their check runs on every event."""
_CLICK_ID_PATH_RE: Final = re.compile(r"\.user\.click_ids\.[a-z_]+")

_Routed = tuple[Destination, RouteRules]
"""A site's destination with its routing keys (an event it does not take is not checked, and a
destination with `event_names` is always checked: a rename can make a name need a value)."""
_Plan = list[tuple[_Routed, Holds | None, int]]
"""The destinations an event name is held to, each with its proof's `holds` (None: always ask
it) and the proof's verdict on the name."""
_PLANS_MAX: Final = 4096
"""Plans remembered per site (custom names are unbounded; cleared when full)."""


class Baseline:
    """Per site, the destinations whose checks accepted events are held to."""

    def __init__(self, sites: Sequence[Site], *, proofs: bool = True) -> None:
        """`proofs` False: every stored event a destination is asked about is decoded and
        checked by it (the road the proofs are tested against)."""
        self._destinations: dict[str, list[_Routed]] = {
            site.config.id: [
                (DESTINATIONS[name].factory(settings), site.config.routing.get(name, NO_RULES))
                for name, settings in site.config.destinations.items()
            ]
            for site in sites
        }
        self._proven: dict[str, list[tuple[_Routed, Proof | None]]] = {
            site: [(routed, proof_for(routed[0]) if proofs else None) for routed in routes]
            for site, routes in self._destinations.items()
        }
        """Per site, each destination with its proof (`stored`)."""
        self._plans: dict[str, dict[tuple[str, bool], _Plan]] = {
            site: {} for site in self._destinations
        }
        """Per site, (event name, surely fine) → `_plan` (memoised, bounded)."""

    def events(
        self, site: Site, events: Sequence[Event], indexes: Iterable[int], prefix: str
    ) -> list[FieldError]:
        """Warnings for accepted events; `indexes` are their positions in the request."""
        destinations = self._destinations.get(site.config.id)
        if not destinations:
            return []
        out: list[FieldError] = []
        always = [d for d in destinations if d[0].name in ALWAYS_CHECKED or d[1].event_names]
        for event, index in zip(events, indexes, strict=False):
            if _surely_fine(event):
                if always:
                    out.extend(_check(event, f"{prefix}[{index}]", always))
                continue
            out.extend(_check(event, f"{prefix}[{index}]", destinations))
        return out

    def stored(self, site: Site, stored: Sequence[Stored], prefix: str) -> list[FieldError]:
        """`events` for events in their stored form (all of a request's, in order)."""
        site_id = site.config.id
        proven = self._proven.get(site_id)
        if not proven:
            return []
        plans = self._plans[site_id]
        out: list[FieldError] = []
        for index, record in enumerate(stored):
            fine = _stored_surely_fine(record)
            plan = plans.get((record.e, fine))
            if plan is None:
                if len(plans) >= _PLANS_MAX:
                    plans.clear()
                plan = plans[(record.e, fine)] = _plan(proven, record.e, fine)
            asked = [
                routed
                for routed, holds, verdict in plan
                if holds is None or not holds(record, verdict)
            ]
            if asked:  # not proven fine for every destination: decode it and ask them
                event = decode(encode_stored(record))
                out.extend(_check(event, f"{prefix}[{index}]", asked))
        return out


def _plan(proven: Sequence[tuple[_Routed, Proof | None]], name: str, fine: bool) -> _Plan:
    """Which destinations to hold events named `name` to: all that take the name, or if the
    event is surely fine (`_stored_surely_fine`) only those it does not cover; each with its
    proof's `holds` and its verdict on the name the destination sees (None: always ask)."""
    out: _Plan = []
    for routed, proof in proven:
        destination, rules = routed
        if fine and not (destination.name in ALWAYS_CHECKED or rules.event_names):
            continue
        if not rules.takes(name):
            continue
        verdict = REFUSED if proof is None else proof.settle(rules.rename(name))
        out.append((routed, None if proof is None or verdict == REFUSED else proof.holds, verdict))
    return out


def _check(event: Event, path: str, destinations: Sequence[_Routed]) -> list[FieldError]:
    """Ask the destinations that take the event, under the name each maps it as."""
    out: list[FieldError] = []
    for destination, rules in destinations:
        if not rules.takes(event.event):
            continue
        seen = renamed(event, rules.event_names)
        problem = destination.validate(seen)
        if problem is not None:
            reason = (
                f"{destination.name} would refuse this event ({problem}); it is accepted but will"
                " be dead-lettered as invalid_field unless a browser copy of it supplies that"
            )
            out.append(FieldError(path + _where(seen, problem), reason))
    return out


def _where(event: Event, problem: str) -> str:
    """The field a refusal is about: event (a problem that starts with "event name"), the
    click id a problem names (`user.click_ids.<key>`), url, user.user_agent, data (value) or user
    (identifiers)."""
    if problem.startswith("event name"):
        return ".event"
    named = _CLICK_ID_PATH_RE.search(problem)
    if named is not None:
        return named.group(0)
    if event.source is Source.WEBSITE and not event.url:
        return ".url"
    if event.source is Source.WEBSITE and not event.user.user_agent:
        return ".user.user_agent"
    if event.event in VALUE_EVENTS and (event.data.value is None or not event.data.currency):
        return ".data"
    return ".user"


def _surely_fine(event: Event) -> bool:
    """Whether every destination's check passes without asking them (see module doc)."""
    user = event.user
    if event.source is Source.WEBSITE and not (event.url and user.user_agent):
        return False
    if event.event in VALUE_EVENTS and (event.data.value is None or not event.data.currency):
        return False
    if user.ip or user.fbc or user.fbp or "fbclid" in user.click_ids:
        return True
    return any(key in ids for ids in user.hashed.values() for key in _STRONG_KEYS)


def _stored_surely_fine(record: Stored) -> bool:
    """`_surely_fine` on the stored form."""
    user = record.u
    if record.s == Source.WEBSITE.value and not (record.url and user.ua):
        return False
    if record.e in VALUE_EVENTS and (record.d.value is None or not record.d.currency):
        return False
    if user.ip or user.fbc or user.fbp or (user.cid is not None and "fbclid" in user.cid):
        return True
    return user.h is not None and any(key in ids for ids in user.h.values() for key in _STRONG_KEYS)
