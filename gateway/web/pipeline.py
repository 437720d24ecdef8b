"""The shared request-path pipeline: parse → hash identifiers → durable append.

Used by every ingest endpoint (the server API now; the collect endpoint and the pixel proxy
later), so each accepted event takes exactly the same road to the outbox.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.config import SiteConfig
from gateway.core.consent import Tier, forwards
from gateway.core.crossdevice import enrich_across
from gateway.core.event import Event
from gateway.core.eventparse import parse_event
from gateway.core.eventschema import ParseLimits
from gateway.core.fielderrors import FieldError
from gateway.core.identity import PiiHasher
from gateway.core.orders import OrderEntry, entry
from gateway.core.profile import ProfileUpdate, lookup_keys
from gateway.core.record import Stored, encode, encode_stored
from gateway.core.routing import NO_RULES, RouteTable, with_default_sources
from gateway.core.tally import IngestTally
from gateway.core.wire import WireEvent, events_from, records_from
from gateway.destinations import CLICK_WINDOWS, DESTINATIONS
from gateway.store.base import AppendResult, GatewayStore, NewEvent, ProfileQuery
from gateway.web.debugview import ReceivedLog
from gateway.web.ledger import Facts, batch_entries, event_facts, stored_facts
from gateway.web.tallying import count_appended, count_appends

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Site:
    """A configured site with what the request path needs precomputed."""

    config: SiteConfig
    routes: tuple[str, ...]
    rulesets: tuple[str, ...]
    limits: ParseLimits
    table: RouteTable
    """Which routes take which event names (the destinations' `events` / `exclude_events`)."""
    order_events: frozenset[str] = frozenset()
    """Backend event names the order ledger records (web/ledger.py)."""

    @classmethod
    def from_config(cls, config: SiteConfig) -> Site:
        """Build the runtime view of a site."""
        rulesets = sorted({DESTINATIONS[name].hash_rules for name in config.destinations})
        days = config.max_event_age_days
        return cls(
            config=config,
            routes=tuple(route_name(config.id, name) for name in config.destinations),
            rulesets=tuple(rulesets),
            limits=ParseLimits(
                max_age_seconds=days * 86400, max_age_offline_seconds=max(days, 62.0) * 86400
            ),
            table=RouteTable(
                {
                    route_name(config.id, name): with_default_sources(
                        config.routing.get(name, NO_RULES), DESTINATIONS[name].sources
                    )
                    for name in config.destinations
                }
            ),
            order_events=frozenset(config.order_events),
        )


def route_name(site_id: str, destination: str) -> str:
    """Return the outbox route of a site's destination."""
    return f"{site_id}:{destination}"


@dataclass(frozen=True, slots=True)
class Prepared:
    """An event ready to append, or the reasons it was refused, plus dropped-field warnings."""

    event: Event | None
    errors: list[FieldError]
    warnings: list[FieldError]


class Pipeline:
    """Parses, hashes and appends events for any ingest endpoint."""

    def __init__(
        self,
        store: GatewayStore,
        *,
        clock: Callable[[], float],
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.store = store
        self.clock = clock
        self.new_id = new_id
        self.consent_denied: dict[str, int] = {}
        """Route → events consent kept from it (shown by /v1/debug/recent)."""
        self.routed_away: dict[str, int] = {}
        """Route → events consent let through but its `events` / `exclude_events` turned away
        (shown by /v1/debug/recent)."""
        self.tally = IngestTally()
        """Ingest counters by site, source, route and event label (/metrics)."""
        self.debug: ReceivedLog | None = None
        """The debug view's rings of the last events received (None: no site keeps any)."""

    def prepare(
        self, site: Site, obj: Any, *, path: str = "", now: float | None = None
    ) -> Prepared:
        """Parse one event object and hash its PII; raw PII never leaves this call."""
        now = self.clock() if now is None else now
        hasher = PiiHasher(site.rulesets, default_country=site.config.default_country, path=path)
        parsed = parse_event(
            obj, now=now, new_id=self.new_id, path=path, limits=site.limits, hasher=hasher
        )
        if isinstance(parsed, list):
            return Prepared(None, parsed, [])
        return Prepared(parsed, [], hasher.warnings)

    def prepare_all(
        self, site: Site, items: Sequence[Any], *, prefix: str, now: float
    ) -> tuple[list[Event], list[tuple[int, list[FieldError]]], list[FieldError]]:
        """`prepare` for every item of a batch (paths ``<prefix>[i]``), with one hasher.

        Returns the accepted events, the (index, errors) of the refused items and the
        warnings of the accepted ones.
        """
        hasher = PiiHasher(site.rulesets, default_country=site.config.default_country)
        accepted: list[Event] = []
        refused: list[tuple[int, list[FieldError]]] = []
        limits, new_id = site.limits, self.new_id
        for index, obj in enumerate(items):
            path = hasher.path = f"{prefix}[{index}]"
            seen = len(hasher.warnings)
            parsed = parse_event(
                obj, now=now, new_id=new_id, path=path, limits=limits, hasher=hasher
            )
            if isinstance(parsed, list):
                refused.append((index, parsed))
                del hasher.warnings[seen:]  # an event refused anyway has no warnings
            else:
                accepted.append(parsed)
        return accepted, refused, hasher.warnings

    def prepare_wire(
        self,
        site: Site,
        items: Sequence[WireEvent],
        *,
        prefix: str,
        now: float,
        clean: bool = False,
    ) -> tuple[list[Event], list[FieldError]] | None:
        """`prepare_all` for typed items (core.wire): the events and warnings, or None.

        None means some item is unusual: the caller runs `prepare_all` on the decoded JSON,
        which accepts the same events and explains every refusal.
        """
        return self._typed(events_from, site, items, prefix, now, clean)

    def prepare_stored(
        self,
        site: Site,
        items: Sequence[WireEvent],
        *,
        prefix: str,
        now: float,
        clean: bool = False,
    ) -> tuple[list[Stored], list[FieldError]] | None:
        """`prepare_wire` straight to the stored forms, for events with nothing to enrich
        (`needs_enrich` is False): the same checks and hashing, no Event built."""
        return self._typed(records_from, site, items, prefix, now, clean)

    def _typed(
        self,
        convert: Callable[..., list[T] | None],
        site: Site,
        items: Sequence[WireEvent],
        prefix: str,
        now: float,
        clean: bool,
    ) -> tuple[list[T], list[FieldError]] | None:
        hasher = PiiHasher(site.rulesets, default_country=site.config.default_country)
        out = convert(
            items,
            now=now,
            new_id=self.new_id,
            limits=site.limits,
            hasher=hasher,
            prefix=prefix,
            clean=clean,
        )
        if out is None:
            return None
        return out, hasher.warnings

    async def needs_enrich(self, site: Site) -> bool:
        """Whether `enrich` can change the site's events (it has visitor profiles)."""
        return await self.store.has_profiles(site.config.id)

    async def enrich(self, site: Site, events: Sequence[Event]) -> list[Event]:
        """Fill events from stored visitor profiles, across devices (core.crossdevice).

        An event is matched to the visitor it names and to every visitor its hashed e-mail,
        phone or external id (or the named visitor's) was seen with; all of them are read in
        one look-up per batch. An event that names its visitor and brings hashed identifiers
        also teaches them to the profile, so later events found only by e-mail reach the same
        click ids.
        """
        if not await self.store.has_profiles(site.config.id):
            return list(events)
        queries = [
            ProfileQuery(e.user.visitor_id, tuple(lookup_keys(e.user.hashed))) for e in events
        ]
        wanted = [i for i, q in enumerate(queries) if q.visitor_id or q.keys]
        if not wanted:
            return list(events)
        found = await self.store.find_identities(site.config.id, [queries[i] for i in wanted])
        out = list(events)
        now = self.clock()
        for i, identity in zip(wanted, found, strict=True):
            out[i] = enrich_across(events[i], identity.named, identity.linked, now, CLICK_WINDOWS)
            vid = events[i].user.visitor_id
            if identity.named is not None and events[i].user.hashed and vid is not None:
                await self.store.touch_profile(
                    site.config.id, vid, ProfileUpdate(hashed=events[i].user.hashed), now
                )
        return out

    async def commit_stored(self, site: Site, stored: Sequence[Stored]) -> list[AppendResult]:
        """`commit` for events in their stored form (`prepare_stored`), each to the site's routes
        that take its name."""
        routes = site.routes
        if not stored or not routes:
            return []
        site_id = site.config.id
        facts = stored_facts(site.order_events, stored)
        if site.table.filters:
            return await self._routed(
                site,
                routes,
                [(s.e, s.id, float(s.t), encode_stored(s), "api") for s in stored],
                facts,
            )
        batch = [NewEvent(site_id, s.e, s.id, float(s.t), encode_stored(s), routes) for s in stored]
        results = await self._append(site, batch, facts)
        if self.debug is not None:  # the debug view's ring (gateway/web/debugview.py)
            self.debug.received(batch, results)
        count_appends(self.tally, routes, batch, results)
        return results

    async def _append(
        self, site: Site, batch: list[NewEvent], facts: Facts | None
    ) -> list[AppendResult]:
        """Append the batch, with the ledger rows of its orders when it holds any."""
        if facts is None:
            return await self.store.append(batch, self.clock())
        orders = batch_entries(site.config.id, site.routes, batch, facts)
        return await self.store.append_orders(batch, orders, self.clock())

    def routes_for(
        self, site: Site, tier: Tier, count: int, *, only: frozenset[str] | None = None
    ) -> tuple[str, ...]:
        """Return the site's routes (or those of the destinations in `only`) that `count` events
        of this consent tier may reach; the others count them as `consent_denied`."""
        routes = site.routes
        if only is not None:
            routes = tuple(r for r in routes if r.split(":", 1)[1] in only)
        if tier is Tier.FULL:
            return routes
        kept = tuple(r for r in routes if forwards(tier, r.split(":", 1)[1]))
        if count and len(kept) < len(routes):
            denied = self.consent_denied
            for route in routes:
                if route not in kept:
                    denied[route] = denied.get(route, 0) + count
        return kept

    async def commit(
        self,
        site: Site,
        events: Sequence[Event],
        *,
        only: frozenset[str] | None = None,
        tier: Tier = Tier.FULL,
    ) -> list[AppendResult]:
        """Durably append the events to the site's routes (or the destinations in `only`) that
        their consent tier lets them reach (`routes_for`) and whose event lists (core.routing)
        take each event's name; the others count it `routed_away`. Backend orders (the site's
        `order_events` with an order id) get their order ledger entry (web/ledger.py: sent,
        consent_denied or routed_away per route) in the same store transaction, even when no
        route takes them."""
        routes = self.routes_for(site, tier, len(events), only=only)
        if not events:
            return []
        facts = event_facts(site.order_events, events) if only is None else None
        site_id = site.config.id
        if not routes:
            if facts is not None:  # consent kept the orders from every route: ledger only
                unrouted = [_unrouted(site_id, e) for e in events]
                orders = batch_entries(site_id, site.routes, unrouted, facts)
                await self.store.append_orders((), orders, self.clock())
            return []
        if site.table.filters:
            return await self._routed(
                site,
                routes,
                [(e.event, e.event_id, float(e.time), encode(e), e.channel) for e in events],
                facts,
            )
        # positional: (site, event_name, event_id, event_time, record, routes)
        batch = [
            NewEvent(site_id, e.event, e.event_id, float(e.time), encode(e), routes) for e in events
        ]
        results = await self._append(site, batch, facts)
        if self.debug is not None:  # the debug view's ring (gateway/web/debugview.py)
            self.debug.received(batch, results)
        count_appends(self.tally, routes, batch, results)
        return results

    def count_routed_away(self, routes: Sequence[str], count: int = 1) -> None:
        """Count `count` events that the event lists of `routes` turned away."""
        counter = self.routed_away
        for route in routes:
            counter[route] = counter.get(route, 0) + count

    async def _routed(
        self,
        site: Site,
        routes: tuple[str, ...],
        rows: Sequence[tuple[str, str, float, bytes, str]],
        facts: Facts | None = None,
    ) -> list[AppendResult]:
        """Append (name, id, time, record, channel) rows each to the routes that take its name
        from its channel; count `routed_away` once the append succeeded (a caller retrying after
        a failure counts once). An event no route takes is appended nowhere: accepted, and only
        counted. `facts` (per row) marks the orders, whose ledger rows go in with the append."""
        site_id, table = site.config.id, site.table
        away: dict[str, int] = {}
        batch: list[NewEvent] = []
        orders: list[OrderEntry] = []
        for index, (name, event_id, when, record, channel) in enumerate(rows):
            routed = table.route(name, routes, channel)
            for route in routed.away:
                away[route] = away.get(route, 0) + 1
            if routed.kept:
                batch.append(NewEvent(site_id, name, event_id, when, record, routed.kept))
            fact = None if facts is None else facts[index]
            if fact is not None:
                orders.append(
                    entry(
                        site_id, fact, name, event_id, when, site.routes, routed.kept, routed.away
                    )
                )
        if orders:
            results = await self.store.append_orders(batch, orders, self.clock())
        else:
            results = await self.store.append(batch, self.clock()) if batch else []
        if self.debug is not None:  # the debug view's ring (gateway/web/debugview.py)
            self.debug.received(batch, results)
        for route, n in away.items():
            self.count_routed_away((route,), n)
        first = batch[0].routes if batch else ()
        if all(new.routes is first for new in batch):  # one shared routes tuple (RouteTable)
            count_appends(self.tally, first, batch, results)
            return results
        for new, result in zip(batch, results, strict=True):  # each event with its own routes
            count_appended(self.tally, new.event_name, new.routes, result)
        return results


def _unrouted(site_id: str, event: Event) -> NewEvent:
    """An event no route takes, for its ledger rows only (it is never appended)."""
    return NewEvent(site_id, event.event, event.event_id, float(event.time), b"", ())
