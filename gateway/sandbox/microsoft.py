"""A local emulator of Microsoft Advertising's UET Conversions API (`POST /v1/{tagId}/events`).

Written from the platform reference (shared platforms.md §8), not from our own mapper, so it
independently checks what the gateway sends: the Bearer token, the envelope (``data`` of 1 to
``max_batch`` events), and per event ``eventType`` (``pageLoad``/``custom``), ``eventTime`` in
seconds inside the 7-day window, ``eventSourceUrl`` for ``pageLoad``, ``eventName`` for
``custom``, ``adStorageConsent`` G/D, ``userData`` with at least one identifier, ``em``/``ph`` as
64-hex SHA-256, ``msclkid`` as the 32-hex click id, and ``customData`` types.

Answers use Microsoft's shape: ``{"eventsReceived": n, "traceId": …}`` and, on errors,
``"error": {"code", "message", "details": [{"index", "propertyName", "errorMessage",
"errorCode"}]}``. Bad events: with ``continueOnValidationError: true`` the valid events are
recorded and the answer (HTTP `partial_status`, 200 by default) lists the bad ones; without it
the request is refused with 400 and nothing is recorded. The detail codes are the sandbox's own
(Microsoft publishes no list); clients should rely on ``index``.

Faults (the shared knobs of `base.Faults`): ``burst_429`` answers 429 with Retry-After
(``retry_after``), ``error_rate``/``error_status``/``down`` a 5xx, ``token_expired`` a 401,
``reject_event_ids`` a detail naming that event, ``latency`` a delay.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from aiohttp import web

from .base import Fault, SandboxBase, read_json, retry_after_header
from .values import bearer_token, is_http_url, is_number, string_ids_under

__all__ = ["MICROSOFT_SANDBOX", "MicrosoftSandbox", "create_app"]

EVENT_TYPES = frozenset({"pageLoad", "custom"})
EVENT_KEYS = frozenset(
    {
        "eventType",
        "eventTime",
        "eventId",
        "eventName",
        "eventSourceUrl",
        "pageLoadId",
        "referrerUrl",
        "pageTitle",
        "keywords",
        "adStorageConsent",
        "userData",
        "customData",
    }
)
HASHED_KEYS = frozenset({"em", "ph"})
PLAIN_KEYS = frozenset(
    {"clientIpAddress", "clientUserAgent", "anonymousId", "externalId", "msclkid", "idfa", "gaid"}
)
IDENTIFIERS = frozenset({"em", "ph", "anonymousId", "externalId", "msclkid", "idfa", "gaid"})
"""userData keys that identify a user; an IP counts too (the user agent alone does not)."""
CUSTOM_STRINGS = frozenset(
    {"eventCategory", "eventLabel", "searchTerm", "transactionId", "ecommCategory"}
)
CUSTOM_NUMBERS = frozenset({"eventValue", "value", "ecommTotalValue"})
PAGE_TYPES = frozenset(
    {"home", "product", "category", "searchresults", "cart", "purchase", "other"}
)
MAX_AGE_SECONDS = 7 * 86_400
MAX_FUTURE_SECONDS = 5 * 60
MS_THRESHOLD = 100_000_000_000
CLIENT_MAX_SIZE = 1024 * 1024
"""Integrators document 1 MB per request (platforms.md §8)."""

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_MSCLKID = re.compile(r"[0-9a-fA-F]{32}")
_CURRENCY = re.compile(r"[A-Z]{3}")


class _Rejected(Exception):
    """Raised inside request handling to answer with a Microsoft error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class _Invalid(Exception):
    """One event's first problem."""

    def __init__(self, path: str, problem: str, code: str = "InvalidValue") -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem
        self.code = code


class MicrosoftSandbox(SandboxBase):
    """An in-process emulator of the UET Conversions API with fault injection and a recorder."""

    page_title = "Microsoft UET CAPI sandbox"

    def __init__(
        self,
        *,
        access_tokens: Collection[str] | None = None,
        clock: Callable[[], float] = time.time,
        seed: int = 0,
        max_batch: int = 1000,
        partial_status: int = 200,
    ) -> None:
        """Configure accepted tokens (None: any non-empty), the clock, PRNG seed, batch cap and
        the HTTP status of an answer that lists bad events beside ingested ones."""
        super().__init__(access_tokens=access_tokens, clock=clock, seed=seed, max_batch=max_batch)
        self.partial_status = partial_status
        self._traces = itertools.count(1)

    def app(self) -> web.Application:
        """Return a fresh aiohttp application serving this sandbox's routes."""
        app = web.Application(client_max_size=CLIENT_MAX_SIZE)
        app[MICROSOFT_SANDBOX] = self
        self.add_control_routes(app)
        app.router.add_post("/v1/{tag_id}/events", self._handle_events)
        return app

    # ------------------------------------------------------------------ the CAPI endpoint

    def _trace(self) -> str:
        return f"{next(self._traces):032x}"

    async def _handle_events(self, request: web.Request) -> web.Response:
        self.recorder.requests += 1
        tag_id = request.match_info["tag_id"]
        fault = await self._injector.decide()
        event_ids: list[str] = []
        try:
            raw = await _read(request)
            event_ids = string_ids_under(raw, "data", "eventId")
            if fault is not None:
                raise _fault_error(fault, self.faults.error_status)
            self._check_token(request)
            if not tag_id.isdigit():
                raise _Rejected(404, "TagNotFound", "No UET tag with this id.")
            data, keep_going = self._parse_envelope(raw)
        except _Rejected as rejected:
            return self._refuse(rejected, event_ids, tag_id)
        now = self.clock()
        details: list[dict[str, Any]] = []
        good: list[dict[str, Any]] = []
        for index, event in enumerate(data):
            try:
                self._validate_event(event, now)
            except _Invalid as invalid:
                details.append(
                    {
                        "index": index,
                        "propertyName": invalid.path,
                        "errorMessage": f"data[{index}].{invalid.path}: {invalid.problem}",
                        "errorCode": invalid.code,
                    }
                )
            else:
                good.append(event)
        trace = self._trace()
        if details and not keep_going:
            body = _error_body(0, "InvalidEvents", "Some events are invalid.", trace, details)
            self._note_rejected(400, body, event_ids, tag_id)
            return web.json_response(body, status=400)
        received_at = self.clock()
        for event in good:
            self.recorder.accepted.append({**event, "_tag_id": tag_id, "_received_at": received_at})
        if not details:
            return web.json_response({"eventsReceived": len(good), "traceId": trace})
        body = _error_body(len(good), "InvalidEvents", "Some events are invalid.", trace, details)
        bad_ids = [_event_id(data[d["index"]]) for d in details]
        self._note_rejected(self.partial_status, body, [i for i in bad_ids if i], tag_id)
        return web.json_response(body, status=self.partial_status)

    def _refuse(self, rejected: _Rejected, event_ids: list[str], tag_id: str) -> web.Response:
        body = _error_body(0, rejected.code, rejected.message, self._trace(), [])
        headers: dict[str, str] = {}
        if rejected.status == 429:
            headers["Retry-After"] = retry_after_header(self.faults.retry_after)
        self._note_rejected(rejected.status, body, event_ids, tag_id)
        return web.json_response(body, status=rejected.status, headers=headers)

    def _note_rejected(
        self, status: int, body: dict[str, Any], event_ids: list[str], tag_id: str
    ) -> None:
        self.recorder.rejected.append(
            {
                "status": status,
                "body": body,
                "event_ids": event_ids,
                "_tag_id": tag_id,
                "_received_at": self.clock(),
            }
        )

    def _check_token(self, request: web.Request) -> None:
        token = bearer_token(request.headers.get("Authorization", ""))
        if not token:
            raise _Rejected(401, "Unauthorized", "Missing bearer token.")
        if not self.accepts_token(token):
            raise _Rejected(401, "Unauthorized", "Invalid or expired token.")

    def _parse_envelope(self, raw: object) -> tuple[list[dict[str, Any]], bool]:
        if not isinstance(raw, dict):
            raise _Rejected(400, "InvalidRequest", "The request body must be a JSON object.")
        unknown = sorted(set(raw) - {"data", "continueOnValidationError", "dataProvider"})
        if unknown:
            raise _Rejected(400, "InvalidRequest", f"Unknown property {unknown[0]!r}.")
        keep_going = raw.get("continueOnValidationError", False)
        if not isinstance(keep_going, bool):
            raise _Rejected(400, "InvalidRequest", "continueOnValidationError must be a boolean.")
        data = raw.get("data")
        if not isinstance(data, list) or not data:
            raise _Rejected(400, "InvalidRequest", "data must be a non-empty array of events.")
        if len(data) > self.max_batch:
            raise _Rejected(
                400,
                "TooManyEvents",
                f"data holds {len(data)} events; at most {self.max_batch} are allowed.",
            )
        if not all(isinstance(item, dict) for item in data):
            raise _Rejected(400, "InvalidRequest", "Every event must be a JSON object.")
        return data, keep_going

    # ------------------------------------------------------------------ event validation

    def _validate_event(self, event: Mapping[str, object], now: float) -> None:
        unknown = sorted(set(event) - EVENT_KEYS)
        if unknown:
            raise _Invalid(unknown[0], "unknown property", "UnknownProperty")
        kind = event.get("eventType")
        if kind not in EVENT_TYPES:
            raise _Invalid("eventType", "required, pageLoad or custom", "Required")
        _check_time(event.get("eventTime"), now)
        for key in ("eventId", "pageLoadId", "pageTitle", "keywords"):
            value = event.get(key)
            if value is not None and not (isinstance(value, str) and value.strip()):
                raise _Invalid(key, "must be a non-empty string")
        name = event.get("eventName")
        if kind == "custom" and not (isinstance(name, str) and name.strip()):
            raise _Invalid("eventName", "required for custom events", "Required")
        if name is not None and not isinstance(name, str):
            raise _Invalid("eventName", "must be a string")
        url = event.get("eventSourceUrl")
        if kind == "pageLoad" and url is None:
            raise _Invalid("eventSourceUrl", "required for pageLoad events", "Required")
        for key in ("eventSourceUrl", "referrerUrl"):
            if event.get(key) is not None and not is_http_url(event.get(key)):
                raise _Invalid(key, "must be an absolute http(s) URL")
        consent = event.get("adStorageConsent")
        if consent is not None and consent not in ("G", "D"):
            raise _Invalid("adStorageConsent", "must be G or D")
        _check_user_data(event.get("userData"))
        _check_custom_data(event.get("customData"))
        event_id = event.get("eventId")
        if isinstance(event_id, str) and event_id in self.faults.reject_event_ids:
            raise _Invalid("eventId", "rejected by the sandbox (reject_event_ids)", "Rejected")


def _error_body(
    received: int, code: str, message: str, trace: str, details: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "eventsReceived": received,
        "error": {"code": code, "message": message, "details": details},
        "traceId": trace,
    }


def _fault_error(fault: Fault, error_status: int) -> _Rejected:
    if fault is Fault.THROTTLED:
        return _Rejected(429, "TooManyRequests", "Too many requests; retry later.")
    if fault is Fault.SERVER_ERROR:
        return _Rejected(error_status, "InternalError", "Internal error; retry the request.")
    return _Rejected(401, "Unauthorized", "The token has expired.")


def _check_time(value: object, now: float) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise _Invalid("eventTime", "required, a positive Unix time in seconds", "Required")
    if value >= MS_THRESHOLD:
        raise _Invalid("eventTime", "looks like milliseconds; send seconds")
    if value > now + MAX_FUTURE_SECONDS:
        raise _Invalid("eventTime", "is in the future")
    if value < now - MAX_AGE_SECONDS:
        raise _Invalid("eventTime", "is more than 7 days old", "EventTooOld")


def _check_user_data(user_data: object) -> None:
    if not isinstance(user_data, dict):
        raise _Invalid("userData", "required, an object", "Required")
    present = {k for k, v in user_data.items() if v not in (None, "")}
    unknown = sorted(present - HASHED_KEYS - PLAIN_KEYS)
    if unknown:
        raise _Invalid(f"userData.{unknown[0]}", "unknown property", "UnknownProperty")
    for key in sorted(present):
        if not isinstance(user_data[key], str) or not user_data[key].strip():
            raise _Invalid(f"userData.{key}", "must be a non-empty string")
    for key in sorted(present & HASHED_KEYS):
        if _SHA256_HEX.fullmatch(user_data[key]) is None:
            raise _Invalid(
                f"userData.{key}", "must be SHA-256 hashed (64 lowercase hex)", "NotHashed"
            )
    if "msclkid" in present and _MSCLKID.fullmatch(user_data["msclkid"]) is None:
        raise _Invalid("userData.msclkid", "must be the 32-hex click id, as received")
    if "clientIpAddress" in present:
        try:
            ipaddress.ip_address(user_data["clientIpAddress"])
        except ValueError:
            raise _Invalid("userData.clientIpAddress", "must be an IPv4 or IPv6 address") from None
    if not (present & IDENTIFIERS or "clientIpAddress" in present):
        raise _Invalid("userData", "needs at least one user identifier", "MissingIdentifier")


def _check_custom_data(custom: object) -> None:
    if custom is None:
        return
    if not isinstance(custom, dict):
        raise _Invalid("customData", "must be an object")
    known = CUSTOM_STRINGS | CUSTOM_NUMBERS | {"currency", "itemIds", "pageType", "items"}
    unknown = sorted(set(custom) - known - {"hotelData"})
    if unknown:
        raise _Invalid(f"customData.{unknown[0]}", "unknown property", "UnknownProperty")
    for key in sorted(CUSTOM_STRINGS & set(custom)):
        if not isinstance(custom[key], str):
            raise _Invalid(f"customData.{key}", "must be a string")
    for key in sorted(CUSTOM_NUMBERS & set(custom)):
        if not is_number(custom[key]):
            raise _Invalid(f"customData.{key}", "must be a number")
    currency = custom.get("currency")
    if currency is not None and not (isinstance(currency, str) and _CURRENCY.fullmatch(currency)):
        raise _Invalid("customData.currency", "must be an upper-case ISO 4217 code")
    page_type = custom.get("pageType")
    if page_type is not None and page_type not in PAGE_TYPES:
        raise _Invalid("customData.pageType", f"must be one of {', '.join(sorted(PAGE_TYPES))}")
    ids = custom.get("itemIds")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
        raise _Invalid("customData.itemIds", "must be an array of strings")
    items = custom.get("items")
    if items is None:
        return
    if not isinstance(items, list):
        raise _Invalid("customData.items", "must be an array of objects")
    for position, item in enumerate(items):
        path = f"customData.items[{position}]"
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise _Invalid(path, "must be an object with a string id")
        if set(item) - {"id", "name", "price", "quantity"}:
            raise _Invalid(path, "only id, name, price and quantity are allowed")
        if item.get("price") is not None and not is_number(item["price"]):
            raise _Invalid(f"{path}.price", "must be a number")
        quantity = item.get("quantity")
        if quantity is not None and (not isinstance(quantity, int) or isinstance(quantity, bool)):
            raise _Invalid(f"{path}.quantity", "must be an integer")


async def _read(request: web.Request) -> object:
    return await read_json(
        request,
        too_large=lambda: _Rejected(
            413, "PayloadTooLarge", f"The request body exceeds {CLIENT_MAX_SIZE} bytes."
        ),
        invalid=lambda: _Rejected(400, "InvalidRequest", "The request body is not valid JSON."),
    )


def _event_id(event: object) -> str | None:
    if isinstance(event, dict) and isinstance(event.get("eventId"), str):
        return str(event["eventId"])
    return None


MICROSOFT_SANDBOX = web.AppKey("microsoft_sandbox", MicrosoftSandbox)


def create_app(**kwargs: Any) -> web.Application:
    """Build a `MicrosoftSandbox(**kwargs)` and return its app (at `app[MICROSOFT_SANDBOX]`)."""
    return MicrosoftSandbox(**kwargs).app()
