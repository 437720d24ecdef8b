"""The conversion gap: which of the shop's orders each platform got, and why the others not.

An *order* is a backend event (channel "api", the shop's `POST /v1/events`) that carries
``data.order_id`` and whose name is one of the site's ``order_events`` (default: Purchase).
Browser copies of an order are not orders: they are what the backend's copy is deduplicated
against, so counting them too would count one sale twice.

When such an event is accepted, the pipeline writes one ledger entry per order event (in the
same store transaction as the append): every route of the site at that moment, and the fate
of each route (`OrderEntry.fates`):

    sent             appended to the route's outbox (or deduplicated into an earlier copy)
    consent_denied   the consent tier kept the event from this route
    routed_away      the route's events / exclude_events / sources turned it away

An entry names the routes that were not sent (usually none) and implies the others were, so
the write costs one row whatever the number of destinations. The store reads it back as one
`OrderRow` per route.

A sent row is joined with its delivery row when the gap is asked for, which tells whether the
platform accepted it (done), gave it up (dead, with the reason) or still has it waiting
(pending, leased or retry, with attempts and the next try). An order is *delivered* to a route
when any of its events was; otherwise it is *missing* with the reason of its best event
(queued before dead letter before routing before consent).

Pure: no I/O and no clock (the caller passes the rows and the time).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, NamedTuple


class Fate(StrEnum):
    """What the request path did with an order for one route."""

    SENT = "sent"
    CONSENT_DENIED = "consent_denied"
    ROUTED_AWAY = "routed_away"


class OrderFacts(NamedTuple):
    """What the ledger keeps of an order event besides its ids: flags, never identifiers."""

    order_id: str
    has_email: bool
    """The event carries a hashed e-mail (for any platform)."""
    has_value: bool
    has_currency: bool


class OrderEntry(NamedTuple):
    """One order event to write to the ledger, with its fate on every route of its site: the
    routes in neither `denied` nor `away` were sent."""

    site: str
    order_id: str
    event_id: str
    event_name: str
    event_time: float
    routes: tuple[str, ...]
    """Every route of the site when the event was accepted."""
    denied: tuple[str, ...]
    """Routes the consent tier kept the event from (Fate.CONSENT_DENIED)."""
    away: tuple[str, ...]
    """Routes whose event lists turned the event away (Fate.ROUTED_AWAY)."""
    has_email: bool
    has_value: bool
    has_currency: bool

    def fate(self, route: str) -> Fate:
        """The event's fate on one of its `routes`."""
        if route in self.denied:
            return Fate.CONSENT_DENIED
        if route in self.away:
            return Fate.ROUTED_AWAY
        return Fate.SENT

    def fates(self) -> list[tuple[str, Fate]]:
        """(route, fate) for every route, in `routes` order."""
        return [(route, self.fate(route)) for route in self.routes]


class OrderRow(NamedTuple):
    """A ledger row as read back, with the state of its delivery row (None: no row, e.g.
    not sent, or compacted / erased since)."""

    order_id: str
    event_id: str
    route: str
    fate: str
    event_time: float
    has_email: bool
    has_value: bool
    has_currency: bool
    paired: bool
    """A browser copy (loader or pixel) of the same event was deduplicated with it."""
    state: str | None
    attempts: int
    not_before: float
    reason: str | None
    updated_at: float


DEFAULT_ORDER_EVENTS: Final = ("Purchase",)

FRESH_SECONDS: Final = 3600.0
"""A delivery is fresh when the platform accepted it within this long of the event's time."""


def has_hashed_email(hashed: Mapping[str, Mapping[str, Any]] | None) -> bool:
    """Whether any ruleset of the hashed identifiers holds an e-mail."""
    return bool(hashed) and any("em" in ids and ids["em"] for ids in (hashed or {}).values())


def order_facts(
    name: str,
    channel: str,
    order_id: str | None,
    hashed: Mapping[str, Mapping[str, Any]] | None,
    value: float | None,
    currency: str | None,
    order_events: frozenset[str],
) -> OrderFacts | None:
    """The facts of an event if it is an order (see the module docstring), else None."""
    if channel != "api" or not order_id or name not in order_events:
        return None
    return OrderFacts(order_id, has_hashed_email(hashed), value is not None, bool(currency))


def entry(
    site: str,
    facts: OrderFacts,
    name: str,
    event_id: str,
    event_time: float,
    routes: tuple[str, ...],
    kept: Collection[str],
    away: Collection[str] = (),
) -> OrderEntry:
    """The ledger entry of an order event sent to the routes in `kept`, routed away from those
    in `away` and denied by consent on every other route of the site's `routes`."""
    if kept is routes or (len(kept) == len(routes) and all(r in kept for r in routes)):
        denied: tuple[str, ...] = ()
        turned: tuple[str, ...] = ()
    else:
        turned = tuple(r for r in routes if r not in kept and r in away)
        denied = tuple(r for r in routes if r not in kept and r not in away)
    return OrderEntry(
        site,
        facts.order_id,
        event_id,
        name,
        event_time,
        routes,
        denied,
        turned,
        facts.has_email,
        facts.has_value,
        facts.has_currency,
    )


# -- the report ------------------------------------------------------------------------------

_WAITING: Final = frozenset({"pending", "leased", "retry"})
_RANK: Final = {
    "delivered": 0,
    "queued": 1,
    "dead_letter": 2,
    "routed_away": 3,
    "consent_denied": 4,
    "unknown": 5,
}
"""Which outcome of an order's events stands for the order on a route (lower first)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One order event's outcome on one route."""

    status: str
    """delivered, queued, dead_letter, routed_away, consent_denied or unknown."""
    detail: dict[str, Any]


def outcome(row: OrderRow) -> Outcome:
    """Classify a ledger row joined with its delivery row."""
    if row.fate == Fate.CONSENT_DENIED:
        return Outcome("consent_denied", {})
    if row.fate == Fate.ROUTED_AWAY:
        return Outcome("routed_away", {})
    if row.state == "done":
        return Outcome("delivered", {"delivered_at": row.updated_at})
    if row.state == "dead":
        text = row.reason or ""
        code, _, rest = text.partition(":")
        return Outcome("dead_letter", {"dead_reason": code.strip(), "detail": rest.strip()})
    if row.state in _WAITING:
        detail: dict[str, Any] = {"state": row.state, "attempts": row.attempts}
        if row.state == "retry":
            detail["next_try"] = row.not_before
            if row.reason:
                detail["last_error"] = row.reason
        return Outcome("queued", detail)
    return Outcome("unknown", {"detail": "no delivery row (compacted or erased)"})


def _share(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(part / whole, 4)


def gap_report(rows: Iterable[OrderRow], routes: Sequence[str]) -> dict[str, Any]:
    """The conversion gap per destination of a site, and the order-level figures the audit
    checks (e-mail, value and currency coverage; pairing with browser copies; freshness)."""
    by_route: dict[str, dict[str, list[OrderRow]]] = {r: {} for r in routes}
    orders: dict[str, list[OrderRow]] = {}
    for row in rows:
        orders.setdefault(row.order_id, []).append(row)
        by_route.setdefault(row.route, {}).setdefault(row.order_id, []).append(row)
    destinations: dict[str, Any] = {}
    for route, per_order in by_route.items():
        destinations[route.split(":", 1)[-1]] = _destination(route, per_order)
    total = len(orders)
    email = sum(1 for rs in orders.values() if any(r.has_email for r in rs))
    value = sum(1 for rs in orders.values() if any(r.has_value for r in rs))
    currency = sum(1 for rs in orders.values() if any(r.has_currency for r in rs))
    return {
        "orders": total,
        "coverage": {
            "email": _share(email, total),
            "value": _share(value, total),
            "currency": _share(currency, total),
            "event_id": _share(total, total),
        },
        "destinations": destinations,
    }


def _destination(route: str, per_order: Mapping[str, list[OrderRow]]) -> dict[str, Any]:
    delivered = 0
    fresh = 0
    sent = 0
    paired = 0
    missing: list[dict[str, Any]] = []
    for order_id in sorted(per_order):
        rows = per_order[order_id]
        if any(r.fate == Fate.SENT for r in rows):
            sent += 1
            paired += any(r.paired for r in rows)
        results = sorted(
            ((outcome(r), r) for r in rows), key=lambda pair: _RANK.get(pair[0].status, 9)
        )
        best, row = results[0]
        if best.status == "delivered":
            delivered += 1
            fresh += row.updated_at - row.event_time <= FRESH_SECONDS
            continue
        missing.append(
            {"order_id": order_id, "event_id": row.event_id, "reason": best.status, **best.detail}
        )
    total = len(per_order)
    return {
        "route": route,
        "orders": total,
        "delivered": delivered,
        "missing": len(missing),
        "gap": _share(len(missing), total),
        "sent": sent,
        "paired": paired,
        "fresh": fresh,
        "fresh_share": _share(fresh, delivered),
        "missing_orders": missing,
    }
