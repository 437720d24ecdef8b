"""A local emulator of Meta's Conversions API (Graph `/{version}/{pixel_id}/events`).

Written from the platform reference (shared platforms.md §1), not from our own mapper, so that it
is an independent check of what the gateway sends. It validates each request the way Meta does:
one bad event rejects the whole request with error code 100 and nothing is processed.

Error subcodes: 2804003 (event too old) comes from the reference; the reference only says that
"other 2804xxx" subcodes are field-level validation failures, so every other field failure here
uses the sandbox's own `SUBCODE_INVALID_FIELD`. Clients should classify by `code`.
Errors without a meaningful subcode carry `"error_subcode": null`.
"""

from __future__ import annotations

import random
import re
import string
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .base import Fault, SandboxBase, loads_strict, retry_after_header
from .values import is_http_url, is_int, is_ip, is_number, string_ids

__all__ = [
    "ACTION_SOURCES",
    "META_SANDBOX",
    "MetaSandbox",
    "create_app",
]

ACTION_SOURCES = frozenset(
    {
        "website",
        "app",
        "email",
        "phone_call",
        "chat",
        "physical_store",
        "system_generated",
        "business_messaging",
        "other",
    }
)

# user_data keys that must arrive SHA-256 hashed (string or list of strings).
HASHED_KEYS = frozenset(
    {"em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country"}
    | {"f5first", "f5last", "fi", "dobd", "dobm", "doby"}
)
# user_data keys that are never hashed.
PLAIN_KEYS = frozenset(
    {
        "client_ip_address",
        "client_user_agent",
        "fbc",
        "fbp",
        "subscription_id",
        "lead_id",
        "fb_login_id",
        "anon_id",
        "madid",
        "page_id",
        "page_scoped_user_id",
        "ctwa_clid",
        "ig_account_id",
        "ig_sid",
    }
)
IDENTIFIER_KEYS = HASHED_KEYS | PLAIN_KEYS | {"external_id"}

# §1.2 matching baseline: user_data holding only a subset of one of these is rejected.
MATCH_BASELINE_COMBOS: tuple[frozenset[str], ...] = (
    frozenset({"ct", "country", "st", "zp", "ge", "client_user_agent"}),
    frozenset({"db", "client_user_agent"}),
    frozenset({"fn", "ge"}),
    frozenset({"ln", "ge"}),
)

SUBCODE_TOO_OLD = 2804003
SUBCODE_INVALID_FIELD = 2804050  # sandbox's pick within Meta's 2804xxx field-validation range
SUBCODE_PIXEL_NOT_FOUND = 33
SUBCODE_TOKEN_EXPIRED = 463
SUBCODE_TOKEN_INVALID = 467

MAX_AGE_SECONDS = 7 * 86_400
MAX_AGE_PHYSICAL_STORE_SECONDS = 62 * 86_400
MAX_FUTURE_SECONDS = 5 * 60
MS_THRESHOLD = 100_000_000_000  # an event_time at or above this is a millisecond timestamp
CLIENT_MAX_SIZE = 10 * 1024 * 1024

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_FB_COOKIE = re.compile(r"fb\.\d\.\d{10,16}\.[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)?")
_CURRENCY = re.compile(r"[A-Za-z]{3}")
_TRACE_ALPHABET = string.ascii_letters + string.digits + "-_"


@dataclass(frozen=True)
class MetaError:
    """One Graph-style error answer: HTTP status plus the fields of the `error` object."""

    status: int
    code: int
    subcode: int | None
    message: str
    title: str
    user_msg: str
    transient: bool = False

    def body(self, fbtrace_id: str) -> dict[str, Any]:
        """Return the JSON body Meta would send for this error."""
        return {
            "error": {
                "message": self.message,
                "type": "OAuthException",
                "code": self.code,
                "error_subcode": self.subcode,
                "error_user_title": self.title,
                "error_user_msg": self.user_msg,
                "fbtrace_id": fbtrace_id,
                "is_transient": self.transient,
            }
        }


class _Rejected(Exception):
    """Raised inside request handling to answer with a Graph error."""

    def __init__(self, error: MetaError) -> None:
        super().__init__(error.user_msg)
        self.error = error


def _invalid(
    user_msg: str, *, subcode: int | None = None, title: str = "Invalid parameter"
) -> _Rejected:
    return _Rejected(
        MetaError(
            status=400,
            code=100,
            subcode=subcode,
            message="(#100) Invalid parameter",
            title=title,
            user_msg=user_msg,
        )
    )


def _bad_field(
    index: int, path: str, problem: str, *, subcode: int = SUBCODE_INVALID_FIELD
) -> _Rejected:
    return _invalid(f"Event data[{index}], field {path}: {problem}", subcode=subcode)


_TOKEN_MISSING = MetaError(
    status=400,
    code=190,
    subcode=None,
    message="An access token is required to request this resource.",
    title="Access token required",
    user_msg="Pass access_token in the query string, the body or an Authorization header.",
)
_TOKEN_INVALID = MetaError(
    status=400,
    code=190,
    subcode=SUBCODE_TOKEN_INVALID,
    message="Invalid OAuth access token - Cannot parse access token",
    title="Invalid access token",
    user_msg="The access token is not valid for this dataset.",
)
_TOKEN_EXPIRED = MetaError(
    status=400,
    code=190,
    subcode=SUBCODE_TOKEN_EXPIRED,
    message="Error validating access token: Session has expired.",
    title="Access token expired",
    user_msg="The access token has expired; generate a new one in Events Manager.",
)
_THROTTLED = MetaError(
    status=429,
    code=4,
    subcode=None,
    message="(#4) Application request limit reached",
    title="Too many calls",
    user_msg="The app has made too many calls; retry later.",
    transient=True,
)


def _server_error(status: int) -> MetaError:
    return MetaError(
        status=status,
        code=2,
        subcode=None,
        message="Service temporarily unavailable",
        title="Service unavailable",
        user_msg="A temporary error occurred; retry the request.",
        transient=True,
    )


class MetaSandbox(SandboxBase):
    """An in-process emulator of Meta's Conversions API with fault injection and a recorder."""

    page_title = "Meta CAPI sandbox"

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
        self._trace_rng = random.Random(f"fbtrace-{seed}")

    # ------------------------------------------------------------------ app wiring

    def app(self) -> web.Application:
        """Return a fresh aiohttp application serving this sandbox's routes."""
        app = web.Application(client_max_size=CLIENT_MAX_SIZE)
        app[META_SANDBOX] = self
        self.add_control_routes(app)
        app.router.add_post(r"/{version:v\d+\.\d+}/{pixel_id:\d+}/events", self._handle_events)
        app.router.add_post(r"/{version:v\d+\.\d+}/{pixel_id}/events", self._handle_unknown_pixel)
        return app

    # ------------------------------------------------------------------ the CAPI endpoint

    async def _handle_unknown_pixel(self, request: web.Request) -> web.Response:
        self.recorder.requests += 1
        pixel_id = request.match_info["pixel_id"]
        error = MetaError(
            status=400,
            code=100,
            subcode=SUBCODE_PIXEL_NOT_FOUND,
            message=(
                f"Unsupported post request. Object with ID '{pixel_id}' does not exist, cannot be"
                " loaded due to missing permissions, or does not support this operation."
            ),
            title="Dataset not found",
            user_msg="The pixel (dataset) id in the URL does not exist.",
        )
        return self._reject(error, pixel_id, [])

    async def _handle_events(self, request: web.Request) -> web.Response:
        self.recorder.requests += 1
        pixel_id = request.match_info["pixel_id"]
        fault = await self._injector.decide()
        if fault is not None:
            return await self._answer_fault(fault, request, pixel_id)

        event_ids: list[str] = []
        try:
            params = await self._read_params(request)
            event_ids = _event_ids(params.get("data"))
            self._check_token(request, params)
            events = self._parse_data(params)
            test_event_code = _optional_str(params, "test_event_code")
            _optional_str(params, "partner_agent")
            now = self.clock()
            for index, event in enumerate(events):
                self._validate_event(index, event, now)
        except _Rejected as rejected:
            return self._reject(rejected.error, pixel_id, event_ids)

        received_at = self.clock()
        for event in events:
            record = dict(event)
            record["_pixel_id"] = pixel_id
            record["_test_event_code"] = test_event_code
            record["_received_at"] = received_at
            self.recorder.accepted.append(record)
        fbtrace_id = self._fbtrace_id()
        return web.json_response(
            {"events_received": len(events), "messages": [], "fbtrace_id": fbtrace_id},
            headers={"x-fb-trace-id": fbtrace_id},
        )

    async def _answer_fault(
        self, fault: Fault, request: web.Request, pixel_id: str
    ) -> web.Response:
        try:
            event_ids = _event_ids((await self._read_params(request)).get("data"))
        except _Rejected:
            event_ids = []
        headers: dict[str, str] = {}
        if fault is Fault.THROTTLED:
            error = _THROTTLED
            headers["Retry-After"] = retry_after_header(self.faults.retry_after)
        elif fault is Fault.SERVER_ERROR:
            error = _server_error(self.faults.error_status)
        else:
            error = _TOKEN_EXPIRED
        return self._reject(error, pixel_id, event_ids, headers=headers)

    def _reject(
        self,
        error: MetaError,
        pixel_id: str,
        event_ids: list[str],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        fbtrace_id = self._fbtrace_id()
        body = error.body(fbtrace_id)
        self.recorder.rejected.append(
            {
                "status": error.status,
                "error": body["error"],
                "event_ids": event_ids,
                "_pixel_id": pixel_id,
                "_received_at": self.clock(),
            }
        )
        all_headers = {"x-fb-trace-id": fbtrace_id, **(headers or {})}
        if error.code == 190:
            all_headers["WWW-Authenticate"] = (
                f'OAuth "Facebook Platform" "invalid_token" "{error.message}"'
            )
        return web.json_response(body, status=error.status, headers=all_headers)

    def _fbtrace_id(self) -> str:
        return "A" + "".join(self._trace_rng.choice(_TRACE_ALPHABET) for _ in range(22))

    # ------------------------------------------------------------------ request parsing

    async def _read_params(self, request: web.Request) -> dict[str, object]:
        """Merge query-string parameters with the JSON or form body (the body wins)."""
        params: dict[str, object] = {}
        for key in request.query:
            params.setdefault(key, request.query[key])
        try:
            if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.post()
                for key in form:
                    value = form[key]
                    if isinstance(value, str):
                        params[key] = value
            else:
                raw = await request.read()
                if raw.strip():
                    try:
                        body = loads_strict(raw)
                    except (ValueError, UnicodeDecodeError):
                        raise _invalid("The request body is not valid JSON.") from None
                    if not isinstance(body, dict):
                        raise _invalid("The JSON request body must be an object.")
                    params.update(body)
        except web.HTTPRequestEntityTooLarge:
            raise _Rejected(
                MetaError(
                    status=413,
                    code=100,
                    subcode=None,
                    message="(#100) Request body too large",
                    title="Request too large",
                    user_msg=f"The request body exceeds {CLIENT_MAX_SIZE} bytes.",
                )
            ) from None
        return params

    def _check_token(self, request: web.Request, params: Mapping[str, object]) -> None:
        token = params.get("access_token")
        if not isinstance(token, str) or not token.strip():
            token = _bearer(request.headers.get("Authorization", ""))
        if not token:
            raise _Rejected(_TOKEN_MISSING)
        if not self.accepts_token(token):
            raise _Rejected(_TOKEN_INVALID)

    def _parse_data(self, params: Mapping[str, object]) -> list[dict[str, Any]]:
        data = _decode_data(params.get("data"))
        if data is None:
            raise _invalid("The parameter data is required.")
        if not isinstance(data, list):
            raise _invalid("The parameter data must be an array of event objects.")
        if not data:
            raise _invalid("The parameter data must contain at least one event.")
        if len(data) > self.max_batch:
            raise _invalid(
                f"The parameter data holds {len(data)} events; at most {self.max_batch} are"
                " allowed per request."
            )
        events: list[dict[str, Any]] = []
        for index, item in enumerate(data):
            if not isinstance(item, dict):
                raise _invalid(f"Event data[{index}] must be a JSON object.")
            events.append(item)
        return events

    # ------------------------------------------------------------------ event validation

    def _validate_event(self, index: int, event: Mapping[str, object], now: float) -> None:
        name = event.get("event_name")
        if not isinstance(name, str) or not name.strip():
            raise _bad_field(index, "event_name", "required, must be a non-empty string")

        action_source = event.get("action_source")
        if action_source is None:
            raise _bad_field(index, "action_source", "required")
        if action_source not in ACTION_SOURCES:
            raise _bad_field(
                index, "action_source", f"must be one of {', '.join(sorted(ACTION_SOURCES))}"
            )
        _check_event_time(index, event.get("event_time"), now, str(action_source))

        event_id = event.get("event_id")
        if event_id is not None and not isinstance(event_id, str):
            raise _bad_field(index, "event_id", "must be a string")

        url = event.get("event_source_url")
        if action_source == "website":
            if url is None:
                raise _bad_field(index, "event_source_url", "required for website events")
            if not is_http_url(url):
                raise _bad_field(index, "event_source_url", "must be an absolute http(s) URL")
        elif url is not None and not isinstance(url, str):
            raise _bad_field(index, "event_source_url", "must be a string")
        referrer = event.get("referrer_url")
        if referrer is not None and not isinstance(referrer, str):
            raise _bad_field(index, "referrer_url", "must be a string")
        opt_out = event.get("opt_out")
        if opt_out is not None and not isinstance(opt_out, bool):
            raise _bad_field(index, "opt_out", "must be a boolean")
        _check_processing_options(index, event)

        _check_user_data(index, event.get("user_data"), website=action_source == "website")
        _check_custom_data(index, event.get("custom_data"), purchase=name == "Purchase")

        if isinstance(event_id, str) and event_id in self.faults.reject_event_ids:
            raise _bad_field(index, "event_id", "rejected by the sandbox (reject_event_ids fault)")


def _check_event_time(index: int, value: object, now: float, action_source: str) -> None:
    if value is None:
        raise _bad_field(index, "event_time", "required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad_field(index, "event_time", "must be an integer Unix timestamp in seconds")
    if value <= 0:
        raise _bad_field(index, "event_time", "must be a positive Unix timestamp in seconds")
    if value >= MS_THRESHOLD:
        raise _bad_field(
            index, "event_time", "looks like milliseconds; it must be Unix time in seconds"
        )
    if value > now + MAX_FUTURE_SECONDS:
        raise _bad_field(index, "event_time", "is in the future")
    max_age = (
        MAX_AGE_PHYSICAL_STORE_SECONDS if action_source == "physical_store" else MAX_AGE_SECONDS
    )
    if value < now - max_age:
        days = max_age // 86_400
        raise _Rejected(
            MetaError(
                status=400,
                code=100,
                subcode=SUBCODE_TOO_OLD,
                message="(#100) Invalid parameter",
                title="Event Timestamp Too Old",
                user_msg=(
                    f"Event data[{index}], field event_time: the timestamp is more than {days} days"
                    " in the past."
                ),
            )
        )


def _check_processing_options(index: int, event: Mapping[str, object]) -> None:
    options = event.get("data_processing_options")
    if options is not None and (
        not isinstance(options, list) or not all(isinstance(o, str) for o in options)
    ):
        raise _bad_field(index, "data_processing_options", "must be an array of strings")
    for key in ("data_processing_options_country", "data_processing_options_state"):
        value = event.get(key)
        if value is not None and not is_int(value):
            raise _bad_field(index, key, "must be an integer")


def _check_user_data(index: int, user_data: object, *, website: bool) -> None:
    if user_data is None:
        raise _bad_field(index, "user_data", "required")
    if not isinstance(user_data, dict):
        raise _bad_field(index, "user_data", "must be an object")
    present = {key for key, value in user_data.items() if value is not None}
    for key in sorted(present & HASHED_KEYS):
        _check_hashed(index, key, user_data[key])
    if "external_id" in present:
        _check_strings(index, "external_id", user_data["external_id"])
    for key in ("fbc", "fbp"):
        if key in present:
            value = user_data[key]
            if not isinstance(value, str) or _FB_COOKIE.fullmatch(value) is None:
                raise _bad_field(
                    index,
                    f"user_data.{key}",
                    "must look like fb.<subdomainIndex>.<creationTimeMs>.<value>[.<appendix>]",
                )
    if "client_ip_address" in present:
        ip = user_data["client_ip_address"]
        if not isinstance(ip, str) or not is_ip(ip):
            raise _bad_field(
                index, "user_data.client_ip_address", "must be a valid IPv4 or IPv6 address"
            )
    if "client_user_agent" in present:
        ua = user_data["client_user_agent"]
        if not isinstance(ua, str) or not ua.strip():
            raise _bad_field(index, "user_data.client_user_agent", "must be a non-empty string")
    for key in sorted(present & (PLAIN_KEYS - {"fbc", "fbp", "client_ip_address"})):
        value = user_data[key]
        if not (isinstance(value, str) and value) and not is_int(value):
            raise _bad_field(index, f"user_data.{key}", "must be a non-empty string")

    if website and "client_user_agent" not in present:
        raise _bad_field(index, "user_data.client_user_agent", "required for website events")
    identifiers = present & IDENTIFIER_KEYS
    if not identifiers:
        raise _bad_field(index, "user_data", "must contain at least one customer identifier")
    for combo in MATCH_BASELINE_COMBOS:
        if identifiers <= combo:
            raise _bad_field(
                index,
                "user_data",
                f"the identifiers ({', '.join(sorted(identifiers))}) are below the matching"
                f" baseline: a subset of ({', '.join(sorted(combo))}) alone is not enough",
            )


def _check_hashed(index: int, key: str, value: object) -> None:
    values = _string_list(value)
    if values is None:
        raise _bad_field(index, f"user_data.{key}", "must be a string or a non-empty array of them")
    for item in values:
        if _SHA256_HEX.fullmatch(item) is None:
            problem = "not hashed: must be a SHA-256 hash (64 lowercase hex characters)"
            if key == "em" and "@" in item:
                problem = "not hashed: looks like a raw email address; send its SHA-256 hash"
            raise _bad_field(index, f"user_data.{key}", problem)


def _check_strings(index: int, key: str, value: object) -> None:
    values = _string_list(value)
    if values is None or not all(values):
        raise _bad_field(
            index, f"user_data.{key}", "must be a non-empty string or a non-empty array of them"
        )


def _string_list(value: object) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return [str(v) for v in value]
    return None


def _check_custom_data(index: int, custom_data: object, *, purchase: bool) -> None:
    if custom_data is None:
        if purchase:
            raise _bad_field(index, "custom_data", "required for Purchase (value and currency)")
        return
    if not isinstance(custom_data, dict):
        raise _bad_field(index, "custom_data", "must be an object")
    value = custom_data.get("value")
    if value is None and purchase:
        raise _bad_field(index, "custom_data.value", "required for Purchase")
    if value is not None and not is_number(value):
        raise _bad_field(index, "custom_data.value", "must be a number")
    currency = custom_data.get("currency")
    if currency is None and purchase:
        raise _bad_field(index, "custom_data.currency", "required for Purchase")
    if currency is not None and (
        not isinstance(currency, str) or _CURRENCY.fullmatch(currency) is None
    ):
        raise _bad_field(index, "custom_data.currency", "must be a 3-letter ISO 4217 code")
    content_ids = custom_data.get("content_ids")
    if content_ids is not None and (
        not isinstance(content_ids, list)
        or not all((isinstance(c, str) and c) or is_int(c) for c in content_ids)
    ):
        raise _bad_field(index, "custom_data.content_ids", "must be an array of ids")
    contents = custom_data.get("contents")
    if contents is not None:
        if not isinstance(contents, list):
            raise _bad_field(index, "custom_data.contents", "must be an array of objects")
        for position, item in enumerate(contents):
            path = f"custom_data.contents[{position}]"
            if not isinstance(item, dict):
                raise _bad_field(index, path, "must be an object")
            item_id = item.get("id")
            if not ((isinstance(item_id, str) and item_id) or is_int(item_id)):
                raise _bad_field(index, f"{path}.id", "required")
            quantity = item.get("quantity")
            if quantity is not None and not is_int(quantity):
                raise _bad_field(index, f"{path}.quantity", "must be an integer")
            price = item.get("item_price")
            if price is not None and not is_number(price):
                raise _bad_field(index, f"{path}.item_price", "must be a number")
    num_items = custom_data.get("num_items")
    if num_items is not None and not is_int(num_items):
        raise _bad_field(index, "custom_data.num_items", "must be an integer")


# ---------------------------------------------------------------------- small helpers


def _decode_data(data: object) -> object:
    """Decode `data` sent as a JSON string and SDK-style per-event JSON strings."""
    if isinstance(data, str):
        try:
            data = loads_strict(data)
        except ValueError:
            raise _invalid("The parameter data must be a JSON-encoded array.") from None
    if isinstance(data, list):
        decoded: list[object] = []
        for index, item in enumerate(data):
            if isinstance(item, str):
                try:
                    item = loads_strict(item)
                except ValueError:
                    raise _invalid(f"Event data[{index}] is not valid JSON.") from None
            decoded.append(item)
        return decoded
    return data


def _event_ids(data: object) -> list[str]:
    """Best-effort list of the event_ids in a (possibly invalid) `data` parameter."""
    try:
        return string_ids(_decode_data(data), "event_id")
    except _Rejected:
        return []


def _optional_str(params: Mapping[str, object], key: str) -> str | None:
    value = params.get(key)
    if value is not None and not isinstance(value, str):
        raise _invalid(f"The parameter {key} must be a string.")
    return value


def _bearer(header: str) -> str:
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() in ("bearer", "oauth"):
        return credentials.strip()
    return ""


META_SANDBOX = web.AppKey("meta_sandbox", MetaSandbox)


def create_app(**kwargs: Any) -> web.Application:
    """Build a `MetaSandbox(**kwargs)` and return its app (sandbox at `app[META_SANDBOX]`)."""
    return MetaSandbox(**kwargs).app()
