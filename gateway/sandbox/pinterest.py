"""A local emulator of Pinterest's API for Conversions (`POST /v5/ad_accounts/{id}/events`).

Written from the platform reference (shared platforms.md §5 and Pinterest's v5 OpenAPI
description of `events/create`), not from our own mapper, so it independently checks what the
gateway sends. Pinterest answers per event: a request whose events all pass gets HTTP 200 and
``{"num_events_received", "num_events_processed", "events": [{"status": "processed"}, …]}``
with one entry per event in request order. When some events fail, the others are still
processed and recorded, and the answer is HTTP 422 (OpenAPI: "Not all events were successfully
processed") ``{"code", "message", "details": {…the same counts and events[]…}}``, the failed
entries carrying ``"status": "failed"`` and an ``error_message``. The layout of ``details`` is
this sandbox's reading of the OpenAPI `DetailedError`, not a documented example.

Request-level errors answer ``{"code", "message"}``: 400 (code 4196) for a body that breaks the
schema (not JSON, ``data`` missing, empty or longer than the batch limit, an event with a field
the schema does not know — its `additionalProperties` is false), 401 (code 2) for a missing or
wrong Bearer token, 403 (code 29) for an ad account the token may not use. ``?test=true`` is
validated and answered the same way; its events are recorded with ``_test: true``.

Faults (the shared knobs of `base.Faults`): ``burst_429`` answers 429 (code 8) with a Retry-After
header carrying ``retry_after``; ``error_rate``/``error_status`` and ``down`` a 5xx;
``token_expired`` a 401; ``reject_event_ids`` makes those events fail; ``latency`` a delay.
The seven-day age limit is the one integrators state (Pinterest does not publish one).
"""

from __future__ import annotations

import ipaddress
import math
import re
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from aiohttp import web

from .base import Fault, SandboxBase, read_json, retry_after_header
from .values import bearer_token, is_http_url, is_int, string_ids_under

__all__ = [
    "ACTION_SOURCES",
    "PINTEREST_EVENTS",
    "PINTEREST_SANDBOX",
    "PinterestSandbox",
    "create_app",
]

PINTEREST_EVENTS = frozenset(
    {
        "add_payment_info",
        "add_to_cart",
        "add_to_wishlist",
        "checkout",
        "contact",
        "custom",
        "customize_product",
        "find_location",
        "initiate_checkout",
        "lead",
        "page_visit",
        "schedule",
        "search",
        "signup",
        "start_trial",
        "submit_application",
        "subscribe",
        "view_category",
        "view_content",
        "watch_video",
        "app_install",
        "app_open",
    }
)
ACTION_SOURCES = frozenset({"web", "app_android", "app_ios", "offline"})
EVENT_KEYS = frozenset(
    {
        "event_name",
        "action_source",
        "event_time",
        "event_id",
        "event_source_url",
        "opt_out",
        "partner_name",
        "user_data",
        "custom_data",
        "app_id",
        "app_name",
        "app_version",
        "device_brand",
        "device_carrier",
        "device_model",
        "device_type",
        "os_version",
        "wifi",
        "language",
    }
)
HASHED_KEYS = frozenset(
    {"em", "hashed_maids", "ph", "ge", "db", "ln", "fn", "ct", "st", "zp", "country", "external_id"}
)
PLAIN_KEYS = frozenset({"client_ip_address", "client_user_agent", "click_id", "partner_id"})
CUSTOM_STRING_KEYS = frozenset(
    {"currency", "value", "content_name", "content_category", "content_brand", "order_id",
     "search_string", "opt_out_type", "np"}
)  # fmt: skip
CUSTOM_KEYS = CUSTOM_STRING_KEYS | {"content_ids", "contents", "num_items"}
CONTENT_KEYS = frozenset(
    {"id", "item_price", "quantity", "item_name", "item_category", "item_brand"}
)
MAX_BATCH = 1000
MAX_AGE_SECONDS = 7 * 86_400
MAX_FUTURE_SECONDS = 5 * 60
MS_THRESHOLD = 100_000_000_000
CLIENT_MAX_SIZE = 2 * 1024 * 1024
"""Pinterest's connectors document 2 MB per request (platforms.md §5.1)."""

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_DECIMAL = re.compile(r"-?\d{1,15}(\.\d{1,10})?")
_AD_ACCOUNT = re.compile(r"\d{1,18}")


class _Rejected(Exception):
    """Raised inside request handling to answer with a request-level Pinterest error."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"code": code, "message": message}


class _Failed(Exception):
    """Raised inside one event's validation: that event fails with this message."""


def _invalid(message: str) -> _Rejected:
    return _Rejected(400, 4196, message)


class PinterestSandbox(SandboxBase):
    """An in-process emulator of Pinterest's API for Conversions with faults and a recorder."""

    page_title = "Pinterest API for Conversions sandbox"

    def __init__(
        self,
        *,
        access_tokens: Collection[str] | None = None,
        ad_accounts: Collection[str] | None = None,
        clock: Callable[[], float] = time.time,
        seed: int = 0,
        max_batch: int = MAX_BATCH,
    ) -> None:
        """Set the accepted tokens and ad accounts (None: any), clock, PRNG seed and batch cap."""
        super().__init__(access_tokens=access_tokens, clock=clock, seed=seed, max_batch=max_batch)
        self.ad_accounts: frozenset[str] | None = (
            None if ad_accounts is None else frozenset(ad_accounts)
        )

    def app(self) -> web.Application:
        """Return a fresh aiohttp application serving this sandbox's routes."""
        app = web.Application(client_max_size=CLIENT_MAX_SIZE)
        app[PINTEREST_SANDBOX] = self
        self.add_control_routes(app)
        app.router.add_post("/v5/ad_accounts/{ad_account_id}/events", self._handle_events)
        return app

    # ------------------------------------------------------------------ the events endpoint

    async def _handle_events(self, request: web.Request) -> web.Response:
        self.recorder.requests += 1
        account = request.match_info["ad_account_id"]
        test = request.query.get("test", "").lower() == "true"
        fault = await self._injector.decide()
        event_ids: list[str] = []
        try:
            raw = await _read(request)
            event_ids = string_ids_under(raw, "data", "event_id")
            if fault is not None:
                raise _fault_error(fault, self.faults.error_status)
            self._check_token(request)
            self._check_account(account)
            events = self._parse_data(raw)
        except _Rejected as rejected:
            headers: dict[str, str] = {}
            if rejected.status == 429:
                headers["Retry-After"] = retry_after_header(self.faults.retry_after)
            self._record_rejection(rejected.status, rejected.body, event_ids, account, test)
            return web.json_response(rejected.body, status=rejected.status, headers=headers)
        now = self.clock()
        answers: list[dict[str, Any]] = []
        for index, event in enumerate(events):
            try:
                self._validate_event(index, event, now)
            except _Failed as failed:
                answers.append({"status": "failed", "error_message": str(failed)})
                continue
            answers.append({"status": "processed", "error_message": None})
            record = dict(event)
            record["_ad_account_id"] = account
            record["_test"] = test
            record["_received_at"] = now
            self.recorder.accepted.append(record)
        processed = sum(1 for a in answers if a["status"] == "processed")
        summary = {
            "num_events_received": len(events),
            "num_events_processed": processed,
            "events": answers,
        }
        if processed == len(events):
            return web.json_response(summary)
        body = {
            "code": 4196,
            "message": "Not all events were successfully processed.",
            "details": summary,
        }
        failed_ids = [
            str(event.get("event_id"))
            for event, answer in zip(events, answers, strict=True)
            if answer["status"] == "failed"
        ]
        self._record_rejection(422, body, failed_ids, account, test)
        return web.json_response(body, status=422)

    def _record_rejection(
        self, status: int, body: dict[str, Any], event_ids: list[str], account: str, test: bool
    ) -> None:
        self.recorder.rejected.append(
            {
                "status": status,
                "body": body,
                "event_ids": event_ids,
                "_ad_account_id": account,
                "_test": test,
                "_received_at": self.clock(),
            }
        )

    def _check_token(self, request: web.Request) -> None:
        token = bearer_token(request.headers.get("Authorization", ""))
        if not token:
            raise _Rejected(401, 2, "Authentication failed.")
        if not self.accepts_token(token):
            raise _Rejected(401, 2, "Authentication failed.")

    def _check_account(self, account: str) -> None:
        if _AD_ACCOUNT.fullmatch(account) is None:
            raise _invalid("ad_account_id must be 1-18 digits.")
        if self.ad_accounts is not None and account not in self.ad_accounts:
            raise _Rejected(403, 29, "You are not permitted to access that resource.")

    def _parse_data(self, raw: object) -> list[dict[str, Any]]:
        if not isinstance(raw, dict):
            raise _invalid("The request body must be a JSON object.")
        unknown = sorted(set(raw) - {"data"})
        if unknown:
            raise _invalid(f"Unknown field {unknown[0]!r}.")
        data = raw.get("data")
        if not isinstance(data, list) or not data:
            raise _invalid("data must be a non-empty array of events.")
        if len(data) > self.max_batch:
            raise _invalid(f"data holds {len(data)} events; at most {self.max_batch} are allowed.")
        for index, item in enumerate(data):
            if not isinstance(item, dict):
                raise _invalid(f"data[{index}] must be an object.")
            extra = sorted(set(item) - EVENT_KEYS)
            if extra:
                raise _invalid(f"data[{index}].{extra[0]}: unknown field.")
        return data

    # ------------------------------------------------------------------ event validation

    def _validate_event(self, index: int, event: Mapping[str, object], now: float) -> None:
        if event.get("event_name") not in PINTEREST_EVENTS:
            raise _Failed(f"data[{index}].event_name: not a Pinterest conversion event name")
        source = event.get("action_source")
        if source not in ACTION_SOURCES:
            raise _Failed(
                f"data[{index}].action_source: must be web, app_android, app_ios or offline"
            )
        _check_time(index, event.get("event_time"), now)
        event_id = event.get("event_id")
        if not (isinstance(event_id, str) and event_id.strip()):
            raise _Failed(f"data[{index}].event_id: required, a non-empty string")
        url = event.get("event_source_url")
        if (url is not None or source == "web") and not is_http_url(url):
            raise _Failed(f"data[{index}].event_source_url: an absolute URL for web events")
        if "opt_out" in event and not isinstance(event["opt_out"], bool):
            raise _Failed(f"data[{index}].opt_out: must be a boolean")
        partner = event.get("partner_name")
        if partner is not None and not isinstance(partner, str):
            raise _Failed(f"data[{index}].partner_name: must be a string")
        _check_user_data(index, event.get("user_data"))
        _check_custom_data(index, event.get("custom_data"))
        if event_id in self.faults.reject_event_ids:
            raise _Failed(f"data[{index}].event_id: rejected by the sandbox (reject_event_ids)")


def _fault_error(fault: Fault, error_status: int) -> _Rejected:
    if fault is Fault.THROTTLED:
        return _Rejected(429, 8, "This request exceeded a rate limit.")
    if fault is Fault.SERVER_ERROR:
        return _Rejected(error_status, 4197, "The endpoint is currently not accepting traffic.")
    return _Rejected(401, 2, "Authentication failed.")


def _check_time(index: int, value: object, now: float) -> None:
    path = f"data[{index}].event_time"
    if not is_int(value) or not isinstance(value, int) or value <= 0:
        raise _Failed(f"{path}: required, a positive Unix time in seconds")
    if value >= MS_THRESHOLD:
        raise _Failed(f"{path}: looks like milliseconds; send seconds")
    if value > now + MAX_FUTURE_SECONDS:
        raise _Failed(f"{path}: is in the future")
    if value < now - MAX_AGE_SECONDS:
        raise _Failed(f"{path}: is more than 7 days old")


def _check_user_data(index: int, user_data: object) -> None:
    path = f"data[{index}].user_data"
    if not isinstance(user_data, dict):
        raise _Failed(f"{path}: required, an object")
    present = {k for k, v in user_data.items() if v not in (None, "", [])}
    unknown = sorted(present - HASHED_KEYS - PLAIN_KEYS)
    if unknown:
        raise _Failed(f"{path}.{unknown[0]}: unknown field")
    for key in sorted(present & HASHED_KEYS):
        values = user_data[key]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise _Failed(f"{path}.{key}: must be an array of strings")
        for item in values:
            if _SHA256_HEX.fullmatch(item) is None:
                raise _Failed(f"{path}.{key}: must be SHA-256 hashed (64 lowercase hex)")
    for key in sorted(present & PLAIN_KEYS):
        value = user_data[key]
        if not isinstance(value, str) or not value.strip():
            raise _Failed(f"{path}.{key}: must be a non-empty string")
    if "click_id" in present and _SHA256_HEX.fullmatch(str(user_data["click_id"])):
        raise _Failed(f"{path}.click_id: must be sent as received (the epik value), never hashed")
    if "client_ip_address" in present:
        try:
            ipaddress.ip_address(str(user_data["client_ip_address"]))
        except ValueError:
            raise _Failed(f"{path}.client_ip_address: must be an IPv4 or IPv6 address") from None
    matchable = present & {"em", "hashed_maids"} or (
        {"client_ip_address", "client_user_agent"} <= present
    )
    if not matchable:
        raise _Failed(f"{path}: needs em, hashed_maids, or client_ip_address and client_user_agent")


def _check_custom_data(index: int, custom: object) -> None:
    path = f"data[{index}].custom_data"
    if custom is None:
        return
    if not isinstance(custom, dict):
        raise _Failed(f"{path}: must be an object")
    unknown = sorted(set(custom) - CUSTOM_KEYS)
    if unknown:
        raise _Failed(f"{path}.{unknown[0]}: unknown field")
    for key in sorted(CUSTOM_STRING_KEYS & set(custom)):
        if custom[key] is not None and not isinstance(custom[key], str):
            raise _Failed(f"{path}.{key}: must be a string")
    value = custom.get("value")
    if value is not None and not _is_decimal(value):
        raise _Failed(f"{path}.value: must be a decimal number sent as a string")
    currency = custom.get("currency")
    if currency is not None and not (isinstance(currency, str) and _CURRENCY.fullmatch(currency)):
        raise _Failed(f"{path}.currency: must be an upper-case ISO 4217 code")
    ids = custom.get("content_ids")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
        raise _Failed(f"{path}.content_ids: must be an array of strings")
    contents = custom.get("contents")
    if contents is not None:
        if not isinstance(contents, list):
            raise _Failed(f"{path}.contents: must be an array of objects")
        for position, item in enumerate(contents):
            where = f"{path}.contents[{position}]"
            if not isinstance(item, dict) or set(item) - CONTENT_KEYS:
                raise _Failed(f"{where}: must be an object with only the documented fields")
            if item.get("quantity") is not None and not is_int(item["quantity"]):
                raise _Failed(f"{where}.quantity: must be an integer")
            if item.get("item_price") is not None and not _is_decimal(item["item_price"]):
                raise _Failed(f"{where}.item_price: must be a decimal number sent as a string")
    num_items = custom.get("num_items")
    if num_items is not None and not is_int(num_items):
        raise _Failed(f"{path}.num_items: must be an integer")


def _is_decimal(value: object) -> bool:
    """A money field: a string holding a finite decimal (a JSON number is refused, pit. 26)."""
    return (
        isinstance(value, str)
        and _DECIMAL.fullmatch(value) is not None
        and math.isfinite(float(value))
    )


async def _read(request: web.Request) -> object:
    return await read_json(
        request,
        too_large=lambda: _Rejected(
            413, 4196, f"The request body exceeds {CLIENT_MAX_SIZE} bytes."
        ),
        invalid=lambda: _invalid("The request body is not valid JSON."),
    )


PINTEREST_SANDBOX = web.AppKey("pinterest_sandbox", PinterestSandbox)


def create_app(**kwargs: Any) -> web.Application:
    """Build a `PinterestSandbox(**kwargs)`; return its app (at `app[PINTEREST_SANDBOX]`)."""
    return PinterestSandbox(**kwargs).app()
