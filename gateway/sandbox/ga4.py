"""A local emulator of the GA4 Measurement Protocol (`/mp/collect` and `/debug/mp/collect`).

Written from the platform reference (shared platforms.md §4.1), not from our own mapper, so it is
an independent check of what the gateway sends. Like GA4, `POST /mp/collect` answers 204 with no
body whenever it got the request, also when it drops some or all of its events: a wrong
`api_secret` or measurement id, a missing or malformed `client_id`, more than 25 events, a bad
name, parameter or digest, an event older than 72 hours. Since the answer says nothing, the
sandbox keeps what it accepted (`recorder.accepted`, one entry per event with the request-level
fields as `_client_id`, `_user_data`, …) and what it dropped (`dropped`, one entry per event
with the reasons; `recorder.rejected` gets one entry per request that lost events).

`POST /debug/mp/collect` (the validation server) does not check `api_secret`, records nothing
as accepted (`validated` keeps what it saw) and answers 200 with
`{"validationMessages": [{"fieldPath", "description", "validationCode"}]}`; `fieldPath` names
the event as `events[<i>]…`.

Faults (the knobs every sandbox shares): `burst_429` answers 429 with Retry-After
(`retry_after`), `error_rate`/`down` answer `error_status`, `token_expired` answers 403 (a
revoked secret refused; the real service's answer to that is not documented), and
`reject_event_ids` drops the events whose `params.transaction_id` is listed. A body of 130 kB
or more is answered 413.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .base import Fault, SandboxBase, loads_strict, retry_after_header
from .values import is_int, is_ip, is_number

__all__ = [
    "GA4_SANDBOX",
    "GA4Sandbox",
    "create_app",
]

MAX_EVENTS = 25
MAX_PARAMS = 25
MAX_ITEMS = 200
MAX_VALUE = 100
LONG_VALUES = {"page_location": 1000, "page_referrer": 420, "page_title": 300}
MAX_BODY = 130 * 1024
MAX_AGE_MICROS = 72 * 3600 * 1_000_000
MAX_FUTURE_MICROS = 15 * 60 * 1_000_000
MIN_MICROS = 10**15  # a timestamp_micros below this is seconds or milliseconds
CLIENT_MAX_SIZE = 1024 * 1024

RESERVED_EVENTS = frozenset(
    {
        "ad_activeview",
        "ad_click",
        "ad_exposure",
        "ad_impression",
        "ad_query",
        "ad_reward",
        "adunit_exposure",
        "app_clear_data",
        "app_exception",
        "app_install",
        "app_remove",
        "app_store_refund",
        "app_update",
        "app_upgrade",
        "error",
        "first_open",
        "first_visit",
        "in_app_purchase",
        "os_update",
        "screen_view",
        "session_start",
        "user_engagement",
    }
)
RESERVED_EVENT_PREFIXES = ("dynamic_link_", "firebase_", "notification_", "ga_", "google_")
RESERVED_PARAM_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
RESERVED_PARAMS = frozenset({"firebase_conversion"})
TOP_LEVEL = frozenset(
    {
        "client_id",
        "user_id",
        "timestamp_micros",
        "user_properties",
        "user_data",
        "consent",
        "non_personalized_ads",
        "user_location",
        "ip_override",
        "device",
        "user_agent",
        "validation_behavior",
        "events",
    }
)
EVENT_KEYS = frozenset({"name", "params", "timestamp_micros"})
CONSENT_VALUES = frozenset({"GRANTED", "DENIED"})
HASHED_ADDRESS = frozenset({"sha256_first_name", "sha256_last_name", "sha256_street"})
PLAIN_ADDRESS = frozenset({"city", "region", "postal_code", "country"})

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
_MEASUREMENT_ID = re.compile(r"G-[A-Z0-9]{4,20}")
_CLIENT_ID = re.compile(r"[0-9]{1,20}\.[0-9]{1,20}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CURRENCY = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True, slots=True)
class Message:
    """One validation message: where, what, and GA4's code for it."""

    field_path: str
    description: str
    code: str

    def as_json(self) -> dict[str, str]:
        """Return the validation server's shape of the message."""
        return {
            "fieldPath": self.field_path,
            "description": self.description,
            "validationCode": self.code,
        }


class GA4Sandbox(SandboxBase):
    """An in-process emulator of the GA4 Measurement Protocol with fault injection."""

    page_title = "GA4 Measurement Protocol sandbox"

    def __init__(
        self,
        *,
        api_secrets: Collection[str] | None = None,
        measurement_ids: Collection[str] | None = None,
        clock: Callable[[], float] = time.time,
        seed: int = 0,
        max_batch: int = MAX_EVENTS,
    ) -> None:
        """Configure accepted secrets and measurement ids (None: any), clock, seed, batch cap."""
        super().__init__(access_tokens=api_secrets, clock=clock, seed=seed, max_batch=max_batch)
        self.measurement_ids = None if measurement_ids is None else frozenset(measurement_ids)
        self.dropped: list[dict[str, Any]] = []
        self.validated: list[dict[str, Any]] = []

    def reset(self) -> None:
        """Also forget what was dropped or validated."""
        super().reset()
        self.dropped.clear()
        self.validated.clear()

    def app(self) -> web.Application:
        """Return a fresh aiohttp application serving this sandbox's routes."""
        app = web.Application(client_max_size=CLIENT_MAX_SIZE)
        app[GA4_SANDBOX] = self
        self.add_control_routes(app)
        app.router.add_post("/mp/collect", self._handle_collect)
        app.router.add_post("/debug/mp/collect", self._handle_debug)
        return app

    # ------------------------------------------------------------------ the two endpoints

    async def _handle_collect(self, request: web.Request) -> web.Response:
        early, doc = await self._receive(request)
        if early is not None:
            return early
        now = self.clock()
        general = self._request_messages(request, doc, now, check_secret=True)
        per_event = _event_messages(doc, now, self.faults.reject_event_ids)
        events = doc.get("events") if isinstance(doc, dict) else None
        events = events if isinstance(events, list) else []
        lost: list[str] = []
        for index, event in enumerate(events):
            messages = general + per_event.get(index, [])
            if messages:
                self.dropped.append(
                    {
                        "index": index,
                        "name": event.get("name") if isinstance(event, dict) else None,
                        "transaction_id": _transaction_id(event),
                        "reasons": [m.as_json() for m in messages],
                        "_received_at": now,
                    }
                )
                lost.append(_transaction_id(event) or f"events[{index}]")
                continue
            self.recorder.accepted.append(_record(doc, event, request, now))
        if lost or (general and not events):
            self.recorder.rejected.append(
                {
                    "status": 204,
                    "dropped": lost,
                    "reasons": [m.as_json() for m in general][:5],
                    "_received_at": now,
                }
            )
        return web.Response(status=204)

    async def _handle_debug(self, request: web.Request) -> web.Response:
        early, doc = await self._receive(request)
        if early is not None:
            return early
        now = self.clock()
        messages = self._request_messages(request, doc, now, check_secret=False)
        for index_messages in _event_messages(doc, now, self.faults.reject_event_ids).values():
            messages.extend(index_messages)
        self.validated.append(
            {"body": doc, "messages": [m.as_json() for m in messages], "_received_at": now}
        )
        return web.json_response({"validationMessages": [m.as_json() for m in messages]})

    async def _receive(self, request: web.Request) -> tuple[web.Response | None, Any]:
        """Count, read and fault-check a request; return an early answer, or None and the body."""
        self.recorder.requests += 1
        raw = await request.read()
        fault = await self._injector.decide()
        doc = _try_loads(raw)
        ids = _transaction_ids(doc)
        if fault is not None:
            return self._answer_fault(fault, ids), doc
        if len(raw) >= MAX_BODY:
            self._reject(413, "body of 130 kB or more", ids)
            return web.Response(status=413, text="Request Entity Too Large"), doc
        return None, doc

    def _reject(self, status: int, reason: str, ids: list[str]) -> None:
        self.recorder.rejected.append(
            {"status": status, "reason": reason, "dropped": ids, "_received_at": self.clock()}
        )

    def _answer_fault(self, fault: Fault, ids: list[str]) -> web.Response:
        if fault is Fault.THROTTLED:
            self._reject(429, "rate limited", ids)
            headers = {"Retry-After": retry_after_header(self.faults.retry_after)}
            return web.Response(status=429, text="Too Many Requests", headers=headers)
        if fault is Fault.SERVER_ERROR:
            status = self.faults.error_status
            self._reject(status, "server error", ids)
            return web.Response(status=status, text="Server Error")
        self._reject(403, "api_secret revoked", ids)
        return web.Response(status=403, text="Forbidden")

    # ------------------------------------------------------------------ request-level checks

    def _request_messages(
        self, request: web.Request, doc: Any, now: float, *, check_secret: bool
    ) -> list[Message]:
        out: list[Message] = []
        measurement_id = request.query.get("measurement_id", "")
        if not _MEASUREMENT_ID.fullmatch(measurement_id) or (
            self.measurement_ids is not None and measurement_id not in self.measurement_ids
        ):
            out.append(Message("measurement_id", "Unknown measurement_id.", "VALUE_INVALID"))
        secret = request.query.get("api_secret", "")
        if check_secret and (not secret or not self.accepts_token(secret)):
            out.append(Message("api_secret", "Invalid api_secret.", "VALUE_INVALID"))
        if not isinstance(doc, dict):
            out.append(Message("", "The body must be a JSON object.", "VALUE_INVALID"))
            return out
        for key in sorted(set(doc) - TOP_LEVEL):
            out.append(Message(key, f"Unknown field {key}.", "VALUE_INVALID"))
        client_id = doc.get("client_id")
        if client_id is None:
            out.append(Message("client_id", "client_id is required.", "VALUE_REQUIRED"))
        elif not isinstance(client_id, str) or not _CLIENT_ID.fullmatch(client_id):
            out.append(
                Message("client_id", "client_id must be <random>.<seconds>.", "VALUE_INVALID")
            )
        user_id = doc.get("user_id")
        if user_id is not None and (not isinstance(user_id, str) or not 0 < len(user_id) <= 256):
            out.append(Message("user_id", "user_id must be 1-256 characters.", "VALUE_INVALID"))
        if "timestamp_micros" in doc:
            out.extend(_time_messages("timestamp_micros", doc["timestamp_micros"], now))
        out.extend(_consent_messages(doc.get("consent")))
        out.extend(_user_data_messages(doc.get("user_data")))
        ip = doc.get("ip_override")
        if ip is not None and not (isinstance(ip, str) and is_ip(ip)):
            out.append(Message("ip_override", "Not an IP address.", "VALUE_INVALID"))
        user_agent = doc.get("user_agent")
        if user_agent is not None and not isinstance(user_agent, str):
            out.append(Message("user_agent", "user_agent must be a string.", "VALUE_INVALID"))
        events = doc.get("events")
        if not isinstance(events, list) or not events:
            out.append(Message("events", "At least one event is required.", "VALUE_REQUIRED"))
        elif len(events) > self.max_batch:
            text = f"At most {self.max_batch} events per request."
            out.append(Message("events", text, "EXCEEDED_MAX_ENTITIES"))
        return out


# ---------------------------------------------------------------------- checks (pure)


def _time_messages(path: str, value: object, now: float) -> list[Message]:
    if not is_int(value) or not isinstance(value, int):
        return [Message(path, "timestamp_micros must be an integer.", "VALUE_INVALID")]
    if value < MIN_MICROS:
        return [Message(path, "timestamp_micros is in microseconds.", "VALUE_INVALID")]
    now_micros = int(now * 1_000_000)
    if value < now_micros - MAX_AGE_MICROS:
        return [Message(path, "Events older than 72 hours are dropped.", "VALUE_OUT_OF_BOUNDS")]
    if value > now_micros + MAX_FUTURE_MICROS:
        return [Message(path, "timestamp_micros is in the future.", "VALUE_OUT_OF_BOUNDS")]
    return []


def _consent_messages(consent: object) -> list[Message]:
    if consent is None:
        return []
    if not isinstance(consent, dict):
        return [Message("consent", "consent must be an object.", "VALUE_INVALID")]
    out: list[Message] = []
    for key, value in consent.items():
        if key not in ("ad_user_data", "ad_personalization"):
            out.append(Message(f"consent.{key}", "Unknown consent field.", "VALUE_INVALID"))
        elif value not in CONSENT_VALUES:
            out.append(Message(f"consent.{key}", "Must be GRANTED or DENIED.", "VALUE_INVALID"))
    return out


def _digest_list_messages(path: str, value: object) -> list[Message]:
    if not isinstance(value, list) or not value:
        return [Message(path, "Must be a non-empty array of digests.", "VALUE_INVALID")]
    if not all(isinstance(v, str) and _SHA256_HEX.fullmatch(v) for v in value):
        return [Message(path, "Must be SHA-256 hex (64 lower-case hex digits).", "VALUE_INVALID")]
    return []


def _user_data_messages(user_data: object) -> list[Message]:
    if user_data is None:
        return []
    if not isinstance(user_data, dict):
        return [Message("user_data", "user_data must be an object.", "VALUE_INVALID")]
    out: list[Message] = []
    for key, value in user_data.items():
        path = f"user_data.{key}"
        if key in ("sha256_email_address", "sha256_phone_number"):
            out.extend(_digest_list_messages(path, value))
        elif key == "address":
            out.extend(_address_messages(value))
        else:
            out.append(Message(path, "Unknown user_data field.", "VALUE_INVALID"))
    return out


def _address_messages(value: object) -> list[Message]:
    if not isinstance(value, list) or not value:
        return [Message("user_data.address", "Must be a non-empty array.", "VALUE_INVALID")]
    out: list[Message] = []
    for i, entry in enumerate(value):
        path = f"user_data.address[{i}]"
        if not isinstance(entry, dict) or not entry:
            out.append(Message(path, "Must be a non-empty object.", "VALUE_INVALID"))
            continue
        for key, item in entry.items():
            where = f"{path}.{key}"
            if key in HASHED_ADDRESS:
                if not isinstance(item, str) or not _SHA256_HEX.fullmatch(item):
                    out.append(Message(where, "Must be SHA-256 hex.", "VALUE_INVALID"))
            elif key in PLAIN_ADDRESS:
                if not isinstance(item, str) or not item or _SHA256_HEX.fullmatch(item):
                    out.append(Message(where, "Must be the plain value.", "VALUE_INVALID"))
            else:
                out.append(Message(where, "Unknown address field.", "VALUE_INVALID"))
    return out


def _event_messages(doc: object, now: float, reject: Collection[str]) -> dict[int, list[Message]]:
    """Event index → the messages about that event."""
    if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
        return {}
    out: dict[int, list[Message]] = {}
    for index, event in enumerate(doc["events"]):
        messages = _one_event_messages(f"events[{index}]", event, now, reject)
        if messages:
            out[index] = messages
    return out


def _one_event_messages(
    path: str, event: object, now: float, reject: Collection[str]
) -> list[Message]:
    if not isinstance(event, dict):
        return [Message(path, "Each event must be an object.", "VALUE_INVALID")]
    out = [
        Message(f"{path}.{key}", f"Unknown field {key}.", "VALUE_INVALID")
        for key in sorted(set(event) - EVENT_KEYS)
    ]
    name = event.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        out.append(Message(f"{path}.name", "Invalid event name.", "NAME_INVALID"))
    elif name in RESERVED_EVENTS or name.startswith(RESERVED_EVENT_PREFIXES):
        out.append(Message(f"{path}.name", f"{name} is a reserved name.", "NAME_RESERVED"))
    if "timestamp_micros" in event:  # else the request's, else the time of upload
        out.extend(_time_messages(f"{path}.timestamp_micros", event["timestamp_micros"], now))
    params = event.get("params", {})
    if not isinstance(params, dict):
        out.append(Message(f"{path}.params", "params must be an object.", "VALUE_INVALID"))
        return out
    out.extend(_params_messages(f"{path}.params", name, params))
    transaction_id = params.get("transaction_id")
    if isinstance(transaction_id, str) and transaction_id in reject:
        text = "Rejected by the sandbox (reject_event_ids)."
        out.append(Message(f"{path}.params.transaction_id", text, "VALUE_INVALID"))
    return out


def _params_messages(path: str, name: object, params: Mapping[str, Any]) -> list[Message]:
    out: list[Message] = []
    if len(params) > MAX_PARAMS:
        text = f"At most {MAX_PARAMS} parameters per event."
        out.append(Message(path, text, "EXCEEDED_MAX_ENTITIES"))
    for key, value in params.items():
        where = f"{path}.{key}"
        if key in RESERVED_PARAMS or key.startswith(RESERVED_PARAM_PREFIXES):
            out.append(Message(where, f"{key} is a reserved name.", "NAME_RESERVED"))
        elif not _NAME.fullmatch(key):
            out.append(Message(where, "Invalid parameter name.", "NAME_INVALID"))
        elif key == "items":
            out.extend(_items_messages(where, value))
        elif isinstance(value, str):
            if len(value) > LONG_VALUES.get(key, MAX_VALUE):
                out.append(Message(where, "Value too long.", "VALUE_OUT_OF_BOUNDS"))
        elif not is_number(value):
            out.append(Message(where, "Must be a string or a number.", "VALUE_INVALID"))
    currency = params.get("currency")
    if currency is not None and not (isinstance(currency, str) and _CURRENCY.fullmatch(currency)):
        out.append(Message(f"{path}.currency", "Must be ISO 4217.", "VALUE_INVALID"))
    if name == "purchase" and "value" in params and currency is None:
        text = "currency is required with value."
        out.append(Message(f"{path}.currency", text, "VALUE_REQUIRED"))
    if params.get("transaction_id") == "":
        text = "An empty transaction_id merges every purchase."
        out.append(Message(f"{path}.transaction_id", text, "VALUE_INVALID"))
    return out


def _items_messages(path: str, items: object) -> list[Message]:
    if not isinstance(items, list):
        return [Message(path, "items must be an array.", "VALUE_INVALID")]
    if len(items) > MAX_ITEMS:
        return [Message(path, f"At most {MAX_ITEMS} items.", "EXCEEDED_MAX_ENTITIES")]
    out: list[Message] = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        if not isinstance(item, dict):
            out.append(Message(where, "Each item must be an object.", "VALUE_INVALID"))
            continue
        ident = item.get("item_id", item.get("item_name"))
        if not isinstance(ident, str) or not 0 < len(ident) <= MAX_VALUE:
            out.append(Message(where, "item_id or item_name is required.", "VALUE_REQUIRED"))
        for key in ("price", "quantity"):
            if key in item and not is_number(item[key]):
                out.append(Message(f"{where}.{key}", "Must be a number.", "VALUE_INVALID"))
    return out


# ---------------------------------------------------------------------- recording


def _record(
    doc: Mapping[str, Any], event: Mapping[str, Any], request: web.Request, now: float
) -> dict[str, Any]:
    record = dict(event)
    for key in ("client_id", "user_id", "user_data", "consent", "ip_override", "user_agent"):
        if key in doc:
            record[f"_{key}"] = doc[key]
    record["_measurement_id"] = request.query.get("measurement_id")
    record["_received_at"] = now
    return record


def _transaction_id(event: object) -> str | None:
    if not isinstance(event, dict) or not isinstance(event.get("params"), dict):
        return None
    value = event["params"].get("transaction_id")
    return value if isinstance(value, str) else None


def _transaction_ids(doc: object) -> list[str]:
    if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
        return []
    return [t for t in (_transaction_id(e) for e in doc["events"]) if t is not None]


def _try_loads(raw: bytes) -> object:
    try:
        return loads_strict(raw)
    except (ValueError, UnicodeDecodeError):
        return None


GA4_SANDBOX = web.AppKey("ga4_sandbox", GA4Sandbox)


def create_app(**kwargs: Any) -> web.Application:
    """Build a `GA4Sandbox(**kwargs)` and return its app (sandbox at `app[GA4_SANDBOX]`)."""
    return GA4Sandbox(**kwargs).app()
