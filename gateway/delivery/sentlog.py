"""Feed a route's debug log (gateway/core/debuglog.py) from one answered request.

Called by the worker once per request the platform answered, only when the site keeps a debug
log. The request's URL is kept without its query (GA4's api_secret and Meta's access_token
travel there) and its headers are never read (bearer tokens, OAuth signatures, developer
tokens); the body is not kept either: the debug view rebuilds each event's own body when
someone looks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import httpx

from gateway.core.debuglog import SentLog, SentRequest
from gateway.core.event import Event
from gateway.destinations.base import BatchVerdict, Delivered, Outcome, Paused, Permanent, Retry
from gateway.store.base import Delivery


def endpoint_of(url: httpx.URL) -> str:
    """Scheme, host (and port) and path of `url`: no query, no fragment, no user info."""
    host = url.host if url.port is None else f"{url.host}:{url.port}"
    return f"{url.scheme}://{host}{url.path}"


def fate_of(outcome: Outcome) -> tuple[str, str | None]:
    """Return (outcome name, reason) of one event's outcome."""
    match outcome:
        case Delivered():
            return "delivered", None
        case Retry(reason=reason):
            return "retry", reason
        case Permanent(reason=reason, detail=detail):
            return "dead", f"{reason.value}: {detail}"
        case Paused(reason=reason):
            return "paused", reason


def note_sent(
    log: SentLog,
    request: httpx.Request,
    status: int,
    events: Sequence[Event],
    verdict: BatchVerdict,
    now: float,
) -> None:
    """Remember the events of one answered request with what the answer meant for each."""
    if verdict.per_event is not None:
        fates = [fate_of(o) for o in verdict.per_event]
    elif verdict.bisect and len(events) > 1:
        fates = [("split", fate_of(verdict.outcome)[1])] * len(events)
    else:
        fates = [fate_of(verdict.outcome)] * len(events)
    log.add(SentRequest(now, endpoint_of(request.url), status, len(events)), events, fates)


def note_refused(
    log: SentLog,
    rows: Sequence[Delivery],
    decode: Callable[[Delivery], Event | None],
    reason: str,
    now: float,
) -> None:
    """Remember rows the worker gave up without sending them (no endpoint, no status)."""
    events = [e for e in map(decode, rows) if e is not None]
    log.add(SentRequest(now, None, None, 0), events, [("refused", reason)] * len(events))
