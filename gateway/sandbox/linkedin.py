"""A local emulator of LinkedIn's Conversions API (`POST /rest/conversionEvents`).

Written from the platform reference (shared platforms.md §6), not from our own mapper, so it
independently checks what the gateway sends: the bearer token, the `LinkedIn-Version` (YYYYMM)
and `X-Restli-Protocol-Version: 2.0.0` headers, one event (answered 201) or a batch with
`X-RestLi-Method: BATCH_CREATE` and `{"elements": [...]}` of at most 5,000 events.

Two kinds of refusal (modelled on Rest.li batch answers; LinkedIn does not document which
problems fail a whole request and which a single element):

* the request's shape (JSON, headers, batch size) or an element's schema (the rule URN, epoch
  *milliseconds*, `user.userIds` present even when empty, 64-hex `SHA256_EMAIL`, a plain
  `li_fat_id`, `amount` as a string, unknown fields): the whole request is refused with 400/422
  and LinkedIn's error shape ``{"status", "serviceErrorCode", "code", "message"}`` naming
  ``elements[i].<field>``; nothing is recorded;
* an element that is well formed but cannot be used (older than 90 days, a rule the account
  does not own when `rules` is set, an event id in the `reject_event_ids` fault knob): the batch
  is answered 200 with ``{"elements": [{"status": 201}, {"status": 400, "error": {…}}, …]}`` in
  request order, and only the good elements are recorded.

The exact error codes LinkedIn uses per field are not published; those here are the sandbox's
own (clients should rely on the HTTP status). Faults (the shared knobs of `base.Faults`):
``burst_429`` answers 429 with Retry-After (``retry_after``), ``error_rate``/``error_status``
and ``down`` a 5xx, ``token_expired`` a 401, ``latency`` a delay.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from aiohttp import web

from .base import Fault, SandboxBase, read_json, retry_after_header
from .values import bearer_token, string_ids

__all__ = ["ID_TYPES", "LINKEDIN_SANDBOX", "LinkedInSandbox", "create_app"]

ID_TYPES = frozenset(
    {"SHA256_EMAIL", "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "ACXIOM_ID", "ORACLE_MOAT_ID"}
)
EVENT_KEYS = frozenset({"conversion", "conversionHappenedAt", "conversionValue", "eventId", "user"})
USER_KEYS = frozenset({"userIds", "userInfo", "externalIds", "lead"})
USER_INFO_KEYS = frozenset({"firstName", "lastName", "companyName", "title", "countryCode"})
MAX_AGE_MS = 90 * 86_400_000
MAX_FUTURE_MS = 5 * 60_000
MS_THRESHOLD = 100_000_000_000
MAX_BATCH = 5000
CLIENT_MAX_SIZE = 16 * 1024 * 1024

_RULE_URN = re.compile(r"urn:lla:llaPartnerConversion:([0-9]{1,19})")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"20[0-9]{2}(0[1-9]|1[0-2])")
_CURRENCY = re.compile(r"[A-Z]{3}")
_AMOUNT = re.compile(r"[0-9]+(\.[0-9]+)?")
_COUNTRY = re.compile(r"[A-Za-z]{2}")


class _Rejected(Exception):
    """Raised inside request handling to answer with a LinkedIn error."""

    def __init__(self, status: int, message: str, code: str, service_code: int) -> None:
        super().__init__(message)
        self.status = status
        self.body = {
            "status": status,
            "serviceErrorCode": service_code,
            "code": code,
            "message": message,
        }


def _request_error(message: str, status: int = 400, code: str = "INVALID_REQUEST") -> _Rejected:
    return _Rejected(status, message, code, 100)


def _field_error(index: int | None, path: str, problem: str, status: int = 422) -> _Rejected:
    where = f"elements[{index}].{path}" if index is not None else path
    return _Rejected(status, f"{where}: {problem}", "FIELD_VALIDATION_ERROR", 400)


class LinkedInSandbox(SandboxBase):
    """An in-process emulator of LinkedIn's Conversions API with fault injection and a recorder."""

    page_title = "LinkedIn Conversions API sandbox"

    def __init__(
        self,
        *,
        access_tokens: Collection[str] | None = None,
        rules: Collection[str] | None = None,
        sunset_versions: Collection[str] = (),
        clock: Callable[[], float] = time.time,
        seed: int = 0,
        max_batch: int = MAX_BATCH,
    ) -> None:
        """Configure accepted tokens and rule ids (None: any), sunset versions, clock, seed."""
        super().__init__(access_tokens=access_tokens, clock=clock, seed=seed, max_batch=max_batch)
        self.rules: frozenset[str] | None = None if rules is None else frozenset(rules)
        self.sunset_versions = frozenset(sunset_versions)

    def app(self) -> web.Application:
        """Return a fresh aiohttp application serving this sandbox's routes."""
        app = web.Application(client_max_size=CLIENT_MAX_SIZE)
        app[LINKEDIN_SANDBOX] = self
        self.add_control_routes(app)
        app.router.add_post("/rest/conversionEvents", self._handle_events)
        return app

    # ------------------------------------------------------------------ the API endpoint

    async def _handle_events(self, request: web.Request) -> web.Response:
        self.recorder.requests += 1
        fault = await self._injector.decide()
        event_ids: list[str] = []
        try:
            raw = await _read(request)
            batch = request.headers.get("X-RestLi-Method", "").upper() == "BATCH_CREATE"
            event_ids = _event_ids(raw, batch)
            if fault is not None:
                raise self._fault_error(fault)
            self._check_headers(request)
            events = _elements(raw, batch)
            if len(events) > self.max_batch:
                raise _request_error(
                    f"elements holds {len(events)} events; at most {self.max_batch} are allowed."
                )
            now_ms = self.clock() * 1000
            for index, event in enumerate(events):
                _check_event(index if batch else None, event, now_ms)
        except _Rejected as rejected:
            self.recorder.rejected.append(
                {
                    "status": rejected.status,
                    "body": rejected.body,
                    "event_ids": event_ids,
                    "_received_at": self.clock(),
                }
            )
            headers = {}
            if rejected.status == 429:
                headers["Retry-After"] = retry_after_header(self.faults.retry_after)
            return web.json_response(rejected.body, status=rejected.status, headers=headers)
        statuses: list[dict[str, Any]] = []
        for index, event in enumerate(events):
            problem = self._unusable(event, now_ms)
            if problem is not None:
                status, message = problem
                self.recorder.rejected.append(
                    {
                        "status": status,
                        "body": {"message": message},
                        "event_ids": [event.get("eventId")],
                        "element": index,
                        "_received_at": self.clock(),
                    }
                )
                statuses.append({"status": status, "error": {"status": status, "message": message}})
                continue
            record = dict(event)
            record["_received_at"] = self.clock()
            record["_version"] = request.headers.get("LinkedIn-Version", "")
            self.recorder.accepted.append(record)
            statuses.append({"status": 201})
        if not batch:
            only = statuses[0]
            if only["status"] != 201:
                return web.json_response(only["error"], status=only["status"])
            return web.Response(status=201)
        return web.json_response({"elements": statuses})

    def _fault_error(self, fault: Fault) -> _Rejected:
        if fault is Fault.THROTTLED:
            return _Rejected(
                429, "Resource level throttle limit reached.", "TOO_MANY_REQUESTS", 101
            )
        if fault is Fault.SERVER_ERROR:
            return _Rejected(
                self.faults.error_status, "Internal error; retry later.", "INTERNAL_ERROR", 0
            )
        return _Rejected(
            401, "The token used in the request has expired.", "EXPIRED_ACCESS_TOKEN", 65601
        )

    def _check_headers(self, request: web.Request) -> None:
        token = bearer_token(request.headers.get("Authorization", ""))
        if not token:
            raise _Rejected(401, "Empty oauth2 access token", "EMPTY_ACCESS_TOKEN", 65602)
        if not self.accepts_token(token):
            raise _Rejected(401, "Invalid access token", "INVALID_ACCESS_TOKEN", 65600)
        version = request.headers.get("LinkedIn-Version", "")
        if not _VERSION.fullmatch(version):
            raise _request_error("A valid LinkedIn-Version header (YYYYMM) is required.")
        if version in self.sunset_versions:
            raise _Rejected(426, "Requested version is not active.", "VERSION_MISSING", 0)
        if request.headers.get("X-Restli-Protocol-Version") != "2.0.0":
            raise _request_error("X-Restli-Protocol-Version: 2.0.0 is required.")
        if request.content_type != "application/json":
            raise _request_error("Content-Type must be application/json.", 415)

    def _unusable(self, event: Mapping[str, Any], now_ms: float) -> tuple[int, str] | None:
        happened = event["conversionHappenedAt"]
        if happened < now_ms - MAX_AGE_MS:
            return 400, "conversionHappenedAt is more than 90 days ago"
        match = _RULE_URN.fullmatch(event["conversion"])
        if self.rules is not None and match is not None and match.group(1) not in self.rules:
            return 403, "the conversion rule does not belong to the ad account"
        event_id = event.get("eventId")
        if isinstance(event_id, str) and event_id in self.faults.reject_event_ids:
            return 400, "rejected by the sandbox (reject_event_ids)"
        return None


def _event_ids(raw: object, batch: bool) -> list[str]:
    return string_ids(raw.get("elements") if batch and isinstance(raw, dict) else [raw], "eventId")


def _elements(raw: object, batch: bool) -> list[dict[str, Any]]:
    if not isinstance(raw, dict):
        raise _request_error("The request body must be a JSON object.")
    if not batch:
        return [raw]
    elements = raw.get("elements")
    if not isinstance(elements, list) or not elements:
        raise _request_error("elements must be a non-empty array for BATCH_CREATE.")
    for index, item in enumerate(elements):
        if not isinstance(item, dict):
            raise _field_error(index, "", "must be an object")
    return elements


def _check_event(index: int | None, event: Mapping[str, Any], now_ms: float) -> None:
    unknown = sorted(set(event) - EVENT_KEYS)
    if unknown:
        raise _field_error(index, unknown[0], "unknown field", 400)
    conversion = event.get("conversion")
    if not isinstance(conversion, str) or _RULE_URN.fullmatch(conversion) is None:
        raise _field_error(index, "conversion", "required, urn:lla:llaPartnerConversion:<id>")
    happened = event.get("conversionHappenedAt")
    if not isinstance(happened, int) or isinstance(happened, bool) or happened <= 0:
        raise _field_error(index, "conversionHappenedAt", "required, epoch milliseconds")
    if happened < MS_THRESHOLD:
        raise _field_error(index, "conversionHappenedAt", "looks like seconds; send milliseconds")
    if happened > now_ms + MAX_FUTURE_MS:
        raise _field_error(index, "conversionHappenedAt", "is in the future")
    event_id = event.get("eventId")
    if event_id is not None and not (isinstance(event_id, str) and event_id):
        raise _field_error(index, "eventId", "must be a non-empty string")
    _check_value(index, event.get("conversionValue"))
    _check_user(index, event.get("user"))


def _check_value(index: int | None, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or set(value) != {"currencyCode", "amount"}:
        raise _field_error(index, "conversionValue", "must be {currencyCode, amount}")
    currency = value["currencyCode"]
    if not isinstance(currency, str) or _CURRENCY.fullmatch(currency) is None:
        raise _field_error(index, "conversionValue.currencyCode", "must be an ISO 4217 code")
    amount = value["amount"]
    if not isinstance(amount, str) or _AMOUNT.fullmatch(amount) is None:
        raise _field_error(index, "conversionValue.amount", "must be a decimal string")


def _check_user(index: int | None, user: object) -> None:
    if not isinstance(user, dict):
        raise _field_error(index, "user", "required, an object")
    unknown = sorted(set(user) - USER_KEYS)
    if unknown:
        raise _field_error(index, f"user.{unknown[0]}", "unknown field", 400)
    ids = user.get("userIds")
    if not isinstance(ids, list):
        raise _field_error(index, "user.userIds", "required (send [] to match on userInfo only)")
    seen: set[str] = set()
    for position, item in enumerate(ids):
        path = f"user.userIds[{position}]"
        if not isinstance(item, dict) or set(item) != {"idType", "idValue"}:
            raise _field_error(index, path, "must be {idType, idValue}")
        kind, value = item["idType"], item["idValue"]
        if kind not in ID_TYPES:
            raise _field_error(index, f"{path}.idType", "unknown idType")
        if kind in seen:
            raise _field_error(index, f"{path}.idType", "repeated idType")
        seen.add(kind)
        if not isinstance(value, str) or not value.strip():
            raise _field_error(index, f"{path}.idValue", "must be a non-empty string")
        if kind == "SHA256_EMAIL" and _SHA256_HEX.fullmatch(value) is None:
            raise _field_error(index, f"{path}.idValue", "must be SHA-256 hashed (64 lower hex)")
        if kind != "SHA256_EMAIL" and _SHA256_HEX.fullmatch(value) is not None:
            raise _field_error(index, f"{path}.idValue", "must be sent as received, never hashed")
    info = user.get("userInfo")
    named = False
    if info is not None:
        if not isinstance(info, dict) or set(info) - USER_INFO_KEYS:
            raise _field_error(index, "user.userInfo", "unknown field or not an object")
        if not all(isinstance(v, str) and v.strip() for v in info.values()):
            raise _field_error(index, "user.userInfo", "values must be non-empty strings")
        if "countryCode" in info and _COUNTRY.fullmatch(info["countryCode"]) is None:
            raise _field_error(index, "user.userInfo.countryCode", "must be ISO alpha-2")
        named = "firstName" in info and "lastName" in info
    externals = user.get("externalIds")
    if externals is not None and (
        not isinstance(externals, list)
        or len(externals) > 1
        or not all(isinstance(x, str) for x in externals)
    ):
        raise _field_error(index, "user.externalIds", "at most one string")
    if not ids and not named:
        raise _field_error(
            index, "user", "needs a userIds entry or userInfo with firstName and lastName"
        )


async def _read(request: web.Request) -> object:
    return await read_json(
        request,
        too_large=lambda: _request_error(f"The request body exceeds {CLIENT_MAX_SIZE} bytes.", 413),
        invalid=lambda: _request_error("The request body is not valid JSON."),
    )


LINKEDIN_SANDBOX = web.AppKey("linkedin_sandbox", LinkedInSandbox)


def create_app(**kwargs: Any) -> web.Application:
    """Build a `LinkedInSandbox(**kwargs)`; return its app (sandbox at `app[LINKEDIN_SANDBOX]`)."""
    return LinkedInSandbox(**kwargs).app()
