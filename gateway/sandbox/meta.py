"""A local emulator of Meta's Conversions API (Graph `/{version}/{pixel_id}/events`).

Written from the platform reference (shared platforms.md §1), not from our own mapper, so that it
is an independent check of what the gateway sends. It validates each request the way Meta does:
one bad event rejects the whole request with error code 100 and nothing is processed.

The event checks are in gateway/sandbox/meta_checks.py and the Graph error answers (with their
subcodes) in gateway/sandbox/meta_errors.py; this module holds the endpoint, the request parsing
and the recording.
"""

from __future__ import annotations

import random
import string
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from aiohttp import web

from .base import Fault, SandboxBase, loads_strict, retry_after_header
from .meta_checks import check_event
from .meta_errors import (
    SUBCODE_PIXEL_NOT_FOUND,
    THROTTLED,
    TOKEN_EXPIRED,
    TOKEN_INVALID,
    TOKEN_MISSING,
    MetaError,
    Rejected,
    bad_field,
    invalid,
    server_error,
)
from .values import string_ids

__all__ = [
    "META_SANDBOX",
    "MetaSandbox",
    "create_app",
]

CLIENT_MAX_SIZE = 10 * 1024 * 1024
_TRACE_ALPHABET = string.ascii_letters + string.digits + "-_"


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
        except Rejected as rejected:
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
        except Rejected:
            event_ids = []
        headers: dict[str, str] = {}
        if fault is Fault.THROTTLED:
            error = THROTTLED
            headers["Retry-After"] = retry_after_header(self.faults.retry_after)
        elif fault is Fault.SERVER_ERROR:
            error = server_error(self.faults.error_status)
        else:
            error = TOKEN_EXPIRED
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
                        raise invalid("The request body is not valid JSON.") from None
                    if not isinstance(body, dict):
                        raise invalid("The JSON request body must be an object.")
                    params.update(body)
        except web.HTTPRequestEntityTooLarge:
            raise Rejected(
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
            raise Rejected(TOKEN_MISSING)
        if not self.accepts_token(token):
            raise Rejected(TOKEN_INVALID)

    def _parse_data(self, params: Mapping[str, object]) -> list[dict[str, Any]]:
        data = _decode_data(params.get("data"))
        if data is None:
            raise invalid("The parameter data is required.")
        if not isinstance(data, list):
            raise invalid("The parameter data must be an array of event objects.")
        if not data:
            raise invalid("The parameter data must contain at least one event.")
        if len(data) > self.max_batch:
            raise invalid(
                f"The parameter data holds {len(data)} events; at most {self.max_batch} are"
                " allowed per request."
            )
        events: list[dict[str, Any]] = []
        for index, item in enumerate(data):
            if not isinstance(item, dict):
                raise invalid(f"Event data[{index}] must be a JSON object.")
            events.append(item)
        return events

    # ------------------------------------------------------------------ event validation

    def _validate_event(self, index: int, event: Mapping[str, object], now: float) -> None:
        check_event(index, event, now)
        event_id = event.get("event_id")
        if isinstance(event_id, str) and event_id in self.faults.reject_event_ids:
            raise bad_field(index, "event_id", "rejected by the sandbox (reject_event_ids fault)")


# ---------------------------------------------------------------------- small helpers


def _decode_data(data: object) -> object:
    """Decode `data` sent as a JSON string and SDK-style per-event JSON strings."""
    if isinstance(data, str):
        try:
            data = loads_strict(data)
        except ValueError:
            raise invalid("The parameter data must be a JSON-encoded array.") from None
    if isinstance(data, list):
        decoded: list[object] = []
        for index, item in enumerate(data):
            if isinstance(item, str):
                try:
                    item = loads_strict(item)
                except ValueError:
                    raise invalid(f"Event data[{index}] is not valid JSON.") from None
            decoded.append(item)
        return decoded
    return data


def _event_ids(data: object) -> list[str]:
    """Best-effort list of the event_ids in a (possibly invalid) `data` parameter."""
    try:
        return string_ids(_decode_data(data), "event_id")
    except Rejected:
        return []


def _optional_str(params: Mapping[str, object], key: str) -> str | None:
    value = params.get(key)
    if value is not None and not isinstance(value, str):
        raise invalid(f"The parameter {key} must be a string.")
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
