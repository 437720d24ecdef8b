"""A local emulator of Snap's Conversions API v3 (`/v3/{pixel_id}/events` and `/events/validate`).

Written from the platform reference (shared platforms.md §3 and Snap's v3 OpenAPI answer shape),
not from our own mapper, so it independently checks what the gateway sends. Like the Meta
sandbox it validates each request as a whole: the first bad event rejects the request with HTTP
400 and nothing is recorded. Answers use Snap's shape: ``{"status": "VALID", "reason": …}`` on
success; ``{"status": "INVALID", "reason": …}`` for request-level problems; and
``{"status": "INVALID", "event": <index>, "errors": {"codes": […], "error_msgs": […]}}`` when one
event is at fault. Snap publishes no list of error codes: the codes here (``INVALID_FIELD``,
``EVENT_TOO_OLD``, ``NOT_HASHED``, …) are the sandbox's own; clients should rely on ``event``.

Faults (the shared knobs of `base.Faults`): ``burst_429`` answers 429 *without* Retry-After (Snap
sends none, §3.1; the ``retry_after`` knob is ignored), ``error_rate``/``error_status`` a 5xx,
``token_expired`` a 401, ``reject_event_ids`` a 400 naming that event, ``latency`` a delay.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from aiohttp import web

from .base import Fault, SandboxBase, read_json
from .values import bearer_token, is_http_url, is_int, is_number, string_ids_under

__all__ = ["ACTION_SOURCES", "SNAP_EVENTS", "SNAP_SANDBOX", "SnapSandbox", "create_app"]

SNAP_EVENTS = frozenset(
    {
        "PAGE_VIEW",
        "VIEW_CONTENT",
        "LIST_VIEW",
        "SEARCH",
        "ADD_CART",
        "ADD_TO_WISHLIST",
        "START_CHECKOUT",
        "ADD_BILLING",
        "PURCHASE",
        "SIGN_UP",
        "SUBSCRIBE",
        "START_TRIAL",
        "SAVE",
        "SHARE",
        "INVITE",
        "LOGIN",
        "RESERVE",
        "RATE",
        "COMPLETE_TUTORIAL",
        "LEVEL_COMPLETE",
        "ACHIEVEMENT_UNLOCKED",
        "SPENT_CREDITS",
        "AD_CLICK",
        "AD_VIEW",
        "APP_OPEN",
        "APP_INSTALL",
        "CUSTOM_EVENT_1",
        "CUSTOM_EVENT_2",
        "CUSTOM_EVENT_3",
        "CUSTOM_EVENT_4",
        "CUSTOM_EVENT_5",
    }
)
ACTION_SOURCES = frozenset({"WEB", "MOBILE_APP", "OFFLINE"})
HASHED_KEYS = frozenset(
    {"em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id"}
)
PLAIN_KEYS = frozenset(
    {
        "client_ip_address",
        "client_user_agent",
        "sc_click_id",
        "sc_cookie1",
        "madid",
        "mobile_ad_id",
        "idfv",
        "lead_id",
        "subscription_id",
    }
)
MAX_AGE_SECONDS = 37 * 86_400
MAX_FUTURE_SECONDS = 5 * 60
MS_THRESHOLD = 100_000_000_000
CLIENT_MAX_SIZE = 2 * 1024 * 1024
"""Snap's connectors document 2 MB per request (platforms.md §3.1)."""

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CURRENCY = re.compile(r"[A-Z]{3}")


class _Rejected(Exception):
    """Raised inside request handling to answer with a Snap error."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body


def _request_error(reason: str, status: int = 400) -> _Rejected:
    return _Rejected(status, {"status": "INVALID", "reason": reason})


def _event_error(index: int, path: str, problem: str, code: str = "INVALID_FIELD") -> _Rejected:
    return _Rejected(
        400,
        {
            "status": "INVALID",
            "event": index,
            "errors": {"codes": [code], "error_msgs": [f"data[{index}].{path}: {problem}"]},
        },
    )


class SnapSandbox(SandboxBase):
    """An in-process emulator of Snap's Conversions API v3 with fault injection and a recorder."""

    page_title = "Snap CAPI sandbox"

    def __init__(
        self,
        *,
        access_tokens: Collection[str] | None = None,
        clock: Callable[[], float] = time.time,
        seed: int = 0,
        max_batch: int = 2000,
    ) -> None:
        """Configure accepted tokens (None: any non-empty), the clock, PRNG seed and batch cap."""
        super().__init__(access_tokens=access_tokens, clock=clock, seed=seed, max_batch=max_batch)

    def app(self) -> web.Application:
        """Return a fresh aiohttp application serving this sandbox's routes."""
        app = web.Application(client_max_size=CLIENT_MAX_SIZE)
        app[SNAP_SANDBOX] = self
        self.add_control_routes(app)
        app.router.add_post("/v3/{pixel_id}/events", self._handle_events)
        app.router.add_post("/v3/{pixel_id}/events/validate", self._handle_validate)
        return app

    # ------------------------------------------------------------------ the CAPI endpoints

    async def _handle_events(self, request: web.Request) -> web.Response:
        return await self._handle(request, test=False)

    async def _handle_validate(self, request: web.Request) -> web.Response:
        return await self._handle(request, test=True)

    async def _handle(self, request: web.Request, *, test: bool) -> web.Response:
        self.recorder.requests += 1
        pixel_id = request.match_info["pixel_id"]
        fault = await self._injector.decide()
        event_ids: list[str] = []
        try:
            raw = await _read(request)
            event_ids = string_ids_under(raw, "data", "event_id")
            if fault is not None:
                raise _fault_error(fault, self.faults.error_status)
            self._check_token(request)
            events = self._parse_data(raw)
            now = self.clock()
            for index, event in enumerate(events):
                self._validate_event(index, event, now)
        except _Rejected as rejected:
            self.recorder.rejected.append(
                {
                    "status": rejected.status,
                    "body": rejected.body,
                    "event_ids": event_ids,
                    "_pixel_id": pixel_id,
                    "_test": test,
                    "_received_at": self.clock(),
                }
            )
            return web.json_response(rejected.body, status=rejected.status)
        received_at = self.clock()
        for event in events:
            record = dict(event)
            record["_pixel_id"] = pixel_id
            record["_test"] = test
            record["_received_at"] = received_at
            self.recorder.accepted.append(record)
        reason = "Events have been validated." if test else "Events have been processed."
        return web.json_response({"status": "VALID", "reason": reason})

    def _check_token(self, request: web.Request) -> None:
        token = request.query.get("access_token", "").strip()
        if not token:
            token = bearer_token(request.headers.get("Authorization", ""))
        if not token:
            raise _request_error("Missing access token.", 401)
        if not self.accepts_token(token):
            raise _request_error("Invalid access token.", 401)

    def _parse_data(self, raw: object) -> list[dict[str, Any]]:
        if not isinstance(raw, dict):
            raise _request_error("The request body must be a JSON object.")
        data = raw.get("data")
        if not isinstance(data, list) or not data:
            raise _request_error("data must be a non-empty array of events.")
        if len(data) > self.max_batch:
            raise _request_error(
                f"data holds {len(data)} events; at most {self.max_batch} are allowed."
            )
        for index, item in enumerate(data):
            if not isinstance(item, dict):
                raise _event_error(index, "", "must be a JSON object")
        return data

    # ------------------------------------------------------------------ event validation

    def _validate_event(self, index: int, event: Mapping[str, object], now: float) -> None:
        name = event.get("event_name")
        if name not in SNAP_EVENTS:
            raise _event_error(index, "event_name", "must be a Snap v3 standard event name")
        source = event.get("action_source")
        if source not in ACTION_SOURCES:
            raise _event_error(index, "action_source", "must be WEB, MOBILE_APP or OFFLINE")
        _check_time(index, event.get("event_time"), now)
        event_id = event.get("event_id")
        if event_id is not None and not (isinstance(event_id, str) and event_id):
            raise _event_error(index, "event_id", "must be a non-empty string")
        url = event.get("event_source_url")
        if source == "WEB" and not is_http_url(url):
            raise _event_error(index, "event_source_url", "an absolute URL is required for WEB")
        options = event.get("data_processing_options")
        if options is not None and (
            not isinstance(options, list) or not all(isinstance(o, str) for o in options)
        ):
            raise _event_error(index, "data_processing_options", "must be an array of strings")
        _check_user_data(index, event.get("user_data"))
        _check_custom_data(index, event.get("custom_data"), purchase=name == "PURCHASE")
        if isinstance(event_id, str) and event_id in self.faults.reject_event_ids:
            raise _event_error(index, "event_id", "rejected by the sandbox (reject_event_ids)")


def _fault_error(fault: Fault, error_status: int) -> _Rejected:
    if fault is Fault.THROTTLED:
        return _request_error("Too many requests; retry later.", 429)
    if fault is Fault.SERVER_ERROR:
        return _request_error("Internal error; retry the request.", error_status)
    return _request_error("The access token has expired.", 401)


def _check_time(index: int, value: object, now: float) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise _event_error(index, "event_time", "required, a positive Unix time in seconds")
    if value >= MS_THRESHOLD:
        raise _event_error(index, "event_time", "looks like milliseconds; send seconds")
    if value > now + MAX_FUTURE_SECONDS:
        raise _event_error(index, "event_time", "is in the future")
    if value < now - MAX_AGE_SECONDS:
        raise _event_error(index, "event_time", "is more than 37 days old", "EVENT_TOO_OLD")


def _check_user_data(index: int, user_data: object) -> None:
    if not isinstance(user_data, dict):
        raise _event_error(index, "user_data", "required, an object")
    present = {k for k, v in user_data.items() if v not in (None, "", [])}
    unknown = sorted(present - HASHED_KEYS - PLAIN_KEYS)
    if unknown:
        raise _event_error(index, f"user_data.{unknown[0]}", "unknown field")
    for key in sorted(present & HASHED_KEYS):
        value = user_data[key]
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise _event_error(index, f"user_data.{key}", "must be a string or array of strings")
        for item in values:
            if _SHA256_HEX.fullmatch(item) is None:
                raise _event_error(
                    index, f"user_data.{key}", "must be SHA-256 hashed (64 lowercase hex)",
                    "NOT_HASHED",
                )  # fmt: skip
    for key in sorted(present & PLAIN_KEYS):
        value = user_data[key]
        if not isinstance(value, str) or not value.strip():
            raise _event_error(index, f"user_data.{key}", "must be a non-empty string")
    for key in ("sc_click_id", "sc_cookie1"):
        if key in present and _SHA256_HEX.fullmatch(str(user_data[key])):
            raise _event_error(
                index, f"user_data.{key}", "must be sent as received, never hashed", "HASHED_ID"
            )
    if "client_ip_address" in present:
        try:
            ipaddress.ip_address(str(user_data["client_ip_address"]))
        except ValueError:
            raise _event_error(
                index, "user_data.client_ip_address", "must be an IPv4 or IPv6 address"
            ) from None
    matchable = present & {"em", "ph", "madid", "mobile_ad_id"} or (
        {"client_ip_address", "client_user_agent"} <= present
    )
    if not matchable:
        raise _event_error(
            index, "user_data", "needs em, ph, a mobile ad id, or client_ip_address and"
            " client_user_agent", "MISSING_IDENTIFIER",
        )  # fmt: skip


def _check_custom_data(index: int, custom: object, *, purchase: bool) -> None:
    if custom is None:
        if purchase:
            raise _event_error(index, "custom_data", "required for PURCHASE (value, currency)")
        return
    if not isinstance(custom, dict):
        raise _event_error(index, "custom_data", "must be an object")
    value = custom.get("value")
    if value is not None and not is_number(value):
        raise _event_error(index, "custom_data.value", "must be a number")
    currency = custom.get("currency")
    if currency is not None and not (isinstance(currency, str) and _CURRENCY.fullmatch(currency)):
        raise _event_error(index, "custom_data.currency", "must be an upper-case ISO 4217 code")
    if purchase and (value is None or currency is None):
        raise _event_error(index, "custom_data", "PURCHASE needs value and currency")
    ids = custom.get("content_ids")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
        raise _event_error(index, "custom_data.content_ids", "must be an array of strings")
    contents = custom.get("contents")
    if contents is not None:
        if not isinstance(contents, list):
            raise _event_error(index, "custom_data.contents", "must be an array of objects")
        for position, item in enumerate(contents):
            path = f"custom_data.contents[{position}]"
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise _event_error(index, path, "must be an object with a string id")
            if item.get("quantity") is not None and not is_int(item["quantity"]):
                raise _event_error(index, f"{path}.quantity", "must be an integer")
            if item.get("item_price") is not None and not is_number(item["item_price"]):
                raise _event_error(index, f"{path}.item_price", "must be a number")
    num_items = custom.get("num_items")
    if num_items is not None and not is_int(num_items):
        raise _event_error(index, "custom_data.num_items", "must be an integer")
    fields = custom.get("custom_fields")
    if fields is not None and (
        not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values())
    ):
        raise _event_error(index, "custom_data.custom_fields", "must be an object of strings")


async def _read(request: web.Request) -> object:
    return await read_json(
        request,
        too_large=lambda: _request_error(f"The request body exceeds {CLIENT_MAX_SIZE} bytes.", 413),
        invalid=lambda: _request_error("The request body is not valid JSON."),
    )


SNAP_SANDBOX = web.AppKey("snap_sandbox", SnapSandbox)


def create_app(**kwargs: Any) -> web.Application:
    """Build a `SnapSandbox(**kwargs)` and return its app (sandbox at `app[SNAP_SANDBOX]`)."""
    return SnapSandbox(**kwargs).app()
