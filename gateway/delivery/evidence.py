"""What a dead letter keeps: the body sent for that one event and the platform's answer.

The worker gives rows up knowing the event, the outcome's detail (the destination's excerpt of
the platform's error for that event, already bounded and free of PII: the platform only ever
saw hashed identifiers) and the HTTP status of the request that decided it (None when the
gateway's own check refused the event before sending). The payload is the body
`Destination.build_request` makes for that one event: exactly what a request carrying it alone
sends, without the URL and headers, where tokens travel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from gateway.core.event import Event
from gateway.destinations.base import Destination
from gateway.store.base import DeadEvidence, Delivery

log = logging.getLogger("signalgate.delivery")


def one_event_body(destination: Destination, event: Event) -> bytes | None:
    """Return the request body that delivers `event` alone, or None if it cannot be built."""
    try:
        return bytes(destination.build_request([event]).content)
    except Exception:  # a mapping bug must not stop the row from being given up
        log.warning("Could not rebuild a dead letter's payload.", extra={"event": event.event})
        return None


def evidence_of(
    destination: Destination,
    rows: Sequence[Delivery],
    decode: Callable[[Delivery], Event | None],
    status: int | None,
    detail: str,
) -> dict[int, DeadEvidence]:
    """Return each row's evidence (by delivery id)."""
    out: dict[int, DeadEvidence] = {}
    for row in rows:
        event = decode(row)
        body = one_event_body(destination, event) if event is not None else None
        out[row.id] = DeadEvidence(status=status, answer=detail, payload=body)
    return out
