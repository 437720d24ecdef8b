"""Server API: POST /v1/events for shop backends, plus /healthz and /readyz."""

from __future__ import annotations

import functools
import hmac
import math
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from gateway.core.consent import by_stated_tier
from gateway.core.event import Event
from gateway.core.fielderrors import FieldError
from gateway.core.jsoncodec import dumps, loads
from gateway.core.tally import name_counts
from gateway.core.wire import decode_document, is_clean
from gateway.store.availability import StoreUnavailableError
from gateway.store.base import AppendResult
from gateway.web.baseline import Baseline
from gateway.web.bearer import bearer_token
from gateway.web.debugflag import DEBUG_HEADER, debug_code, mark_items, mark_typed
from gateway.web.fastlane import Answer, LaneRequest, Reply
from gateway.web.middleware import BodyError, read_body
from gateway.web.pipeline import Pipeline, Site
from gateway.web.tallying import EVENT_NAMES, STORED_NAMES
from gateway.web.visitorid import resolve_events, resolve_stored


@dataclass
class TokenBucket:
    """Events-per-second quota of one site (burst = one second's worth, at least one batch)."""

    rate: float
    burst: float
    tokens: float = field(default=0.0)
    stamp: float = field(default=0.0)

    def take(self, n: int, now: float) -> float:
        """Take n tokens; return 0 if allowed, else the seconds until they would be."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if n <= self.tokens:
            self.tokens -= n
            return 0.0
        return (n - self.tokens) / self.rate


class KeyRing:
    """Maps Bearer API keys to sites, comparing in constant time against every key."""

    def __init__(self, sites: Sequence[Site]) -> None:
        self._keys = [(key.value.encode(), site) for site in sites for key in site.config.api_keys]

    def site_for(self, header: str | None) -> Site | None:
        """Return the site whose key the Authorization header carries, if any."""
        given = bearer_token(header)
        if given is None:
            return None
        found: Site | None = None
        for key, site in self._keys:
            if hmac.compare_digest(given, key):
                found = site
        return found


class EventsApi:
    """Handlers of the authenticated server API."""

    def __init__(
        self,
        pipeline: Pipeline,
        sites: Sequence[Site],
        *,
        clock: Callable[[], float],
        max_body_bytes: int,
        max_events: int,
        visitor_key: bytes | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.visitor_key = visitor_key
        """Key of the signed `_sgv` values a backend may pass as user.visitor_id (visitorid)."""
        self.keys = KeyRing(sites)
        self.baseline = Baseline(sites)
        self.clock = clock
        self.max_body_bytes = max_body_bytes
        self.max_events = max_events
        self.buckets: dict[str, TokenBucket] = {
            s.config.id: TokenBucket(
                s.config.rate_limit_per_second,
                max(s.config.rate_limit_per_second, float(max_events)),
                tokens=max(s.config.rate_limit_per_second, float(max_events)),
                stamp=clock(),
            )
            for s in sites
            if s.config.rate_limit_per_second > 0
        }

    async def post_events(self, request: web.Request) -> web.Response:
        """Accept a batch of events: 202 after the accepted ones are durably committed."""
        site = self.keys.site_for(request.headers.get("Authorization"))
        if site is None:
            return _UNAUTHORIZED.response()
        code = debug_code(request.headers.get(DEBUG_HEADER))  # gateway/web/debugflag.py
        if isinstance(code, FieldError):
            return _bad_debug(code).response()
        try:
            raw = await read_body(request, self.max_body_bytes)
        except BodyError as exc:
            return error_reply(exc.status, exc.code, exc.reason).response()
        return (await self.ingest(site, raw, test_code=code)).response()

    def lane_answer(self, request: LaneRequest) -> Awaitable[Answer] | None:
        """The fast lane's entry (web/fastlane.py): the same answers as `post_events`.

        The lane passes only bodies it read whole and unencoded; a body over the API's own limit
        is left to aiohttp (its 413), as is any other path or method.
        """
        if request.target != "/v1/events" or request.method != "POST":
            return None
        if len(request.body) > self.max_body_bytes:
            return None
        return self._lane(request)

    async def _lane(self, request: LaneRequest) -> Answer:
        site = self.keys.site_for(request.headers.get("authorization"))
        if site is None:
            return _UNAUTHORIZED.encode()
        code = debug_code(request.headers.get("x-signalgate-debug"))
        if isinstance(code, FieldError):
            return _bad_debug(code).encode()
        return (await self.ingest(site, request.body, test_code=code)).encode()

    async def ingest(self, site: Site, raw: bytes, *, test_code: str | None = None) -> Reply:
        """Parse, check, hash and durably append a posted events document; return the answer.

        `test_code` (the request's debug header) goes to every event without its own.
        """
        now = self.clock()
        typed = decode_document(raw)  # the usual document, typed in one pass (core.wire)
        if test_code and typed is not None:
            mark_typed(typed, test_code)
        if typed is not None and 0 < len(typed) <= self.max_events:
            limited = self._rate_limited(site, len(typed))
            if limited is not None:
                return limited
            clean = is_clean(raw)
            if not await self.pipeline.needs_enrich(site):  # nothing to add: stored forms
                stored = self.pipeline.prepare_stored(
                    site, typed, prefix="events", now=now, clean=clean
                )
                if stored is not None:
                    names = name_counts(stored[0], STORED_NAMES)
                    self.pipeline.tally.accepted(site.config.id, "backend", names)
                    signed = resolve_stored(stored[0], self.visitor_key, "events")
                    results = await self.pipeline.commit_stored(site, stored[0])
                    warnings = stored[1] + signed + self.baseline.stored(site, stored[0], "events")
                    return _answer(len(stored[0]), results, [], _dicts(warnings))
            else:
                fast = self.pipeline.prepare_wire(
                    site, typed, prefix="events", now=now, clean=clean
                )
                if fast is not None:
                    return await self._commit(site, fast[0], [], fast[1])
        if not raw.strip():
            return error_reply(400, "bad_request", "empty body")
        try:
            doc = loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            return error_reply(400, "bad_request", f"body is not valid JSON: {str(exc)[:120]}")
        items, problem = self._events_of(doc)
        if problem is not None:
            return error_reply(400, "bad_request", "not an events document", [problem.as_dict()])
        if test_code:
            mark_items(items, test_code)
        if typed is None:  # a typed document was counted above already
            limited = self._rate_limited(site, len(items))
            if limited is not None:
                return limited
        accepted, refused, dropped = self.pipeline.prepare_all(
            site, items, prefix="events", now=now
        )
        return await self._commit(site, accepted, refused, dropped)

    def _rate_limited(self, site: Site, count: int) -> Reply | None:
        """Take `count` events from the site's quota; return the 429 if it is exhausted."""
        bucket = self.buckets.get(site.config.id)
        if bucket is None:
            return None
        wait = bucket.take(count, self.clock())
        if wait <= 0:
            return None
        self.pipeline.tally.refused(site.config.id, "backend", "rate_limited", count)
        return error_reply(
            429,
            "rate_limited",
            "site event quota exceeded",
            headers=(("Retry-After", str(max(1, math.ceil(wait)))),),
        )

    async def _commit(
        self,
        site: Site,
        accepted: list[Event],
        refused: list[tuple[int, list[FieldError]]],
        dropped: list[FieldError],
    ) -> Reply:
        """Enrich and durably append the accepted events; return the request's answer."""
        tally, site_id = self.pipeline.tally, site.config.id
        tally.accepted(site_id, "backend", name_counts(accepted, EVENT_NAMES))
        tally.refused(site_id, "backend", "invalid", len(refused))
        rejected = [{"index": index, "errors": _dicts(errors)} for index, errors in refused]
        refused_at = {index for index, _ in refused}
        indexes = [i for i in range(len(accepted) + len(refused)) if i not in refused_at]
        accepted, signed = resolve_events(accepted, indexes, self.visitor_key, "events")
        dropped = dropped + signed
        full, restricted = by_stated_tier(accepted)
        if restricted:  # only the events that will be forwarded whole are checked for Meta
            kept = {id(event) for event in full}
            indexes = [i for e, i in zip(accepted, indexes, strict=True) if id(e) in kept]
        full = await self.pipeline.enrich(site, full)
        results = await self.pipeline.commit(site, full)
        for tier, events in restricted.items():
            # Tier.NONE reaches no route: counted consent_denied, its orders kept in the ledger.
            results += await self.pipeline.commit(site, events, tier=tier)
        warnings = dropped + self.baseline.events(site, full, indexes, "events")
        return _answer(len(accepted), results, rejected, _dicts(warnings))

    def _events_of(self, doc: Any) -> tuple[list[Any], FieldError | None]:
        if not isinstance(doc, dict):
            return [], FieldError("", 'expected an object {"events": [...]}')
        unknown = [k for k in doc if k != "events"]
        if unknown:
            return [], FieldError(unknown[0], "unknown field")
        events = doc.get("events")
        if not isinstance(events, list):
            return [], FieldError("events", "expected a list of events")
        if not events:
            return [], FieldError("events", "empty")
        if len(events) > self.max_events:
            return [], FieldError("events", f"at most {self.max_events} events per request")
        return events, None


_JSON_TYPE: Final = ("Content-Type", "application/json; charset=utf-8")


def json_reply(status: int, body: Any, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """Return a JSON answer (compact UTF-8)."""
    return Reply(status, (_JSON_TYPE, *headers), dumps(body))


def error_reply(
    status: int,
    code: str,
    message: str,
    errors: Sequence[dict[str, str]] = (),
    headers: tuple[tuple[str, str], ...] = (),
) -> Reply:
    """Return the JSON error answer: {"error": code, "message": …, "errors": [{path, reason}]}."""
    body: dict[str, Any] = {"error": code, "message": message}
    if errors:
        body["errors"] = list(errors)
    return json_reply(status, body, headers)


_UNAUTHORIZED: Final = error_reply(
    401,
    "unauthorized",
    "missing or invalid API key (Authorization: Bearer <key>)",
    headers=(("WWW-Authenticate", 'Bearer realm="signalgate"'),),
)


@functools.lru_cache(maxsize=1024)
def _accepted(accepted: int, deduplicated: int) -> Reply:
    """The 202 of a request whose events were all accepted without warnings (the usual one)."""
    return json_reply(202, {"accepted": accepted, "deduplicated": deduplicated, "rejected": []})


def _answer(
    accepted: int,
    results: Sequence[AppendResult],
    rejected: list[dict[str, Any]],
    warnings: list[dict[str, str]],
) -> Reply:
    """The answer to a posted document: 202 (prebuilt when all is plain), or 422 if nothing."""
    deduplicated = sum(1 for r in results if r.created == 0 and r.deduplicated > 0)
    if accepted and not rejected and not warnings:
        return _accepted(accepted, deduplicated)
    body: dict[str, Any] = {
        "accepted": accepted,
        "deduplicated": deduplicated,
        "rejected": rejected,
    }
    if warnings:
        body["warnings"] = warnings
    if not accepted:
        body["error"] = "unprocessable"
        body["message"] = "no event was accepted"
        return json_reply(422, body)
    return json_reply(202, body)


def _bad_debug(problem: FieldError) -> Reply:
    return error_reply(400, "bad_request", "invalid debug header", [problem.as_dict()])


def _dicts(errors: Sequence[FieldError]) -> list[dict[str, str]]:
    return [e.as_dict() for e in errors]


WORKER_SLOT: Final = web.AppKey("worker_slot", int)
"""The worker's slot (0..N-1) under `signalgate run --workers N` (gateway/supervisor.py)."""


class Health:
    """Liveness and readiness."""

    def __init__(
        self,
        ping: Callable[[], Any],
        routes: Callable[[], Mapping[str, Mapping[str, object]]],
    ) -> None:
        self.ping = ping
        self.routes = routes

    async def healthz(self, request: web.Request) -> web.Response:
        """Return 200 while the process serves requests (and, under `run --workers N`, which
        worker answered: its slot and pid)."""
        slot = request.app.get(WORKER_SLOT)
        if slot is None:
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "ok", "worker": slot, "pid": os.getpid()})

    async def readyz(self, request: web.Request) -> web.Response:
        """Return 200 when the store is writable and no destination is paused, else 503."""
        problems: list[str] = []
        try:
            await self.ping()
        except StoreUnavailableError as exc:
            problems.append(str(exc))
        except Exception as exc:
            problems.append(f"store not writable: {type(exc).__name__}")
        routes = self.routes()
        degraded: list[str] = []
        for name, state in routes.items():
            if state.get("paused"):
                problems.append(f"{name} paused: {state.get('paused_reason')}")
            elif state.get("breaker") == "open":
                # The platform is down; events are still collected and wait: not unready.
                degraded.append(f"{name} circuit open: {state.get('breaker_reason')}")
        body = {
            "status": "ok" if not problems else "unavailable",
            "problems": problems,
            "degraded": degraded,
            "routes": routes,
        }
        return web.json_response(body, status=200 if not problems else 503)
