"""A local emulator of Google's OAuth2 token endpoint and the Google Ads click-conversion upload.

Written from the platform reference (shared platforms.md §4.3, §4.4, §10, pitfalls 20-21), not
from our own mapper, so it is an independent check of what the gateway sends.

`POST /token` — the OAuth2 refresh-token grant (`gateway/sandbox/oauth.py`, at `oauth`): the
configured client and refresh token get an access token living `token_lifetime` seconds on the
sandbox clock; knobs `oauth.refuse_refresh` (400 invalid_grant) and `oauth.errors` (503s).

`POST /{version}/customers/{id}:uploadClickConversions` — checks, in Google's REST error shape
(`{"error": {"code", "message", "status", "details": [GoogleAdsFailure]}}`):
`Authorization: Bearer` with a token it issued and that has not expired (else 401
`authenticationError` OAUTH_TOKEN_EXPIRED / OAUTH_TOKEN_INVALID), the `developer-token`
(401 DEVELOPER_TOKEN_INVALID), `login-customer-id` when a manager is configured (403
`authorizationError` USER_PERMISSION_DENIED), a known customer id (403 the same),
`partialFailure: true` (400 PARTIAL_FAILURE_MODE_REQUIRED), 1..`max_batch` conversions (400
TOO_MANY_CONVERSIONS_IN_REQUEST) and no unknown fields (400 INVALID_ARGUMENT).

Each conversion is then checked on its own and a bad one fails alone (partial failure: HTTP 200,
`partialFailureError` with one error per bad row whose `location.fieldPathElements` names
`conversions[i]`, and an empty object in `results[i]`): exactly one of gclid / gbraid / wbraid or
else user identifiers; `customers/{id}/conversionActions/{digits}` of this customer (and a known
action when `actions` is set); `yyyy-mm-dd hh:mm:ss±hh:mm`; ≤ 5 userIdentifiers each with exactly
one of hashedEmail / hashedPhoneNumber as 64 lower-case hex; GRANTED/DENIED consent; an ISO 4217
currency. Accepted conversions are recorded; a repeat of the same click id + action + time is
CLICK_CONVERSION_ALREADY_EXISTS and of the same orderId + action ORDER_ID_ALREADY_IN_USE
(nothing recorded twice; repeats are kept in `duplicates`); two such rows in one request both
fail (DUPLICATE_CLICK_CONVERSION_IN_REQUEST / DUPLICATE_ORDER_ID) and neither is recorded.
`validateOnly: true` checks everything and records nothing (`validated` counts those).

Fault knobs (`Faults`, shared with the other sandboxes): `burst_429` → 429 RESOURCE_EXHAUSTED
with Retry-After; `error_rate` / `down` → `error_status` INTERNAL; `token_expired` expires every
token issued so far (once: the next refresh works); `reject_event_ids` (orderIds) →
UNPARSEABLE_GCLID. `row_errors` maps an orderId to any ConversionUploadError name the row then
fails with (TOO_RECENT_EVENT, CLICK_NOT_FOUND, …); `row_errors_once` does so only once.

The checks themselves are in gateway/sandbox/google_ads_checks.py; this module holds the
endpoints, the emulated state (accepted and repeated conversions) and Google's error answers.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from aiohttp import web

from .base import Fault, SandboxBase, loads_strict, retry_after_header
from .google_ads_checks import CLICK_IDS, GoogleAdsChecks, Refused, RowError, bad, doubled_rows
from .oauth import RefreshTokenEndpoint

__all__ = ["GOOGLE_ADS_SANDBOX", "GoogleAdsSandbox", "create_app"]

MAX_BATCH = 2000
CLIENT_MAX_SIZE = 20 * 1024 * 1024
VERSION = "v26"
FAILURE_TYPE = "type.googleapis.com/google.ads.googleads.{version}.errors.GoogleAdsFailure"

_PATH = re.compile(r"([0-9]+):uploadClickConversions")


class GoogleAdsSandbox(GoogleAdsChecks, SandboxBase):
    """An in-process emulator of Google's token endpoint and uploadClickConversions."""

    page_title = "Google Ads API sandbox"

    def __init__(
        self,
        *,
        client_id: str = "sandbox-client",
        client_secret: str = "sandbox-secret",  # noqa: S107 (a test fixture value)
        refresh_token: str = "sandbox-refresh",  # noqa: S107 (a test fixture value)
        developer_token: str = "sandbox-developer-token",  # noqa: S107 (a test fixture value)
        customers: Collection[str] = ("1234567890",),
        login_customer_id: str | None = None,
        actions: Collection[str] | None = None,
        token_lifetime: float = 3599.0,
        clock: Callable[[], float] = time.time,
        seed: int = 0,
        max_batch: int = MAX_BATCH,
    ) -> None:
        """Configure the OAuth client, developer token, customers (and manager), the known
        conversion action ids (None: any), the token lifetime, clock, seed and batch cap."""
        super().__init__(access_tokens=None, clock=clock, seed=seed, max_batch=max_batch)
        self.oauth = RefreshTokenEndpoint(
            client_id=client_id,
            client_secret=client_secret,
            refresh_token=refresh_token,
            scope="https://www.googleapis.com/auth/adwords",
            lifetime=token_lifetime,
            clock=clock,
            token_prefix="ya29.",  # noqa: S106 (the look of a Google token, not a secret)
            seed=seed,
        )
        self.developer_token = developer_token
        self.customers = frozenset(customers)
        self.login_customer_id = login_customer_id
        self.actions = None if actions is None else frozenset(actions)
        self.row_errors: dict[str, str] = {}
        """Knob: orderId → ConversionUploadError name that row fails with, every time."""
        self.row_errors_once: dict[str, str] = {}
        """Knob: orderId → error name that row fails with once (then it is accepted)."""
        self.duplicates: list[dict[str, Any]] = []
        self.validated = 0
        self._clicks: set[tuple[str, str, str]] = set()
        self._orders: set[tuple[str, str]] = set()
        self._ids = random.Random(f"google-ads-{seed}")

    def reset(self) -> None:
        """Clear recordings, tokens and knobs (the shared ones and this sandbox's own)."""
        super().reset()
        self.oauth.reset()
        self.row_errors.clear()
        self.row_errors_once.clear()
        self.duplicates.clear()
        self.validated = 0
        self._clicks.clear()
        self._orders.clear()

    def app(self) -> web.Application:
        """Return a fresh aiohttp application serving this sandbox's routes."""
        app = web.Application(client_max_size=CLIENT_MAX_SIZE)
        app[GOOGLE_ADS_SANDBOX] = self
        self.add_control_routes(app)
        app.router.add_post("/token", self.oauth.handle)
        app.router.add_post(r"/{version:v\d+}/customers/{tail}", self._handle_upload)
        return app

    # ------------------------------------------------------------------ uploadClickConversions

    async def _handle_upload(self, request: web.Request) -> web.Response:
        self.recorder.requests += 1
        version = request.match_info["version"]
        raw = await request.read()
        if self.faults.token_expired:
            self.faults.token_expired = False
            self.oauth.expire_all()
        fault = await self._injector.decide()
        doc = _try_loads(raw)
        order_ids = _order_ids(doc)
        try:
            if fault is Fault.THROTTLED:
                raise Refused(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "quotaError",
                    "RESOURCE_EXHAUSTED",
                    "Too many requests. Retry in the time given by Retry-After.",
                )
            if fault is Fault.SERVER_ERROR:
                raise Refused(
                    self.faults.error_status,
                    "INTERNAL",
                    "internalError",
                    "INTERNAL_ERROR",
                    "An internal error has occurred.",
                )
            match = _PATH.fullmatch(request.match_info["tail"])
            if match is None:
                raise Refused(404, "NOT_FOUND", "", "", "Method not found.")
            customer = match.group(1)
            self._check_auth(request, customer)
            body = self._check_request(doc)
        except Refused as refused:
            return self._refuse(refused, version, order_ids)
        return self._upload(customer, body, version)

    def _upload(self, customer: str, body: dict[str, Any], version: str) -> web.Response:
        validate_only = bool(body.get("validateOnly", False))
        errors: list[tuple[int, RowError]] = []
        results: list[dict[str, Any]] = []
        now = self.clock()
        doubled = doubled_rows(body["conversions"])
        for index, conversion in enumerate(body["conversions"]):
            problem = self._check_conversion(customer, conversion)
            if problem is None:
                problem = doubled.get(index)
            if problem is None and not validate_only:
                problem = self._deduplicate(conversion)
            if problem is not None:
                errors.append((index, problem))
                results.append({})
                continue
            if validate_only:
                self.validated += 1
                continue
            self.recorder.accepted.append(
                {**conversion, "_customer_id": customer, "_received_at": now}
            )
            results.append(_result(conversion))
        answer: dict[str, Any] = {}
        if errors:
            answer["partialFailureError"] = self._partial_failure(errors, version)
        if not validate_only:
            answer["results"] = results
        return web.json_response(answer)

    def _deduplicate(self, conversion: dict[str, Any]) -> RowError | None:
        action = conversion["conversionAction"]
        click = next((conversion[k] for k in CLICK_IDS if k in conversion), None)
        order = conversion.get("orderId")
        if click is not None and (click, action, conversion["conversionDateTime"]) in self._clicks:
            self.duplicates.append(conversion)
            return bad(
                "CLICK_CONVERSION_ALREADY_EXISTS",
                "A conversion of this click, action and time was already uploaded.",
            )
        if isinstance(order, str) and (order, action) in self._orders:
            self.duplicates.append(conversion)
            return bad("ORDER_ID_ALREADY_IN_USE", "This order id was already used.", "orderId")
        if click is not None:
            self._clicks.add((click, action, conversion["conversionDateTime"]))
        if isinstance(order, str):
            self._orders.add((order, action))
        return None

    def _partial_failure(self, errors: list[tuple[int, RowError]], version: str) -> dict[str, Any]:
        items = []
        for index, error in errors:
            path: list[dict[str, Any]] = [{"fieldName": "conversions", "index": index}]
            if error.field:
                path.append({"fieldName": error.field})
            items.append(
                {
                    "errorCode": {error.kind: error.name},
                    "message": error.message,
                    "location": {"fieldPathElements": path},
                }
            )
        summary = ", ".join(f"{e.message}, at conversions[{i}]" for i, e in errors)
        return {
            "code": 3,
            "message": summary[:1000],
            "details": [
                {
                    "@type": FAILURE_TYPE.format(version=version),
                    "errors": items,
                    "requestId": self._request_id(),
                }
            ],
        }

    def _refuse(self, refused: Refused, version: str, order_ids: list[str]) -> web.Response:
        self.recorder.rejected.append(
            {
                "status": refused.http,
                "error": refused.name or refused.status,
                "message": refused.message,
                "order_ids": order_ids,
                "_received_at": self.clock(),
            }
        )
        detail: dict[str, Any] = {"@type": FAILURE_TYPE.format(version=version)}
        if refused.kind:
            detail["errors"] = [
                {"errorCode": {refused.kind: refused.name}, "message": refused.message}
            ]
        detail["requestId"] = self._request_id()
        headers = {}
        if refused.http == 429:
            headers["Retry-After"] = retry_after_header(self.faults.retry_after)
        return web.json_response(
            {
                "error": {
                    "code": refused.http,
                    "message": refused.message,
                    "status": refused.status,
                    "details": [detail],
                }
            },
            status=refused.http,
            headers=headers,
        )

    def _request_id(self) -> str:
        return "".join(self._ids.choice("0123456789abcdefABCDEF_-") for _ in range(22))


def _result(conversion: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: conversion[k] for k in CLICK_IDS if k in conversion}
    out["conversionAction"] = conversion["conversionAction"]
    out["conversionDateTime"] = conversion["conversionDateTime"]
    if "orderId" in conversion:
        out["orderId"] = conversion["orderId"]
    return out


def _order_ids(doc: object) -> list[str]:
    conversions = doc.get("conversions") if isinstance(doc, dict) else None
    if not isinstance(conversions, list):
        return []
    return [
        c["orderId"]
        for c in conversions
        if isinstance(c, dict) and isinstance(c.get("orderId"), str)
    ]


def _try_loads(raw: bytes) -> object:
    try:
        return loads_strict(raw)
    except (ValueError, UnicodeDecodeError):
        return None


GOOGLE_ADS_SANDBOX = web.AppKey("google_ads_sandbox", GoogleAdsSandbox)


def create_app(**kwargs: Any) -> web.Application:
    """Build a `GoogleAdsSandbox(**kwargs)`; return its app (at `app[GOOGLE_ADS_SANDBOX]`)."""
    return GoogleAdsSandbox(**kwargs).app()
