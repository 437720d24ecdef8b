"""Which events each destination of a site takes, and under which name (issue #11 item 6).

Every `[sites.destinations.<name>]` table, whatever the platform, may hold three routing keys
besides the platform's own settings (`ROUTING_KEYS`; config.py takes them out of the table before
the settings class sees it):

* ``events``: only events with these names go to the destination (default: all);
* ``exclude_events``: events with these names never go to it;
* ``event_names``: canonical name → the name the destination's own mapping then sees, a per-site
  override of the platform's default table (``order_paid = "Purchase"``).

Names are matched exactly on the event's canonical name (a custom event by its own name), before
any renaming. A name may not be both included and excluded (refused by `check_rules`, so the
question of which wins never arises).

`RouteTable` answers, per event name, which of a site's routes take it; it is pure and memoises
one tuple per distinct answer, so events of one request that go to the same routes share one
tuple object (the store's fast path for a batch with one route set).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Final

from gateway.core.event import Event

ROUTING_KEYS: Final = ("events", "exclude_events", "event_names", "sources")
"""Keys every destination table accepts on top of the platform's own settings."""

SOURCES: Final[Mapping[str, str]] = {"backend": "api", "loader": "loader", "pixel": "pixel"}
"""Source name in the config → the event's `channel`: the server API, the browser loader (`/e`),
a mirrored proxied pixel hit."""

EVENT_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_ .:\-]{0,99}")
"""The event names `parse_event` accepts (core.eventschema); a listed name must be one."""

_EVENT_NAME_TEXT: Final = "an event name (letters, digits, '_', ' ', '.', ':', '-'; at most 100)"
_MAX_PLATFORM_NAME: Final = 100
_MEMO_MAX: Final = 4096
"""Distinct event names remembered per site (custom names are unbounded; cleared when full)."""


@dataclass(frozen=True, slots=True)
class RouteRules:
    """The routing keys of one destination table (`[sites.destinations.<name>]`)."""

    events: tuple[str, ...] | None = field(
        default=None,
        metadata={
            "help": "Only events with these names go to this destination (canonical names;"
            " custom events by their name); default: all."
        },
    )
    exclude_events: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "Events with these names never go to this destination; a name may not be"
            " in both lists."
        },
    )
    event_names: Mapping[str, str] = field(
        default_factory=dict,
        metadata={
            "help": "Canonical or custom name → name this destination maps it as (overrides"
            ' its default table), e.g. {order_paid = "Purchase"}.'
        },
    )
    sources: tuple[str, ...] | None = field(
        default=None,
        metadata={
            "help": 'Where its events may come from: any of "backend" (the server API),'
            ' "loader" (/e) and "pixel" (mirrored proxied hits); default: the platform\'s own'
            " (GA4: backend only, since it counts a server copy of a browser event twice),"
            " else all."
        },
    )

    @property
    def filters(self) -> bool:
        """Whether some event name or source is kept from the destination."""
        return self.events is not None or bool(self.exclude_events) or self.sources is not None

    def takes(self, name: str, channel: str | None = None) -> bool:
        """Return whether an event of this canonical name (from `channel`, when given: the
        event's `channel`, "api", "loader" or "pixel") goes to the destination."""
        if self.events is not None and name not in self.events:
            return False
        sources = self.sources
        if channel is not None and sources is not None and channel not in _channels(sources):
            return False
        return name not in self.exclude_events

    def rename(self, name: str) -> str:
        """Return the name the destination's own mapping sees for a canonical name."""
        return self.event_names.get(name, name)


def _channels(sources: tuple[str, ...]) -> frozenset[str]:
    return frozenset(SOURCES[s] for s in sources if s in SOURCES)


NO_RULES: Final = RouteRules()
"""A destination without routing keys: every event, default names."""


def with_default_sources(rules: RouteRules, sources: tuple[str, ...] | None) -> RouteRules:
    """Return `rules` with the platform's default `sources` when the site set none."""
    if rules.sources is not None or sources is None:
        return rules
    return replace(rules, sources=sources)


def renamed(event: Event, names: Mapping[str, str]) -> Event:
    """Return the event under the name a destination's `event_names` gives it (else as is).

    The delivery worker applies it to every event it decodes, so the destination's own mapping,
    checks and batching see the overridden name.
    """
    new = names.get(event.event) if names else None
    return event if new is None or new == event.event else replace(event, event=new)


def check_rules(rules: RouteRules) -> list[tuple[str, str]]:
    """Return (key path below the destination table, reason) for every problem of `rules`."""
    problems: list[tuple[str, str]] = []
    if rules.events is not None and not rules.events:
        problems.append(("events", "empty: leave the key out to send every event"))
    if rules.sources is not None:
        if not rules.sources:
            problems.append(("sources", "empty: leave the key out for the platform's default"))
        for i, source in enumerate(rules.sources):
            if source not in SOURCES:
                problems.append((f"sources[{i}]", "expected one of " + ", ".join(SOURCES)))
    for key, names in (("events", rules.events or ()), ("exclude_events", rules.exclude_events)):
        seen: set[str] = set()
        for i, name in enumerate(names):
            if not EVENT_NAME.fullmatch(name):
                problems.append((f"{key}[{i}]", f"expected {_EVENT_NAME_TEXT}"))
            elif name in seen:
                problems.append((f"{key}[{i}]", f"{name!r} is listed twice"))
            seen.add(name)
    if rules.events is not None:
        for i, name in enumerate(rules.exclude_events):
            if name in rules.events:
                problems.append(
                    (
                        f"exclude_events[{i}]",
                        f"{name!r} is also in events: list it in one of the two",
                    )
                )
    for name, target in rules.event_names.items():
        where = f"event_names.{name}"
        if not EVENT_NAME.fullmatch(name):
            problems.append((where, f"the key must be {_EVENT_NAME_TEXT}"))
        elif not rules.takes(name):
            problems.append((where, f"{name!r} never reaches this destination (events lists)"))
        if not target.strip() or len(target) > _MAX_PLATFORM_NAME or not target.isprintable():
            problems.append((where, "expected a platform event name (1-100 printable characters)"))
    return problems


@dataclass(frozen=True, slots=True)
class Routed:
    """Which of the offered routes take an event name, and which turn it away."""

    kept: tuple[str, ...]
    away: tuple[str, ...]


class RouteTable:
    """A site's routes with their rules: the routes of an event name, memoised."""

    def __init__(self, rules: Mapping[str, RouteRules]) -> None:
        """`rules`: route → its rules (a route without an entry takes every event)."""
        self._rules = {route: r for route, r in rules.items() if r.filters}
        self._memo: dict[tuple[str, str, tuple[str, ...]], Routed] = {}
        self._shared: dict[tuple[str, ...], tuple[str, ...]] = {}

    @property
    def filters(self) -> bool:
        """Whether some route turns some event name away (else every route takes all)."""
        return bool(self._rules)

    def route(self, name: str, routes: tuple[str, ...], channel: str = "api") -> Routed:
        """Split `routes` (some of the site's) into those that take `name` from `channel` (the
        event's channel) and the others."""
        key = (name, channel, routes)
        found = self._memo.get(key)
        if found is not None:
            return found
        rules = self._rules
        kept = tuple(r for r in routes if r not in rules or rules[r].takes(name, channel))
        if len(kept) == len(routes):
            found = Routed(routes, ())
        else:
            away = tuple(r for r in routes if r not in kept)
            found = Routed(self._shared.setdefault(kept, kept), away)
        if len(self._memo) >= _MEMO_MAX:
            self._memo.clear()
        self._memo[key] = found
        return found
