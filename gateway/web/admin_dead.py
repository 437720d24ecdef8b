"""Dead letters for operators: list, replay, resume (admin token; README "Dead letters").

* ``GET /v1/admin/dead?route=&reason=&since=&limit=&after=``: dead letters in id order with the
  body sent for each event and the platform's answer; ``next_after`` pages on.
* ``POST /v1/admin/replay``: ``{"route", "ids": [...]}`` or ``{"route", "all": true,
  "reason"?, "after"?, "limit"?}`` makes dead letters pending again; the route's worker then
  delivers them like any new row. ``all`` works in pages: the answer's ``last_id`` is the next
  call's ``after`` and ``remaining`` says how many are left, so a row that dies again during a
  long replay is not replayed twice by it. Replaying to a paused route does not resume it (the
  pause means credentials were refused; sending again would only be refused again): the rows
  wait, and the answer says ``paused`` with the reason so the operator resumes deliberately.
* ``POST /v1/admin/resume``: ``{"route"}`` lifts a credentials pause now and makes every row
  the pause held back due at once. The resume is recorded in the store first (`resume_route`):
  the route's workers in the other processes sharing it (`run --workers N`, replicas) lift
  their pause within seconds (gateway/delivery/resuming.py). A store that cannot record it
  answers 503 and nothing is resumed.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from aiohttp import web

from gateway.core.secret import Secret
from gateway.store.availability import RETRY_AFTER_SECONDS
from gateway.store.base import (
    NOT_REPLAYABLE,
    DeadLetter,
    DeadLetterStore,
    DeadQuery,
    DeadReason,
    ReplaySelection,
    Store,
)
from gateway.web.admin import admin_denied
from gateway.web.middleware import BodyError, error_response, read_json_body

MAX_PAGE: Final = 500
"""Most dead letters one listing page returns."""
MAX_REPLAY: Final = 1000
"""Most ids (or rows of an `all` page) one replay call takes."""
DEFAULT_REPLAY_PAGE: Final = 500
MAX_BODY: Final = 65_536
_REASONS: Final = tuple(r.value for r in DeadReason)

log = logging.getLogger("signalgate.admin")

Errors = list[dict[str, str]]


class Pausable(Protocol):
    """What these handlers need of a route's delivery worker (gateway.delivery.worker)."""

    @property
    def paused(self) -> bool: ...

    @property
    def paused_reason(self) -> str | None: ...

    def resume(self) -> str | None: ...


class DeadStore(Store, DeadLetterStore, Protocol):
    """The store operations the dead-letter surfaces use."""


class ResumeNotRecordedError(Exception):
    """The store could not record a resume: nothing was resumed (`resume_route`)."""


@dataclass(frozen=True, slots=True)
class Resumed:
    """What `resume_route` did: the pause's reason (None: it was not paused here) and the rows
    it made due."""

    reason: str | None
    released: int


async def resume_route(store: Store, worker: Pausable, route: str, now: float) -> Resumed:
    """Resume `route` everywhere: record the resume in the store (`Store.lift_pause`: the
    route's workers in every other process sharing it lift their pause from it), then lift this
    process's worker's pause and make the rows held back due now.

    Raises ResumeNotRecordedError, with nothing resumed, when the store cannot record it: a
    resume that only reached this process would say it worked while other workers stay paused.
    """
    try:
        await store.lift_pause(route, now)
    except Exception as exc:
        log.warning(
            "Resume not recorded: the store failed.",
            extra={"route": route, "error": type(exc).__name__},
        )
        raise ResumeNotRecordedError(route) from exc
    reason = worker.resume()
    return Resumed(reason, await store.release_waiting(route, now))


class DeadLetters:
    """Handlers of /v1/admin/dead, /v1/admin/replay and /v1/admin/resume."""

    def __init__(
        self,
        store: DeadStore,
        token: Secret | None,
        workers: Mapping[str, Pausable],
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.token = token
        self.workers = workers
        """Route → its worker (filled when delivery starts); the configured routes."""
        self.clock = clock

    async def dead(self, request: web.Request) -> web.Response:
        """Return one page of dead letters matching the query's filters."""
        denied = admin_denied(request, self.token)
        if denied is not None:
            return denied
        query, errors = parse_query(request.query)
        if query is None:
            return error_response(400, "bad_request", "invalid dead-letter query", errors)
        page = await self.store.dead_page(query)
        return web.json_response(
            {"dead": [letter_json(d) for d in page.letters], "next_after": page.next_after}
        )

    async def replay(self, request: web.Request) -> web.Response:
        """Make the chosen dead letters of one route pending again; answer the counts."""
        denied = admin_denied(request, self.token)
        if denied is not None:
            return denied
        try:
            doc = await read_json_body(request, MAX_BODY)
        except BodyError as exc:
            return error_response(exc.status, exc.code, exc.reason)
        selection, errors = parse_replay(doc)
        if selection is None:
            return error_response(400, "bad_request", "invalid replay request", errors)
        worker = self.workers.get(selection.route)
        if worker is None:
            return _unknown_route()
        result = await self.store.replay(selection, self.clock())
        return web.json_response(
            {
                "route": selection.route,
                "replayed": result.replayed,
                "skipped": result.skipped,
                "remaining": result.remaining,
                "last_id": result.last_id,
                "paused": worker.paused,
                "paused_reason": worker.paused_reason if worker.paused else None,
            }
        )

    async def resume(self, request: web.Request) -> web.Response:
        """Lift a route's pause and make the rows it held back due now."""
        denied = admin_denied(request, self.token)
        if denied is not None:
            return denied
        try:
            doc = await read_json_body(request, MAX_BODY)
        except BodyError as exc:
            return error_response(exc.status, exc.code, exc.reason)
        route, errors = _route_field(doc)
        if route is None:
            return error_response(400, "bad_request", "invalid resume request", errors)
        worker = self.workers.get(route)
        if worker is None:
            return _unknown_route()
        try:
            done = await resume_route(self.store, worker, route, self.clock())
        except ResumeNotRecordedError:
            return error_response(
                503,
                "store_unavailable",
                "the store could not record the resume: nothing was resumed, try again",
                [{"path": "route", "reason": "resume not recorded for the other workers"}],
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        return web.json_response(
            {
                "route": route,
                "was_paused": done.reason is not None,
                "paused_reason": done.reason,
                "released": done.released,
            }
        )


def _unknown_route() -> web.Response:
    return error_response(
        404,
        "not_found",
        "no such route",
        [{"path": "route", "reason": "not a configured <site>:<destination> route"}],
    )


def parse_query(params: Mapping[str, str]) -> tuple[DeadQuery | None, Errors]:
    """Return the listing query from URL parameters, or None and what is wrong with them."""
    errors: Errors = []
    route = params.get("route") or None
    if route is not None and len(route) > 200:
        errors.append({"path": "route", "reason": "at most 200 characters"})
    reason = params.get("reason") or None
    if reason is not None and reason not in _REASONS:
        errors.append({"path": "reason", "reason": "expected one of " + ", ".join(_REASONS)})
    since: float | None = None
    if params.get("since"):
        since = _time(params["since"])
        if since is None:
            errors.append(
                {"path": "since", "reason": "expected Unix seconds or an ISO 8601 date-time"}
            )
    limit = _int(params.get("limit", "50"), 1, MAX_PAGE)
    if limit is None:
        errors.append({"path": "limit", "reason": f"expected an integer from 1 to {MAX_PAGE}"})
    after = _int(params.get("after", "0"), 0, 2**62)
    if after is None:
        errors.append({"path": "after", "reason": "expected a non-negative integer (an id)"})
    if errors or limit is None or after is None:
        return None, errors
    return DeadQuery(route=route, reason=reason, since=since, after=after, limit=limit), []


def parse_replay(doc: Any) -> tuple[ReplaySelection | None, Errors]:
    """Return the replay selection of a request body, or None and what is wrong with it."""
    route, errors = _route_field(doc)
    if not isinstance(doc, dict):
        return None, errors
    known = {"route", "ids", "all", "reason", "after", "limit"}
    errors += [{"path": k, "reason": "unknown field"} for k in doc if k not in known]
    ids = doc.get("ids")
    every = doc.get("all")
    if every is not None and every is not True:
        errors.append({"path": "all", "reason": "expected true"})
    if (ids is None) == (every is None):
        errors.append({"path": "", "reason": 'give either "ids" or "all": true'})
    picked: tuple[int, ...] | None = None
    if ids is not None:
        if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_REPLAY:
            errors.append({"path": "ids", "reason": f"expected 1 to {MAX_REPLAY} ids"})
        else:
            bad = [i for i, v in enumerate(ids) if not _is_id(v)]
            errors += [{"path": f"ids[{i}]", "reason": "expected a positive integer"} for i in bad]
            picked = tuple(ids) if not bad else None
        for key in ("after", "limit"):
            if key in doc:
                errors.append({"path": key, "reason": 'only with "all": true'})
    reason = doc.get("reason")
    if reason is not None and reason not in _REASONS:
        errors.append({"path": "reason", "reason": "expected one of " + ", ".join(_REASONS)})
    elif reason in NOT_REPLAYABLE:
        errors.append({"path": "reason", "reason": f"{reason} dead letters are never replayed"})
    after = doc.get("after", 0)
    if not (_is_id(after) or (type(after) is int and after == 0)):
        errors.append({"path": "after", "reason": "expected a non-negative integer (an id)"})
    limit = doc.get("limit", DEFAULT_REPLAY_PAGE)
    if not _is_id(limit) or limit > MAX_REPLAY:
        errors.append({"path": "limit", "reason": f"expected an integer from 1 to {MAX_REPLAY}"})
    if errors or route is None:
        return None, errors
    return ReplaySelection(
        route=route,
        ids=picked,
        reason=reason,
        after=after,
        limit=len(picked) if picked is not None else limit,
    ), []


def _route_field(doc: Any) -> tuple[str | None, Errors]:
    if not isinstance(doc, dict):
        return None, [{"path": "", "reason": "expected a JSON object"}]
    route = doc.get("route")
    if not isinstance(route, str) or not 0 < len(route) <= 200:
        return None, [{"path": "route", "reason": "required: <site>:<destination>"}]
    return route, []


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**62


def _int(raw: str, low: int, high: int) -> int | None:
    if raw.isascii() and raw.isdigit() and len(raw) <= 19 and low <= int(raw) <= high:
        return int(raw)
    return None


def _time(raw: str) -> float | None:
    """Unix seconds, or an ISO 8601 date-time (UTC when it names no offset)."""
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = datetime.fromisoformat(raw)
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def letter_json(letter: DeadLetter) -> dict[str, Any]:
    """Return one dead letter as the listing shows it."""
    info = letter.info
    code, _, detail = (info.reason or "").partition(":")
    evidence = letter.evidence
    answer: dict[str, Any] | None = None
    payload: Any = None
    if evidence is not None:
        answer = {"status": evidence.status, "error": evidence.answer}
        if evidence.payload is not None:
            try:
                payload = json.loads(evidence.payload)
            except (UnicodeDecodeError, ValueError):  # cut at MAX_PAYLOAD, or not JSON
                payload = evidence.payload.decode("utf-8", "replace")
    return {
        "id": info.id,
        "route": info.route,
        "event": info.event_name,
        "event_id": info.event_id,
        "event_time": letter.event_time,
        "attempts": info.attempts,
        "reason": code,
        "detail": detail.strip(),
        "dead_at": info.updated_at,
        "replayable": code not in NOT_REPLAYABLE,
        "sent": evidence is not None and evidence.status is not None,
        "answer": answer,
        "payload": payload,
    }
