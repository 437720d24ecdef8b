"""GA4 Measurement Protocol: settings, request building and answer classification.

Facts from ../shared/platforms.md §4.1 (endpoint, validation server, answers, limits) and
pitfalls 7, 18, 19, 30; the mapping of one event is in `gateway.destinations.ga4.mapping`.

Decisions (README "GA4 Measurement Protocol"):

* Backend events only: the Measurement Protocol does not deduplicate against the browser's own
  GA4 hit (GA4 counts both), so events that came from a browser (`channel` "loader" or "pixel",
  e.g. a mirror of a proxied `/g/collect` hit) are refused with that reason.
* `client_id` is required (web stream): an event without the visitor's `_ga` client id
  (`user.click_ids.ga`) is dead-lettered. No `user_id` is sent: the gateway keeps only a digest
  of the external id, and a digest is not the id the site's tag reports as user_id.
* Answers: GA4 answers 2xx even when it drops a malformed event, so every rule it applies is
  checked before sending (`validate`). Google says a non-2xx answer means "fix the request, do
  not resend it"; that holds for 4xx (permanent; the batch is bisected so a body over 130 kB
  still gets its events through), while 429, 408 and 5xx are the server's own trouble and are
  retried after Retry-After (a purchase resent twice is still deduplicated by
  `transaction_id`). 401/403 pause the route (secret or stream refused).
* Test mode (`test_mode`, or an event's own test code) sends to `/debug/mp/collect` with
  `validation_behavior: ENFORCE_RECOMMENDATIONS`: nothing is recorded there, and each event a
  `validationMessages` entry names becomes a permanent `invalid_field` dead letter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

import httpx
import orjson

from gateway.core.event import Event
from gateway.core.secret import Secret
from gateway.destinations.base import BatchVerdict, Delivered, Outcome, Permanent, Retry
from gateway.destinations.common import (
    Configured,
    json_object,
    max_batch_setting,
    past_window,
    post_json,
    reason_text,
    setting,
    status_verdict,
)
from gateway.destinations.ga4 import mapping
from gateway.store.base import DeadReason

BACKEND_CHANNEL: Final = "api"
DEBUG: Final = "debug"
"""Batch-key prefix of events for the validation server."""

_EVENT_INDEX_RE: Final = re.compile(r"events\[(\d+)\]")
_PAUSED: Final = {
    401: "GA4 refused the api_secret or measurement_id",
    403: "GA4 refused the api_secret or measurement_id",
}


@dataclass(frozen=True, slots=True)
class GA4Settings:
    """`[sites.destinations.ga4]`: one GA4 web data stream and its Measurement Protocol secret."""

    measurement_id: str = setting(
        "Measurement id of the web data stream (Admin → Data streams), e.g. G-ABC123XYZ9.",
        pattern=r"G-[A-Z0-9]{4,20}",
        expected="G- followed by 4-20 capital letters or digits",
    )
    api_secret: Secret = setting(
        "Measurement Protocol API secret of that stream (stream → Measurement Protocol API"
        " secrets), a secret."
    )
    api_base: str = field(
        default="https://www.google-analytics.com",
        metadata={
            "help": "Measurement Protocol base URL; https://region1.google-analytics.com collects"
            " in the EU (point at the sandbox in tests).",
            "url": True,
        },
    )
    test_mode: bool = field(
        default=False,
        metadata={
            "help": "Send to /debug/mp/collect: GA4 validates each event and records nothing."
        },
    )
    max_batch: int = max_batch_setting("GA4", mapping.MAX_EVENTS, default=mapping.MAX_EVENTS)


class GA4(Configured[GA4Settings]):
    """GA4 Measurement Protocol destination (web stream)."""

    name: ClassVar[str] = "ga4"
    hash_rules: ClassVar[str] = mapping.RULES
    identifier_keys: ClassVar[frozenset[str]] = mapping.IDENTIFIER_KEYS

    def __init__(self, settings: GA4Settings) -> None:
        super().__init__(settings)
        base = settings.api_base.rstrip("/")
        self.url = f"{base}/mp/collect"
        self.debug_url = f"{base}/debug/mp/collect"
        query = {"measurement_id": settings.measurement_id, "api_secret": settings.api_secret.value}
        # Parsed once: httpx parses a URL string and merges its params on every request.
        self._collect = httpx.URL(self.url, params=query)
        self._debug_collect = httpx.URL(self.debug_url, params=query)

    def is_debug(self, event: Event) -> bool:
        """Return whether the event goes to the validation server."""
        return self.settings.test_mode or bool(event.test_code)

    def batch_key(self, event: Event) -> str:
        """Return the endpoint and the request-level fields: one request carries one user."""
        client = mapping.client_id(event) or ""
        doc = mapping.head(event, client)
        try:  # a key only (never sent): orjson's bytes need not match the stdlib's
            head = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS).decode()
        except orjson.JSONEncodeError:  # e.g. a lone surrogate in the user agent
            head = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return f"{DEBUG if self.is_debug(event) else ''}|{head}"

    def too_old(self, event: Event, now: float) -> bool:
        """Return whether the event is (nearly) older than GA4's 72 hours."""
        return past_window(event.time, now, mapping.WINDOW)

    def validate(self, event: Event) -> str | None:
        """Return why GA4 would drop (or must not get) the event, or None."""
        if event.channel != BACKEND_CHANNEL:
            return (
                f"a browser event (channel {event.channel}): GA4's own tag counts it and the"
                " Measurement Protocol does not deduplicate, so GA4 gets backend events only"
            )
        problem = mapping.name_problem(mapping.event_name(event))
        if problem is not None:
            return problem
        if mapping.client_id(event) is None:
            return (
                "no GA client id: a GA4 web stream needs client_id (.user.click_ids.ga, the _ga"
                " cookie's <random>.<seconds>)"
            )
        return mapping.params_problem(event)

    def build_request(self, events: Sequence[Event]) -> httpx.Request:
        """Return one POST of the events of one user; the secret travels in the query."""
        first = events[0]
        doc = mapping.head(first, mapping.client_id(first) or "")
        debug = self.is_debug(first)
        if debug:
            doc["validation_behavior"] = "ENFORCE_RECOMMENDATIONS"
        doc["events"] = [mapping.event_body(e) for e in events]
        return post_json(self._debug_collect if debug else self._collect, doc)

    def classify(
        self, events: Sequence[Event], response: httpx.Response, now: float
    ) -> BatchVerdict:
        """Map GA4's answer: see the module doc for the rules."""
        status = response.status_code
        message = f"HTTP {status}"
        decided = status_verdict(response, now, message, _PAUSED)
        if decided is not None:
            return decided
        if not 200 <= status < 300:
            detail = f"{message}: GA4 refused the request (Google: fix it, do not resend it)"
            return BatchVerdict(Permanent(DeadReason.PLATFORM_REJECTED, detail), bisect=True)
        if not events or not self.is_debug(events[0]):
            return BatchVerdict(Delivered())
        return _validation_verdict(events, response)


@dataclass(frozen=True, slots=True)
class _Message:
    index: int | None
    text: str


def _validation_verdict(events: Sequence[Event], response: httpx.Response) -> BatchVerdict:
    """Per-event outcomes from the validation server's `validationMessages`."""
    body = json_object(response)
    found = None if body is None else body.get("validationMessages")
    if not isinstance(found, list):
        # Not the validation server's answer (a proxy page?): nothing was recorded, resend.
        return BatchVerdict(Retry(f"HTTP {response.status_code}: no validationMessages"))
    messages = [m for m in (_message(raw) for raw in found) if m is not None]
    if not messages:
        return BatchVerdict(Delivered())
    everyone = [m.text for m in messages if m.index is None or m.index >= len(events)]
    outcomes: list[Outcome] = []
    for i in range(len(events)):
        texts = everyone + [m.text for m in messages if m.index == i]
        if texts:
            detail = reason_text(["GA4 validation"], "; ".join(texts))
            outcomes.append(Permanent(DeadReason.INVALID_FIELD, detail))
        else:
            outcomes.append(Delivered())
    return BatchVerdict(Delivered(), per_event=tuple(outcomes))


def _message(raw: Any) -> _Message | None:
    if not isinstance(raw, dict):
        return None
    path = raw.get("fieldPath")
    path = path if isinstance(path, str) else ""
    code = raw.get("validationCode")
    description = raw.get("description")
    parts = [p for p in (code, path) if isinstance(p, str) and p]
    text = " ".join(parts)
    if isinstance(description, str) and description:
        text = f"{text}: {description}" if text else description
    match = _EVENT_INDEX_RE.search(path)
    return _Message(int(match.group(1)) if match else None, text or "validation message")
