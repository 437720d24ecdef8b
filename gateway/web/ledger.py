"""The request path's side of the order ledger: which events of a batch are orders, and the
ledger entries (one per order event) of a batch whose routes are known
(gateway/core/orders.py explains the ledger)."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.core.event import Event
from gateway.core.orders import OrderEntry, OrderFacts, entry, order_facts
from gateway.core.record import Stored
from gateway.store.base import NewEvent

Facts = list[OrderFacts | None]
"""Per event of a batch, its order facts (None: not an order)."""


def event_facts(order_events: frozenset[str], events: Sequence[Event]) -> Facts | None:
    """The order facts of each event, or None when the batch holds no order (the usual case:
    nothing more is done for it)."""
    if not order_events:
        return None
    facts: Facts = [
        order_facts(
            e.event,
            e.channel,
            e.data.order_id,
            e.user.hashed,
            e.data.value,
            e.data.currency,
            order_events,
        )
        if e.event in order_events
        else None
        for e in events
    ]
    return facts if any(f is not None for f in facts) else None


def stored_facts(order_events: frozenset[str], stored: Sequence[Stored]) -> Facts | None:
    """`event_facts` for events in their stored form."""
    if not order_events:
        return None
    facts: Facts = [
        order_facts(s.e, s.ch, s.d.order_id, s.u.h, s.d.value, s.d.currency, order_events)
        if s.e in order_events
        else None
        for s in stored
    ]
    return facts if any(f is not None for f in facts) else None


def batch_entries(
    site: str, routes: tuple[str, ...], batch: Sequence[NewEvent], facts: Facts
) -> list[OrderEntry]:
    """The ledger entries of a batch's orders, each appended to its own routes (the others of
    the site's `routes` were denied by consent)."""
    return [
        entry(site, fact, new.event_name, new.event_id, new.event_time, routes, new.routes)
        for new, fact in zip(batch, facts, strict=True)
        if fact is not None
    ]
