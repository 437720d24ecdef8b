"""A local emulator of Reddit's Conversions API v3 (`/api/v3/pixels/{pixel_id}/conversion_events`).

Written from the platform reference (shared platforms.md §7 and Reddit's documented v3 errors),
not from our own mapper, so it independently checks what the gateway sends. Reddit validates a
request as a whole: one invalid event refuses it with HTTP 400 ("There were N invalid conversion
events. None were processed.") and nothing is recorded; the answer does not say which event, so
the sandbox keeps the per-event problems (``events[i].path: problem``) in its recorder only.

Answers: ``{"data": {"message": "Successfully processed N conversion events."}}`` on success,
``{"error": {"code": <status>, "message": …}}`` otherwise — 401 for a missing ("No bearer token
provided") or unknown ("UNAUTHORIZED") token, 403 for a pixel the token may not post to, 429 for
a default client user agent (Reddit throttles those) and for the ``burst_429`` knob, 400 for a
body that is not ``{"data": {"events": [...]}}``, an unknown field, more than `max_batch` events
or invalid events.

Strict checks per event: ``event_at`` epoch milliseconds within 7 days back and 5 minutes ahead;
``action_source`` one of WEBSITE/APP/PHYSICAL_STORE/OTHER; ``type.tracking_type`` a v3 type, with
``custom_event_name`` (1-64 characters) exactly for CUSTOM; ``user.email``, ``phone_number``,
``external_id``, ``ip_address``, ``idfa``, ``aaid`` as 64 lowercase hex (the gateway always
hashes them, the IP included); ``click_id`` and ``user.uuid`` as received, never hashed;
``metadata`` typed (currency upper-case ISO 4217, no value/currency/item_count on PAGE_VISIT,
VIEW_CONTENT and SEARCH).

Faults (the shared knobs of `base.Faults`): ``burst_429`` answers 429 with Retry-After
(``retry_after``; 0 sends none), ``error_rate``/``error_status``/``down`` a 5xx, ``token_expired``
a 401, ``reject_event_ids`` refuses a request holding an event with that ``conversion_id``,
``latency`` a delay.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from aiohttp import web

from .base import Fault, SandboxBase, read_json, retry_after_header
from .values import bearer_token, is_int, is_number

__all__ = [
    "ACTION_SOURCES",
    "REDDIT_SANDBOX",
    "TRACKING_TYPES",
    "RedditSandbox",
    "create_app",
]

TRACKING_TYPES = frozenset(
    {
        "PAGE_VISIT",
        "VIEW_CONTENT",
        "SEARCH",
        "ADD_TO_CART",
        "ADD_TO_WISHLIST",
        "PURCHASE",
        "LEAD",
        "SIGN_UP",
        "CUSTOM",
    }
)
ACTION_SOURCES = frozenset({"WEBSITE", "APP", "PHYSICAL_STORE", "OTHER"})
NO_VALUE_TYPES = frozenset({"PAGE_VISIT", "VIEW_CONTENT", "SEARCH"})
HASHED_USER_KEYS = frozenset({"email", "phone_number", "external_id", "ip_address", "idfa", "aaid"})
PLAIN_USER_KEYS = frozenset({"user_agent", "uuid"})
OTHER_USER_KEYS = frozenset({"screen_dimensions", "data_processing_options"})
EVENT_KEYS = frozenset(
    {"event_at", "action_source", "type", "click_id", "event_source_url", "metadata", "user"}
)
METADATA_KEYS = frozenset({"conversion_id", "currency", "value", "item_count", "products"})
PRODUCT_KEYS = frozenset({"id", "name", "category", "quantity", "item_price"})
DATA_KEYS = frozenset({"events", "test_id", "partner"})
MAX_AGE_MS = 7 * 86_400_000
MAX_FUTURE_MS = 5 * 60_000
MIN_MS = 100_000_000_000
"""Below this, event_at is seconds (or nonsense), not milliseconds."""
MAX_CUSTOM_NAME = 64
CLIENT_MAX_SIZE = 4 * 1024 * 1024
DEFAULT_AGENTS = ("python-requests", "python-httpx", "python/", "python-urllib", "curl/", "go-http")
"""User agents Reddit throttles ("Your user agent was automatically ratelimited.")."""

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_UUID_COOKIE = re.compile(r"\d{10,16}\.[0-9a-fA-F-]{8,64}")


class _Rejected(Exception):
    """Raised inside request handling to answer with a Reddit error."""

    def __init__(self, status: int, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = problems or []

    @property
    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.status, "message": self.message}}


class RedditSandbox(SandboxBase):
    """An in-process emulator of Reddit's Conversions API v3 with fault injection and a recorder."""

    page_title = "Reddit CAPI sandbox"

    def __init__(
        self,
        *,
        access_tokens: Collection[str] | None = None,
        pixel_ids: Collection[str] | None = None,
        clock: Callable[[], float] = time.time,
        seed: int = 0,
        max_batch: int = 1000,
        throttle_default_agents: bool = True,
    ) -> None:
        """Configure accepted tokens and pixels (None: any), the clock, PRNG seed, batch cap,
        and whether default client user agents are throttled as Reddit does."""
        super().__init__(access_tokens=access_tokens, clock=clock, seed=seed, max_batch=max_batch)
        self.pixel_ids: frozenset[str] | None = None if pixel_ids is None else frozenset(pixel_ids)
        self.throttle_default_agents = throttle_default_agents

    def app(self) -> web.Application:
        """Return a fresh aiohttp application serving this sandbox's routes."""
        app = web.Application(client_max_size=CLIENT_MAX_SIZE)
        app[REDDIT_SANDBOX] = self
        self.add_control_routes(app)
        app.router.add_post("/api/v3/pixels/{pixel_id}/conversion_events", self._handle_events)
        return app

    # ------------------------------------------------------------------ the CAPI endpoint

    async def _handle_events(self, request: web.Request) -> web.Response:
        self.recorder.requests += 1
        pixel_id = request.match_info["pixel_id"]
        fault = await self._injector.decide()
        conversion_ids: list[str] = []
        test_id: object = None
        try:
            raw = await _read(request)
            conversion_ids = _conversion_ids(raw)
            if fault is not None:
                raise _fault_error(fault, self.faults.error_status)
            self._check_auth(request, pixel_id)
            events, test_id = self._parse_body(raw)
            now_ms = self.clock() * 1000
            problems: list[str] = []
            for index, event in enumerate(events):
                problems.extend(self._event_problems(index, event, now_ms))
            if problems:
                bad = len({p.split(".", 1)[0].split(":", 1)[0] for p in problems})
                raise _Rejected(
                    400,
                    f"There were {bad} invalid conversion events. None were processed.",
                    problems,
                )
        except _Rejected as rejected:
            headers: dict[str, str] = {}
            if rejected.status == 429 and fault is Fault.THROTTLED and self.faults.retry_after > 0:
                headers["Retry-After"] = retry_after_header(self.faults.retry_after)
            self.recorder.rejected.append(
                {
                    "status": rejected.status,
                    "body": rejected.body,
                    "problems": rejected.problems,
                    "conversion_ids": conversion_ids,
                    "_pixel_id": pixel_id,
                    "_received_at": self.clock(),
                }
            )
            return web.json_response(rejected.body, status=rejected.status, headers=headers)
        received_at = self.clock()
        for event in events:
            record = dict(event)
            record["_pixel_id"] = pixel_id
            record["_test_id"] = test_id
            record["_received_at"] = received_at
            self.recorder.accepted.append(record)
        message = f"Successfully processed {len(events)} conversion events."
        return web.json_response({"data": {"message": message}})

    def _check_auth(self, request: web.Request, pixel_id: str) -> None:
        token = bearer_token(request.headers.get("Authorization", ""))
        if not token:
            raise _Rejected(401, "No bearer token provided")
        if not self.accepts_token(token):
            raise _Rejected(401, "UNAUTHORIZED")
        if self.pixel_ids is not None and pixel_id not in self.pixel_ids:
            raise _Rejected(
                403, f"You're not authorized to post conversions to Pixel ID {pixel_id}."
            )
        agent = request.headers.get("User-Agent", "").strip().lower()
        if self.throttle_default_agents and (not agent or agent.startswith(DEFAULT_AGENTS)):
            raise _Rejected(429, "Your user agent was automatically ratelimited.")

    def _parse_body(self, raw: object) -> tuple[list[dict[str, Any]], object]:
        if not isinstance(raw, dict):
            raise _Rejected(400, "The request body must be a JSON object.")
        for key in raw:
            if key != "data":
                raise _Rejected(400, f'JSON error "unknown field" on field "{key}"')
        data = raw.get("data")
        if not isinstance(data, dict):
            raise _Rejected(400, 'JSON error: "data" must be an object with "events"')
        for key in data:
            if key not in DATA_KEYS:
                raise _Rejected(400, f'JSON error "unknown field" on field "{key}"')
        test_id = data.get("test_id")
        if test_id is not None and not (isinstance(test_id, str) and test_id):
            raise _Rejected(400, 'JSON error: "test_id" must be a non-empty string')
        events = data.get("events")
        if not isinstance(events, list) or not events:
            raise _Rejected(400, 'JSON error: "events" must be a non-empty array')
        if len(events) > self.max_batch:
            raise _Rejected(400, "Bad Request")
        for index, item in enumerate(events):
            if not isinstance(item, dict):
                raise _Rejected(
                    400, "There were 1 invalid conversion events. None were processed.",
                    [f"events[{index}]: must be a JSON object"],
                )  # fmt: skip
        return events, test_id

    # ------------------------------------------------------------------ event validation

    def _event_problems(self, index: int, event: Mapping[str, object], now_ms: float) -> list[str]:
        at = f"events[{index}]"
        problems: list[str] = []
        for key in event:
            if key not in EVENT_KEYS:
                problems.append(f"{at}.{key}: unknown field")
        problems.extend(_time_problems(at, event.get("event_at"), now_ms))
        if event.get("action_source") not in ACTION_SOURCES:
            allowed = ", ".join(sorted(ACTION_SOURCES))
            problems.append(f"{at}.action_source: required, one of {allowed}")
        tracking = _type_problems(at, event.get("type"), problems)
        url = event.get("event_source_url")
        if url is not None and not (
            isinstance(url, str) and url.startswith(("http://", "https://"))
        ):
            problems.append(f"{at}.event_source_url: must be an absolute http(s) URL")
        click = event.get("click_id")
        if click is not None:
            if not isinstance(click, str) or not click:
                problems.append(f"{at}.click_id: must be a non-empty string")
            elif _SHA256_HEX.fullmatch(click):
                problems.append(f"{at}.click_id: must be sent as received, never hashed")
        problems.extend(_metadata_problems(at, event.get("metadata"), tracking))
        problems.extend(_user_problems(at, event.get("user")))
        metadata = event.get("metadata")
        conversion_id = metadata.get("conversion_id") if isinstance(metadata, dict) else None
        if isinstance(conversion_id, str) and conversion_id in self.faults.reject_event_ids:
            problems.append(f"{at}.metadata.conversion_id: rejected by the sandbox")
        return problems


def _fault_error(fault: Fault, error_status: int) -> _Rejected:
    if fault is Fault.THROTTLED:
        return _Rejected(429, "Too many requests/events within timeframe.")
    if fault is Fault.SERVER_ERROR:
        return _Rejected(
            error_status,
            "The service is currently unavailable. No conversion events were processed.",
        )
    return _Rejected(401, "UNAUTHORIZED")


def _time_problems(at: str, value: object, now_ms: float) -> list[str]:
    if not is_int(value) or not isinstance(value, int) or value <= 0:
        return [f"{at}.event_at: required, an integer Unix time in milliseconds"]
    if value < MIN_MS:
        return [f"{at}.event_at: looks like seconds; send milliseconds"]
    if value > now_ms + MAX_FUTURE_MS:
        return [f"{at}.event_at: is more than 5 minutes in the future"]
    if value < now_ms - MAX_AGE_MS:
        return [f"{at}.event_at: is more than 7 days old"]
    return []


def _type_problems(at: str, value: object, problems: list[str]) -> str | None:
    """Append the problems of `type` and return its tracking type (None when invalid)."""
    if not isinstance(value, dict):
        problems.append(f"{at}.type: required, an object with tracking_type")
        return None
    tracking = value.get("tracking_type")
    if tracking not in TRACKING_TYPES:
        problems.append(f"{at}.type.tracking_type: must be a v3 type (UPPER_SNAKE_CASE)")
        return None
    name = value.get("custom_event_name")
    if tracking == "CUSTOM":
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_CUSTOM_NAME:
            problems.append(
                f"{at}.type.custom_event_name: required for CUSTOM, 1-{MAX_CUSTOM_NAME} characters"
            )
    elif name is not None:
        problems.append(f"{at}.type.custom_event_name: only allowed with CUSTOM")
    for key in value:
        if key not in ("tracking_type", "custom_event_name"):
            problems.append(f"{at}.type.{key}: unknown field")
    return str(tracking)


def _metadata_problems(at: str, value: object, tracking: str | None) -> list[str]:
    if value is None:
        return []
    path = f"{at}.metadata"
    if not isinstance(value, dict):
        return [f"{path}: must be an object"]
    problems = [f"{path}.{k}: unknown field" for k in value if k not in METADATA_KEYS]
    conversion_id = value.get("conversion_id")
    if conversion_id is not None and not (isinstance(conversion_id, str) and conversion_id):
        problems.append(f"{path}.conversion_id: must be a non-empty string")
    amount = value.get("value")
    if amount is not None and not is_number(amount):
        problems.append(f"{path}.value: must be a number")
    currency = value.get("currency")
    if currency is not None and not (isinstance(currency, str) and _CURRENCY.fullmatch(currency)):
        problems.append(f"{path}.currency: must be an upper-case ISO 4217 code")
    count = value.get("item_count")
    if count is not None and not (is_int(count) and isinstance(count, int) and count >= 0):
        problems.append(f"{path}.item_count: must be a non-negative integer")
    if tracking in NO_VALUE_TYPES:
        for key in ("value", "currency", "item_count"):
            if key in value:
                problems.append(f"{path}.{key}: not supported for {tracking}")
    products = value.get("products")
    if products is not None:
        if not isinstance(products, list):
            problems.append(f"{path}.products: must be an array of objects")
        else:
            for position, item in enumerate(products):
                problems.extend(_product_problems(f"{path}.products[{position}]", item))
    return problems


def _product_problems(path: str, item: object) -> list[str]:
    if not isinstance(item, dict):
        return [f"{path}: must be an object"]
    problems = [f"{path}.{k}: unknown field" for k in item if k not in PRODUCT_KEYS]
    if not (isinstance(item.get("id"), str) and item["id"]):
        problems.append(f"{path}.id: required, a non-empty string")
    for key in ("name", "category"):
        if item.get(key) is not None and not isinstance(item[key], str):
            problems.append(f"{path}.{key}: must be a string")
    if item.get("quantity") is not None and not is_int(item["quantity"]):
        problems.append(f"{path}.quantity: must be an integer")
    if item.get("item_price") is not None and not is_number(item["item_price"]):
        problems.append(f"{path}.item_price: must be a number")
    return problems


def _user_problems(at: str, user: object) -> list[str]:
    if user is None:
        return []
    path = f"{at}.user"
    if not isinstance(user, dict):
        return [f"{path}: must be an object"]
    problems: list[str] = []
    for key, value in user.items():
        if key in HASHED_USER_KEYS:
            if not (isinstance(value, str) and _SHA256_HEX.fullmatch(value)):
                problems.append(f"{path}.{key}: must be SHA-256 hashed (64 lowercase hex)")
        elif key in PLAIN_USER_KEYS:
            if not (isinstance(value, str) and value.strip()):
                problems.append(f"{path}.{key}: must be a non-empty string")
            elif _SHA256_HEX.fullmatch(value):
                problems.append(f"{path}.{key}: must be sent as received, never hashed")
            elif key == "uuid" and not _UUID_COOKIE.fullmatch(value):
                problems.append(f"{path}.uuid: expected the _rdt_uuid form <ms>.<uuid>")
        elif key == "data_processing_options":
            problems.extend(_options_problems(f"{path}.{key}", value))
        elif key == "screen_dimensions":
            ok = isinstance(value, dict) and all(is_int(value.get(k)) for k in ("width", "height"))
            if not ok:
                problems.append(f"{path}.screen_dimensions: expected integer width and height")
        else:
            problems.append(f"{path}.{key}: unknown field")
    return problems


def _options_problems(path: str, value: object) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path}: must be an object with modes"]
    problems = [
        f"{path}.{k}: unknown field" for k in value if k not in ("modes", "country", "region")
    ]
    modes = value.get("modes")
    if not (isinstance(modes, list) and modes and all(m == "LDU" for m in modes)):
        problems.append(f'{path}.modes: must be ["LDU"]')
    for key in ("country", "region"):
        if value.get(key) is not None and not isinstance(value[key], str):
            problems.append(f"{path}.{key}: must be a string")
    return problems


async def _read(request: web.Request) -> object:
    return await read_json(
        request,
        too_large=lambda: _Rejected(413, f"The request body exceeds {CLIENT_MAX_SIZE} bytes."),
        invalid=lambda: _Rejected(400, "JSON error: the request body is not valid JSON"),
    )


def _conversion_ids(raw: object) -> list[str]:
    data = raw.get("data") if isinstance(raw, dict) else None
    events = data.get("events") if isinstance(data, dict) else None
    if not isinstance(events, list):
        return []
    out: list[str] = []
    for event in events:
        metadata = event.get("metadata") if isinstance(event, dict) else None
        cid = metadata.get("conversion_id") if isinstance(metadata, dict) else None
        if isinstance(cid, str):
            out.append(cid)
    return out


REDDIT_SANDBOX = web.AppKey("reddit_sandbox", RedditSandbox)


def create_app(**kwargs: Any) -> web.Application:
    """Build a `RedditSandbox(**kwargs)` and return its app (sandbox at `app[REDDIT_SANDBOX]`)."""
    return RedditSandbox(**kwargs).app()
