"""Event parsing: one JSON event object → an `Event`, or every field error found."""

from __future__ import annotations

from collections.abc import Callable

from gateway.core.event import Event, PiiHasher
from gateway.core.eventbuild import _hash_user
from gateway.core.eventfast import _parse_common, _Unusual
from gateway.core.eventprecise import _parse_precise
from gateway.core.eventschema import JSON, ParseLimits
from gateway.core.fielderrors import FieldError


def parse_event(
    obj: JSON,
    *,
    now: float,
    new_id: Callable[[], str],
    path: str = "",
    limits: ParseLimits = ParseLimits(),  # noqa: B008 - a frozen dataclass, never mutated
    hasher: PiiHasher | None = None,
) -> Event | list[FieldError]:
    """Parse one event object; return the Event or every field error found.

    `now` is the receipt time (unix seconds) and `new_id` makes a random id when neither an
    event_id nor an order_id is present; both come from the edge, so this stays pure. With a
    `hasher`, a valid event's raw PII is handed to it once and the event comes back holding
    only what it returns (``user.pii`` empty, ``user.hashed`` set): one object built instead
    of parsing and then rebuilding the event around its hashes.
    """
    if type(obj) is dict:
        try:
            return _parse_common(obj, now, new_id, limits, hasher)
        except _Unusual:
            pass  # something is off or unusual: the precise parser decides and explains
    parsed = _parse_precise(obj, now=now, new_id=new_id, path=path, limits=limits)
    if hasher is None or isinstance(parsed, list):
        return parsed
    return _hash_user(parsed, hasher)
