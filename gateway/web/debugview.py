"""The debug view: the last events each site received and each destination sent (README "Debug").

``GET /v1/admin/events?site=&destination=&event_id=&limit=`` (admin token) answers, newest
first, the site's last events as received, after parsing and hashing (their stored form: hashed
identifiers only, with what the outbox did on each route: queued or duplicate, and the latest
answer of each platform that got it), and the last events as sent to each destination (the body
the destination builds for that event, the endpoint without its query, the platform's HTTP
status and what it meant).

Memory only: per site a ring of its last `sites[].debug_events` received events, and per route
one of as many sent events (gateway/core/debuglog.py). The request path only appends
references to objects it built anyway (the stored bytes and the store's answer), in C, once per
batch; with `debug_events = 0` a site keeps no ring and its requests pay one `is None` test per
batch. Reading decodes, renders and scrubs (gateway/web/debugjson.py) only when someone looks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from itertools import repeat
from typing import Any, Final

from aiohttp import web

from gateway.config import Config
from gateway.core.debuglog import SentEvent, SentLog, event_carries
from gateway.core.jsoncodec import loads
from gateway.core.record import decode, record_carries
from gateway.destinations.base import Destination
from gateway.store.base import AppendResult, NewEvent
from gateway.web.admin import admin_denied
from gateway.web.debugjson import event_json, payload_json, scrub, secrets_of
from gateway.web.middleware import error_response

MAX_LIMIT: Final = 1000
DEFAULT_LIMIT: Final = 50
MAX_EVENT_ID: Final = 256

Received = tuple[NewEvent, AppendResult, float]
"""One received event: as appended, what the store did with it, and when (gateway clock)."""
Errors = list[dict[str, str]]


class ReceivedLog:
    """Per site, the last events the pipeline appended (sites with a capacity above 0)."""

    __slots__ = ("clock", "rings", "sent")

    def __init__(self, capacities: Mapping[str, int], clock: Callable[[], float]) -> None:
        self.rings: dict[str, deque[Received]] = {
            site: deque(maxlen=n) for site, n in capacities.items() if n > 0
        }
        self.clock = clock
        self.sent: dict[str, SentLog] = {}
        """Route → the sent log its worker feeds (`DebugView.sent_log`)."""

    def forget(self, site: str, visitor_id: str | None, keys: Sequence[str]) -> int:
        """Drop the site's kept events of one person, received and sent (an erasure request:
        its visitor id, or its "<key>:<digest>" lookup keys); return how many."""
        wanted = frozenset(keys)
        dropped = 0
        ring = self.rings.get(site)
        if ring is not None:
            kept = [e for e in ring if not record_carries(loads(e[0].record), visitor_id, wanted)]
            dropped += len(ring) - len(kept)
            ring.clear()
            ring.extend(kept)
        for route, log in self.sent.items():
            if route.startswith(f"{site}:"):
                dropped += log.forget(lambda e: event_carries(e, visitor_id, wanted))
        return dropped

    def received(self, batch: Sequence[NewEvent], results: Sequence[AppendResult]) -> None:
        """Remember one appended batch (all of one site) and the store's answer for each."""
        ring = self.rings.get(batch[0].site) if batch else None
        if ring is None:
            return
        if len(batch) == 1:  # the usual API request and every loader event
            ring.append((batch[0], results[0], self.clock()))
        else:
            ring.extend(zip(batch, results, repeat(self.clock())))

    def newest(self, site: str) -> list[Received]:
        """The site's kept events, newest first."""
        ring = self.rings.get(site)
        return list(reversed(ring)) if ring is not None else []


class DebugView:
    """Keeps the rings and answers ``GET /v1/admin/events``."""

    def __init__(
        self,
        config: Config,
        clock: Callable[[], float],
        destination_of: Callable[[str], Destination | None],
    ) -> None:
        self.token = config.server.admin_token
        self.capacity = {s.id: s.debug_events for s in config.sites}
        self.destinations = {s.id: tuple(s.destinations) for s in config.sites}
        self.destination_of = destination_of
        """Route → its destination (the worker's), to rebuild a sent event's body."""
        self.log = ReceivedLog(self.capacity, clock) if any(self.capacity.values()) else None
        """What the pipeline feeds (`Pipeline.debug`); None when no site keeps a ring."""
        self.sent: dict[str, SentLog] = self.log.sent if self.log is not None else {}
        self.secrets = secrets_of(config)

    def sent_log(self, route: str) -> SentLog | None:
        """The sent log the worker of `route` feeds (None when its site keeps none)."""
        capacity = self.capacity.get(route.split(":", 1)[0], 0)
        if capacity <= 0:
            return None
        return self.sent.setdefault(route, SentLog(capacity))

    async def events(self, request: web.Request) -> web.Response:
        """The last events received and sent, filtered by the query."""
        denied = admin_denied(request, self.token)
        if denied is not None:
            return denied
        parsed = self._query(request.query)
        if isinstance(parsed, web.Response):
            return parsed
        site, destination, event_id, limit = parsed
        return web.json_response(self.document(site, destination, event_id, limit))

    def document(
        self, site: str, destination: str | None, event_id: str | None, limit: int
    ) -> dict[str, Any]:
        """The answer of ``GET /v1/admin/events`` for a configured site (secrets cut out)."""
        wanted = [destination] if destination else list(self.destinations[site])
        sent = self._sent(site, wanted, event_id)
        latest: dict[tuple[str, str], SentEvent] = {}
        for name, entry in reversed(sent):  # oldest first: the newest answer wins
            latest[(name, entry.event.event_id)] = entry
        received: list[dict[str, Any]] = []
        if self.log is not None:
            for new, result, at in self.log.newest(site):
                if len(received) >= limit:
                    break
                if event_id is not None and new.event_id != event_id:
                    continue
                if destination and f"{site}:{destination}" not in new.routes:
                    continue
                received.append(_received_json(new, result, at, latest))
        body = {
            "site": site,
            "capacity": self.capacity[site],
            "received": received,
            "sent": [self._sent_json(site, name, entry) for name, entry in sent[:limit]],
        }
        clean: dict[str, Any] = scrub(body, self.secrets)
        return clean

    def _sent(
        self, site: str, destinations: Sequence[str], event_id: str | None
    ) -> list[tuple[str, SentEvent]]:
        """The sent events of those destinations, newest first."""
        out: list[tuple[str, SentEvent]] = []
        for name in destinations:
            log = self.sent.get(f"{site}:{name}")
            if log is not None:
                out += [
                    (name, e)
                    for e in log.newest()
                    if event_id is None or e.event.event_id == event_id
                ]
        out.sort(key=lambda pair: pair[1].request.at, reverse=True)
        return out

    def _sent_json(self, site: str, name: str, entry: SentEvent) -> dict[str, Any]:
        request, event = entry.request, entry.event
        destination = self.destination_of(f"{site}:{name}")
        return {
            "destination": name,
            "sent_at": request.at,
            "event": event.event,
            "event_id": event.event_id,
            "test_code": event.test_code,
            "endpoint": request.endpoint,
            "status": request.status,
            "outcome": entry.outcome,
            "reason": entry.reason,
            "request_events": request.events,
            "payload": payload_json(destination, event)
            if destination is not None and request.status is not None
            else None,
        }

    def _query(
        self, params: Mapping[str, str]
    ) -> tuple[str, str | None, str | None, int] | web.Response:
        errors: Errors = []
        site = params.get("site") or None
        if site is None:
            if len(self.destinations) == 1:
                site = next(iter(self.destinations))
            else:
                errors.append({"path": "site", "reason": "required: several sites are configured"})
        destination = params.get("destination") or None
        event_id = params.get("event_id") or None
        if event_id is not None and len(event_id) > MAX_EVENT_ID:
            errors.append({"path": "event_id", "reason": f"at most {MAX_EVENT_ID} characters"})
        raw = params.get("limit", str(DEFAULT_LIMIT))
        limit = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 6 else 0
        if not 1 <= limit <= MAX_LIMIT:
            errors.append({"path": "limit", "reason": f"expected an integer from 1 to {MAX_LIMIT}"})
        if errors:
            return error_response(400, "bad_request", "invalid debug query", errors)
        assert site is not None
        if site not in self.destinations:
            return error_response(
                404,
                "not_found",
                "no such site",
                [{"path": "site", "reason": "not a configured site"}],
            )
        if destination is not None and destination not in self.destinations[site]:
            return error_response(
                404,
                "not_found",
                "no such destination",
                [{"path": "destination", "reason": "not a destination of this site"}],
            )
        return site, destination, event_id, limit


def _received_json(
    new: NewEvent, result: AppendResult, at: float, latest: Mapping[tuple[str, str], SentEvent]
) -> dict[str, Any]:
    """One received event with its routes' states and each platform's latest answer."""
    skipped = (
        set(new.routes) if result.created == 0 and result.deduplicated else set(result.duplicates)
    )
    routes: dict[str, str] = {}
    answers: dict[str, dict[str, Any]] = {}
    for route in new.routes:
        name = route.split(":", 1)[1]
        routes[name] = "duplicate" if route in skipped else "queued"
        sent = latest.get((name, new.event_id))
        if sent is not None:
            answers[name] = {
                "sent_at": sent.request.at,
                "status": sent.request.status,
                "outcome": sent.outcome,
                "reason": sent.reason,
            }
    return {
        "received_at": at,
        "event": new.event_name,
        "event_id": new.event_id,
        "routes": routes,
        "answers": answers,
        "record": event_json(decode(new.record)),
    }
