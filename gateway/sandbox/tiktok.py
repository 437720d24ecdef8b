"""A local emulator of TikTok's Events API 2.0 (`POST /open_api/{version}/event/track/`).

Written from the platform reference (shared platforms.md §2), not from our own mapper, so that
it is an independent check of what the gateway sends. Like TikTok it answers in its own envelope
`{"code", "message", "request_id", "data"}`, with HTTP 200 for every answer it decides itself
(a non-zero `code` is the error, pitfall 22); only injected server faults use HTTP 5xx. One bad
event fails the whole request with code 40002 and nothing is recorded (§2.1).

Codes: 0 OK, 40001 no permission (missing or wrong `Access-Token`, or an expired one via the
`token_expired` knob), 40002 invalid parameters, 40100 rate limit (`burst_429` knob; a
Retry-After header carries the `retry_after` knob), 50000 server error (`error_rate` knob, with
HTTP `error_status`). `reject_event_ids` makes those events invalid (40002).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from aiohttp import web

from .base import Fault, SandboxBase, loads_strict, retry_after_header
from .values import is_http_url, is_ip, is_number, string_ids_under

__all__ = [
    "STANDARD_EVENTS",
    "TIKTOK_SANDBOX",
    "TikTokSandbox",
    "create_app",
]

STANDARD_EVENTS = frozenset(
    {
        "ViewContent",
        "Search",
        "AddToCart",
        "AddToWishlist",
        "InitiateCheckout",
        "AddPaymentInfo",
        "Purchase",
        "CompletePayment",
        "PlaceAnOrder",
        "Lead",
        "SubmitForm",
        "CompleteRegistration",
        "Subscribe",
        "StartTrial",
        "Contact",
        "Download",
        "ClickButton",
        "CustomizeProduct",
        "FindLocation",
        "Schedule",
        "SubmitApplication",
        "ApplicationApproval",
        "Pageview",
    }
)
"""Standard event names, current and legacy (§2.7)."""
EVENT_SOURCES = frozenset({"web", "app", "offline", "crm"})
HASHED_USER_KEYS = frozenset({"email", "phone", "external_id", "first_name", "last_name"})
HASHED_USER_KEYS_ZIP = frozenset({"zip_code"})
PLAIN_USER_KEYS = frozenset(
    {"ttclid", "ttp", "ip", "user_agent", "locale", "city", "state", "country"}
)

CODE_OK = 0
CODE_NO_PERMISSION = 40001
CODE_INVALID_PARAMS = 40002
CODE_RATE_LIMIT = 40100
CODE_SERVER = 50000

MAX_AGE_WEB_SECONDS = 7 * 86_400
MAX_AGE_OFFLINE_SECONDS = 28 * 86_400
MAX_FUTURE_SECONDS = 5 * 60
MS_THRESHOLD = 100_000_000_000  # an event_time at or above this is a millisecond timestamp
CLIENT_MAX_SIZE = 10 * 1024 * 1024

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CUSTOM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,49}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_TTP = re.compile(r"[A-Za-z0-9_.-]{16,128}")


class _Rejected(Exception):
    """Raised inside request handling to answer with a TikTok error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _bad_field(index: int, path: str, problem: str) -> _Rejected:
    return _Rejected(CODE_INVALID_PARAMS, f"Invalid parameters: data[{index}].{path}: {problem}")


class TikTokSandbox(SandboxBase):
    """An in-process emulator of TikTok's Events API 2.0 with fault injection and a recorder."""

    page_title = "TikTok Events API sandbox"

    def __init__(
        self,
        *,
        access_tokens: Collection[str] | None = None,
        clock: Callable[[], float] = time.time,
        seed: int = 0,
        max_batch: int = 1000,
    ) -> None:
        """Configure accepted tokens (None: any non-empty), the clock, PRNG seed and batch cap."""
        super().__init__(access_tokens=access_tokens, clock=clock, seed=seed, max_batch=max_batch)
        self._ids = random.Random(f"tiktok-{seed}")

    def app(self) -> web.Application:
        """Return a fresh aiohttp application serving this sandbox's routes."""
        app = web.Application(client_max_size=CLIENT_MAX_SIZE)
        app[TIKTOK_SANDBOX] = self
        self.add_control_routes(app)
        app.router.add_post(r"/open_api/{version:v\d+\.\d+}/event/track/", self._handle_track)
        return app

    # ------------------------------------------------------------------ the Events API endpoint

    async def _handle_track(self, request: web.Request) -> web.Response:
        self.recorder.requests += 1
        raw = await request.read()
        fault = await self._injector.decide()
        doc = _try_loads(raw)
        event_ids = string_ids_under(doc, "data", "event_id")
        if fault is not None:
            return self._answer_fault(fault, event_ids)
        try:
            self._check_token(request)
            body = _check_envelope(doc, self.max_batch)
            now = self.clock()
            web_source = body["event_source"] == "web"
            for index, event in enumerate(body["data"]):
                self._check_event(index, event, now, web=web_source)
        except _Rejected as rejected:
            return self._reject(rejected.code, rejected.message, event_ids)
        received_at = self.clock()
        for event in body["data"]:
            record = dict(event)
            record["_event_source"] = body["event_source"]
            record["_event_source_id"] = body["event_source_id"]
            record["_test_event_code"] = body.get("test_event_code")
            record["_received_at"] = received_at
            self.recorder.accepted.append(record)
        return self._answer(CODE_OK, "OK")

    def _answer(
        self,
        code: int,
        message: str,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        request_id = "".join(self._ids.choice("0123456789ABCDEF") for _ in range(32))
        return web.json_response(
            {"code": code, "message": message, "request_id": request_id, "data": {}},
            status=status,
            headers=headers,
        )

    def _reject(
        self,
        code: int,
        message: str,
        event_ids: list[str],
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        self.recorder.rejected.append(
            {
                "status": status,
                "code": code,
                "message": message,
                "event_ids": event_ids,
                "_received_at": self.clock(),
            }
        )
        return self._answer(code, message, status=status, headers=headers)

    def _answer_fault(self, fault: Fault, event_ids: list[str]) -> web.Response:
        if fault is Fault.THROTTLED:
            return self._reject(
                CODE_RATE_LIMIT,
                "Too many requests: the QPS limit of this interface was exceeded.",
                event_ids,
                headers={"Retry-After": retry_after_header(self.faults.retry_after)},
            )
        if fault is Fault.SERVER_ERROR:
            return self._reject(
                CODE_SERVER,
                "Internal service error, please retry.",
                event_ids,
                status=self.faults.error_status,
            )
        return self._reject(
            CODE_NO_PERMISSION, "No permission: the access token has expired.", event_ids
        )

    def _check_token(self, request: web.Request) -> None:
        token = request.headers.get("Access-Token", "").strip()
        if not token:
            raise _Rejected(CODE_NO_PERMISSION, "No permission: Access-Token header is missing.")
        if not self.accepts_token(token):
            raise _Rejected(CODE_NO_PERMISSION, "No permission: the access token is invalid.")

    def _check_event(self, index: int, event: object, now: float, *, web: bool) -> None:
        if not isinstance(event, dict):
            raise _bad_field(index, "", "each event must be an object")
        name = event.get("event")
        if not isinstance(name, str) or not (
            name in STANDARD_EVENTS or _CUSTOM_NAME.fullmatch(name)
        ):
            raise _bad_field(index, "event", "a standard or custom event name is required")
        _check_time(index, event.get("event_time"), now, web=web)
        event_id = event.get("event_id")
        if event_id is not None and (not isinstance(event_id, str) or not event_id):
            raise _bad_field(index, "event_id", "must be a non-empty string")
        if isinstance(event_id, str) and event_id in self.faults.reject_event_ids:
            raise _bad_field(index, "event_id", "rejected by the sandbox (reject_event_ids)")
        _check_user(index, event.get("user"))
        page = event.get("page")
        if page is not None and not isinstance(page, dict):
            raise _bad_field(index, "page", "must be an object")
        page = page or {}
        if web and not is_http_url(page.get("url")):
            raise _bad_field(index, "page.url", "web events need an absolute http(s) URL")
        if page.get("referrer") is not None and not is_http_url(page.get("referrer")):
            raise _bad_field(index, "page.referrer", "must be an absolute http(s) URL")
        _check_properties(index, event.get("properties"))
        ldu = event.get("limited_data_use")
        if ldu is not None and not isinstance(ldu, bool):
            raise _bad_field(index, "limited_data_use", "must be a boolean")
        known = {"event", "event_time", "event_id", "user", "page", "properties"}
        unknown = set(event) - known - {"limited_data_use", "app", "ad", "lead"}
        if unknown:
            raise _bad_field(index, sorted(unknown)[0], "unknown field")


def _check_envelope(doc: object, max_batch: int) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise _Rejected(CODE_INVALID_PARAMS, "Invalid parameters: the body must be a JSON object.")
    source = doc.get("event_source")
    if source not in EVENT_SOURCES:
        raise _Rejected(
            CODE_INVALID_PARAMS,
            "Invalid parameters: event_source must be web, app, offline or crm.",
        )
    source_id = doc.get("event_source_id")
    if not isinstance(source_id, str) or not source_id:
        raise _Rejected(CODE_INVALID_PARAMS, "Invalid parameters: event_source_id is required.")
    for key in ("test_event_code", "partner_name"):
        if doc.get(key) is not None and not isinstance(doc.get(key), str):
            raise _Rejected(CODE_INVALID_PARAMS, f"Invalid parameters: {key} must be a string.")
    data = doc.get("data")
    if not isinstance(data, list) or not data:
        raise _Rejected(CODE_INVALID_PARAMS, "Invalid parameters: data must be a non-empty array.")
    if len(data) > max_batch:
        raise _Rejected(
            CODE_INVALID_PARAMS, f"Invalid parameters: data holds more than {max_batch} events."
        )
    return doc


def _check_time(index: int, value: object, now: float, *, web: bool) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad_field(index, "event_time", "an integer Unix time in seconds is required")
    if value >= MS_THRESHOLD:
        raise _bad_field(index, "event_time", "must be in seconds, not milliseconds")
    if value > now + MAX_FUTURE_SECONDS:
        raise _bad_field(index, "event_time", "is in the future")
    max_age = MAX_AGE_WEB_SECONDS if web else MAX_AGE_OFFLINE_SECONDS
    if value < now - max_age:
        raise _bad_field(index, "event_time", "is too old")


def _check_user(index: int, user: object) -> None:
    if user is None:
        return
    if not isinstance(user, dict):
        raise _bad_field(index, "user", "must be an object")
    for key, value in user.items():
        path = f"user.{key}"
        if key in HASHED_USER_KEYS or key in HASHED_USER_KEYS_ZIP:
            values = value if isinstance(value, list) else [value]
            if not values or not all(
                isinstance(v, str) and _SHA256_HEX.fullmatch(v) for v in values
            ):
                raise _bad_field(index, path, "must be SHA-256 hex (64 lower-case hex digits)")
        elif key in PLAIN_USER_KEYS:
            if not isinstance(value, str) or not value:
                raise _bad_field(index, path, "must be a non-empty string")
            if key == "ip" and not is_ip(value):
                raise _bad_field(index, path, "must be an IPv4 or IPv6 address")
            if key == "ttp" and not _TTP.fullmatch(value):
                raise _bad_field(index, path, "is not a _ttp cookie value")
        else:
            raise _bad_field(index, path, "unknown user field")


def _check_properties(index: int, properties: object) -> None:
    if properties is None:
        return
    if not isinstance(properties, dict):
        raise _bad_field(index, "properties", "must be an object")
    value = properties.get("value")
    if value is not None and not is_number(value):
        raise _bad_field(index, "properties.value", "must be a number")
    currency = properties.get("currency")
    if currency is not None and not (isinstance(currency, str) and _CURRENCY.fullmatch(currency)):
        raise _bad_field(index, "properties.currency", "must be an ISO 4217 code")
    content_type = properties.get("content_type")
    if content_type is not None and content_type not in ("product", "product_group"):
        raise _bad_field(index, "properties.content_type", "must be product or product_group")
    contents = properties.get("contents")
    if contents is not None:
        if not isinstance(contents, list):
            raise _bad_field(index, "properties.contents", "must be an array")
        if "content_ids" in properties:
            raise _bad_field(index, "properties.content_ids", "do not combine with contents")
        for i, item in enumerate(contents):
            where = f"properties.contents[{i}]"
            if not isinstance(item, dict) or not isinstance(item.get("content_id"), str):
                raise _bad_field(index, where, "needs a content_id string")
            if item.get("price") is not None and not is_number(item["price"]):
                raise _bad_field(index, f"{where}.price", "must be a number")
            quantity = item.get("quantity")
            if quantity is not None and (
                not isinstance(quantity, int) or isinstance(quantity, bool)
            ):
                raise _bad_field(index, f"{where}.quantity", "must be an integer")


def _try_loads(raw: bytes) -> object:
    try:
        return loads_strict(raw)
    except (ValueError, UnicodeDecodeError):
        return None


TIKTOK_SANDBOX = web.AppKey("tiktok_sandbox", TikTokSandbox)


def create_app(**kwargs: Any) -> web.Application:
    """Build a `TikTokSandbox(**kwargs)` and return its app (sandbox at `app[TIKTOK_SANDBOX]`)."""
    return TikTokSandbox(**kwargs).app()
