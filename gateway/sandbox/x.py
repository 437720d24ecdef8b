"""A local emulator of X's Conversion API (`POST /{version}/measurement/conversions/{pixel_id}`).

Written from the platform reference (shared platforms.md §9), not from our own mapper, so that it
is an independent check of what the gateway sends. Like the X Ads API it authenticates every
request with OAuth 1.0a (HMAC-SHA1): the `Authorization: OAuth …` header must carry the
configured consumer key and access token, a signature over method, URL and `oauth_*` parameters
made with the configured secrets (recomputed with oauthlib's signature functions), a timestamp
within five minutes of the sandbox's clock and a nonce not seen before with that timestamp (a
retry must be signed afresh). Failures answer 401 `UNAUTHORIZED_ACCESS`.

Validation follows X's documented 400 messages, for the whole request (nothing is recorded when
one conversion is bad): "Conversion count limit is 500" (the `max_batch` knob), "Event_id (…)
is not a single event tag (SET)" for an event id not among the sandbox's `event_ids`, "At least
one user identifier must be provided", "Hashed_email is not a valid SHA-256 hash" (and the same
for the phone), plus the field rules of the conversion object: ISO-8601 `conversion_time`,
numbers, ISO 4217 currency, positive `number_items`, `contents` objects. Answers use X's shapes:
`{"data": {"conversions_processed": n, …}, "request": {"params": …}}` on success and
`{"errors": [{"code", "message"}], "request": …}` otherwise. An unknown pixel is 404.

Fault knobs (shared with the other sandboxes): `burst_429` answers 429 `TOO_MANY_REQUESTS` with
Retry-After (the `retry_after` knob) and `x-rate-limit-reset`; `error_rate`/`down` answer
`error_status` with `SERVICE_UNAVAILABLE`; `token_expired` answers 401; `reject_event_ids` makes
the conversions with those `conversion_id`s invalid (400).
"""

from __future__ import annotations

import hmac
import math
import random
import re
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any

from aiohttp import web
from oauthlib.oauth1 import Client
from oauthlib.oauth1.rfc5849 import signature, utils

from .base import Fault, SandboxBase, loads_strict, retry_after_header
from .values import is_int, is_ip, is_number, string_ids_under

__all__ = [
    "X_SANDBOX",
    "XSandbox",
    "create_app",
]

MAX_BATCH = 500
CLIENT_MAX_SIZE = 10 * 1024 * 1024
TIMESTAMP_SKEW = 300
"""Seconds an `oauth_timestamp` may differ from the sandbox's clock."""
NONCES_KEPT = 100_000

IDENTIFIER_KEYS = frozenset({"twclid", "hashed_email", "hashed_phone_number"})
"""Identifiers that count on their own; ip_address and user_agent only next to one of them."""
DEVICE_KEYS = frozenset({"ip_address", "user_agent"})
CONVERSION_KEYS = frozenset(
    {
        "conversion_time",
        "event_id",
        "identifiers",
        "conversion_id",
        "value",
        "price_currency",
        "number_items",
        "description",
        "contents",
    }
)
CONTENT_KEYS = frozenset(
    {
        "content_id",
        "content_group_id",
        "content_name",
        "content_type",
        "content_price",
        "num_items",
    }
)

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")


class _Refused(Exception):
    """Raised inside request handling to answer with an X error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _invalid(message: str) -> _Refused:
    return _Refused(400, "INVALID_PARAMETER", message)


class XSandbox(SandboxBase):
    """An in-process emulator of X's Conversion API with OAuth 1.0a checks and fault injection."""

    page_title = "X Conversion API sandbox"

    def __init__(
        self,
        *,
        consumer_key: str,
        consumer_secret: str,
        access_token: str,
        access_token_secret: str,
        event_ids: Collection[str],
        pixel_ids: Collection[str] | None = None,
        clock: Callable[[], float] = time.time,
        seed: int = 0,
        max_batch: int = MAX_BATCH,
    ) -> None:
        """Configure the OAuth keys, the single-event tag ids X knows, the pixels (None: any),
        the clock, the PRNG seed and the batch cap."""
        super().__init__(access_tokens={access_token}, clock=clock, seed=seed, max_batch=max_batch)
        self._keys = Client(
            consumer_key,
            client_secret=consumer_secret,
            resource_owner_key=access_token,
            resource_owner_secret=access_token_secret,
        )
        self.event_ids = frozenset(event_ids)
        self.pixel_ids = None if pixel_ids is None else frozenset(pixel_ids)
        self._nonces: set[tuple[str, str]] = set()
        self._nonce_order: deque[tuple[str, str]] = deque()
        self._ids = random.Random(f"x-{seed}")

    def app(self) -> web.Application:
        """Return a fresh aiohttp application serving this sandbox's routes."""
        app = web.Application(client_max_size=CLIENT_MAX_SIZE)
        app[X_SANDBOX] = self
        self.add_control_routes(app)
        app.router.add_post(
            r"/{version:\d+}/measurement/conversions/{pixel_id}", self._handle_conversions
        )
        return app

    def reset(self) -> None:
        """Clear the recorder, faults and the nonces seen."""
        super().reset()
        self._nonces.clear()
        self._nonce_order.clear()

    # ----------------------------------------------------------------- the conversions endpoint

    async def _handle_conversions(self, request: web.Request) -> web.Response:
        self.recorder.requests += 1
        raw = await request.read()
        fault = await self._injector.decide()
        doc = _try_loads(raw)
        conversion_ids = string_ids_under(doc, "conversions", "conversion_id")
        if fault is not None:
            return self._answer_fault(fault, conversion_ids)
        pixel_id = request.match_info["pixel_id"]
        try:
            self._check_oauth(request)
            if self.pixel_ids is not None and pixel_id not in self.pixel_ids:
                raise _Refused(404, "NOT_FOUND", f"Pixel {pixel_id} was not found")
            conversions = self._check_body(doc)
        except _Refused as refused:
            return self._refuse(refused, conversion_ids)
        received_at = self.clock()
        for conversion in conversions:
            record = dict(conversion)
            record["_pixel_id"] = pixel_id
            record["_received_at"] = received_at
            self.recorder.accepted.append(record)
        debug_id = "".join(self._ids.choice("0123456789abcdef") for _ in range(16))
        return web.json_response(
            {
                "data": {"conversions_processed": len(conversions), "debug_id": debug_id},
                "request": {"params": {"pixel_id": pixel_id}},
            }
        )

    def _refuse(
        self,
        refused: _Refused,
        conversion_ids: list[str],
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        self.recorder.rejected.append(
            {
                "status": refused.status,
                "code": refused.code,
                "message": refused.message,
                "event_ids": conversion_ids,
                "_received_at": self.clock(),
            }
        )
        return web.json_response(
            {
                "errors": [{"code": refused.code, "message": refused.message}],
                "request": {"params": {}},
            },
            status=refused.status,
            headers=headers,
        )

    def _answer_fault(self, fault: Fault, conversion_ids: list[str]) -> web.Response:
        if fault is Fault.THROTTLED:
            wait = self.faults.retry_after
            headers = {
                "Retry-After": retry_after_header(wait),
                "x-rate-limit-reset": str(math.ceil(self.clock() + wait)),
            }
            refused = _Refused(429, "TOO_MANY_REQUESTS", "Rate limit exceeded")
            return self._refuse(refused, conversion_ids, headers)
        if fault is Fault.SERVER_ERROR:
            refused = _Refused(
                self.faults.error_status, "SERVICE_UNAVAILABLE", "Service unavailable"
            )
            return self._refuse(refused, conversion_ids)
        refused = _Refused(401, "UNAUTHORIZED_ACCESS", "The access token has expired")
        return self._refuse(refused, conversion_ids)

    # ------------------------------------------------------------------------------ OAuth 1.0a

    def _check_oauth(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        try:
            params = dict(utils.parse_authorization_header(header))
        except ValueError:
            raise _unauthorized("missing or malformed OAuth Authorization header") from None
        if params.get("oauth_signature_method") != "HMAC-SHA1":
            raise _unauthorized("oauth_signature_method must be HMAC-SHA1")
        if params.get("oauth_version", "1.0") != "1.0":
            raise _unauthorized("oauth_version must be 1.0")
        if params.get("oauth_consumer_key") != self._keys.client_key:
            raise _unauthorized("unknown consumer key")
        if not self.accepts_token(params.get("oauth_token", "")):
            raise _unauthorized("unknown access token")
        stamp, nonce = params.get("oauth_timestamp", ""), params.get("oauth_nonce", "")
        if not stamp.isdigit() or abs(int(stamp) - self.clock()) > TIMESTAMP_SKEW:
            raise _unauthorized("oauth_timestamp is missing or out of bounds")
        if not nonce:
            raise _unauthorized("oauth_nonce is missing")
        given = utils.unescape(params.get("oauth_signature", ""))
        collected = signature.collect_parameters(
            uri_query=request.query_string, headers={"Authorization": header}
        )
        base = signature.signature_base_string(
            request.method,
            signature.base_string_uri(str(request.url)),
            signature.normalize_parameters(collected),
        )
        expected = signature.sign_hmac_sha1_with_client(base, self._keys)
        if not hmac.compare_digest(expected, given):
            raise _unauthorized("the OAuth signature does not match")
        if (nonce, stamp) in self._nonces:
            raise _unauthorized("oauth_nonce was already used")
        self._remember(nonce, stamp)

    def _remember(self, nonce: str, stamp: str) -> None:
        self._nonces.add((nonce, stamp))
        self._nonce_order.append((nonce, stamp))
        if len(self._nonce_order) > NONCES_KEPT:
            self._nonces.discard(self._nonce_order.popleft())

    # ------------------------------------------------------------------------------ validation

    def _check_body(self, doc: object) -> list[dict[str, Any]]:
        if not isinstance(doc, dict):
            raise _invalid("The request body must be a JSON object")
        conversions = doc.get("conversions")
        if not isinstance(conversions, list) or not conversions:
            raise _invalid("conversions must be a non-empty array")
        if len(conversions) > self.max_batch:
            raise _invalid(f"Conversion count limit is {self.max_batch}")
        unknown = set(doc) - {"conversions"}
        if unknown:
            raise _invalid(f"Unknown parameter {sorted(unknown)[0]}")
        for index, conversion in enumerate(conversions):
            self._check_conversion(index, conversion)
        return conversions

    def _check_conversion(self, index: int, conversion: object) -> None:
        where = f"conversions[{index}]"
        if not isinstance(conversion, dict):
            raise _invalid(f"{where} must be an object")
        unknown = set(conversion) - CONVERSION_KEYS
        if unknown:
            raise _invalid(f"{where}: unknown parameter {sorted(unknown)[0]}")
        _check_time(where, conversion.get("conversion_time"))
        event_id = conversion.get("event_id")
        if not isinstance(event_id, str) or not event_id:
            raise _invalid(f"{where}: Missing event_id")
        if event_id not in self.event_ids:
            raise _invalid(f"Event_id ({event_id}) is not a single event tag (SET)")
        _check_identifiers(where, conversion.get("identifiers"))
        conversion_id = conversion.get("conversion_id")
        if conversion_id is not None and (not isinstance(conversion_id, str) or not conversion_id):
            raise _invalid(f"{where}.conversion_id must be a non-empty string")
        if conversion_id in self.faults.reject_event_ids:
            raise _invalid(f"{where}: conversion refused by the sandbox (reject list)")
        _check_values(where, conversion)


def _unauthorized(reason: str) -> _Refused:
    message = f"This request is not properly authenticated: {reason}"
    return _Refused(401, "UNAUTHORIZED_ACCESS", message)


def _check_time(where: str, value: object) -> None:
    if not isinstance(value, str) or _ISO_TIME.fullmatch(value) is None:
        raise _invalid(f"{where}.conversion_time must be an ISO-8601 time")
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _invalid(f"{where}.conversion_time must be an ISO-8601 time") from None


def _check_identifiers(where: str, identifiers: object) -> None:
    if not isinstance(identifiers, list) or not identifiers:
        raise _invalid("At least one user identifier must be provided")
    strong = False
    for i, item in enumerate(identifiers):
        path = f"{where}.identifiers[{i}]"
        if not isinstance(item, dict) or not item:
            raise _invalid(f"{path} must be a non-empty object")
        for key, value in item.items():
            if key not in IDENTIFIER_KEYS and key not in DEVICE_KEYS:
                raise _invalid(f"{path}: unknown identifier {key}")
            if not isinstance(value, str) or not value or value != value.strip():
                raise _invalid(f"{path}.{key} must be a trimmed non-empty string")
            if key == "hashed_email" and not _SHA256_HEX.fullmatch(value):
                raise _invalid("Hashed_email is not a valid SHA-256 hash")
            if key == "hashed_phone_number" and not _SHA256_HEX.fullmatch(value):
                raise _invalid("Hashed_phone_number is not a valid SHA-256 hash")
            if key == "ip_address" and not is_ip(value):
                raise _invalid(f"{path}.ip_address must be an IPv4 or IPv6 address")
            strong = strong or key in IDENTIFIER_KEYS
    if not strong:
        raise _invalid("At least one user identifier must be provided")


def _check_values(where: str, conversion: Mapping[str, Any]) -> None:
    value = conversion.get("value")
    if value is not None and not is_number(value):
        raise _invalid(f"{where}.value must be a number")
    currency = conversion.get("price_currency")
    if currency is not None and not (isinstance(currency, str) and _CURRENCY.fullmatch(currency)):
        raise _invalid(f"{where}.price_currency must be an ISO 4217 code")
    number = conversion.get("number_items")
    if number is not None and not (is_int(number) and number > 0):
        raise _invalid(f"{where}.number_items must be a positive integer")
    description = conversion.get("description")
    if description is not None and not isinstance(description, str):
        raise _invalid(f"{where}.description must be a string")
    contents = conversion.get("contents")
    if contents is None:
        return
    if not isinstance(contents, list):
        raise _invalid(f"{where}.contents must be an array")
    for i, item in enumerate(contents):
        path = f"{where}.contents[{i}]"
        if not isinstance(item, dict) or set(item) - CONTENT_KEYS:
            raise _invalid(f"{path} must be an object of content fields")
        if not isinstance(item.get("content_id"), str) or not item["content_id"]:
            raise _invalid(f"{path}.content_id must be a non-empty string")
        if item.get("content_price") is not None and not is_number(item["content_price"]):
            raise _invalid(f"{path}.content_price must be a number")
        count = item.get("num_items")
        if count is not None and not (is_int(count) and count > 0):
            raise _invalid(f"{path}.num_items must be a positive integer")


def _try_loads(raw: bytes) -> object:
    try:
        return loads_strict(raw)
    except (ValueError, UnicodeDecodeError):
        return None


X_SANDBOX = web.AppKey("x_sandbox", XSandbox)


def create_app(**kwargs: Any) -> web.Application:
    """Build an `XSandbox(**kwargs)` and return its app (sandbox at `app[X_SANDBOX]`)."""
    return XSandbox(**kwargs).app()
