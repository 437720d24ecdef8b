"""What the Google Ads sandbox refuses: a whole request (`Refused`: authentication, access to
the customer, the request's shape) or one conversion alone (`RowError`: its click id or user
identifiers, action, time, value, consent, or a repeat of another row of the same request).

The checks of gateway/sandbox/google_ads.py, written from the platform reference like it;
`GoogleAdsChecks` is a mixin of `GoogleAdsSandbox` (the checks that read its configuration).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .base import Faults
from .oauth import RefreshTokenEndpoint
from .values import bearer_token, is_number

MAX_IDENTIFIERS = 5

CONVERSION_KEYS = frozenset(
    {
        "gclid",
        "gbraid",
        "wbraid",
        "conversionAction",
        "conversionDateTime",
        "conversionValue",
        "currencyCode",
        "orderId",
        "userIdentifiers",
        "consent",
        "conversionEnvironment",
        "customVariables",
        "cartData",
        "externalAttributionData",
        "customerType",
        "userIpAddress",
        "sessionAttributesEncoded",
        "sessionAttributesKeyValuePairs",
    }
)
REQUEST_KEYS = frozenset(
    {"conversions", "partialFailure", "validateOnly", "debugEnabled", "jobId", "customerId"}
)
IDENTIFIER_ONEOF = frozenset({"hashedEmail", "hashedPhoneNumber", "mobileId", "thirdPartyUserId"})
CLICK_IDS = ("gclid", "gbraid", "wbraid")

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d{1,6})?[+-]\d{2}:\d{2}")
_CLICK_ID = re.compile(r"[A-Za-z0-9_\-]{1,200}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_CUSTOMER = re.compile(r"[0-9]{10}")


class Refused(Exception):
    """A whole request refused: HTTP status, google.rpc status name, error kind and name."""

    def __init__(self, http: int, status: str, kind: str, name: str, message: str) -> None:
        super().__init__(message)
        self.http = http
        self.status = status
        self.kind = kind
        self.name = name
        self.message = message


@dataclass(frozen=True, slots=True)
class RowError:
    kind: str
    name: str
    message: str
    field: str | None = None


def bad(name: str, message: str, field: str | None = None) -> RowError:
    return RowError("conversionUploadError", name, message, field)


class GoogleAdsChecks:
    """The checks that read the sandbox's configuration and knobs: a mixin of
    `GoogleAdsSandbox`."""

    oauth: RefreshTokenEndpoint
    developer_token: str
    customers: frozenset[str]
    login_customer_id: str | None
    actions: frozenset[str] | None
    row_errors: dict[str, str]
    row_errors_once: dict[str, str]
    faults: Faults
    max_batch: int

    def _check_auth(self, request: web.Request, customer: str) -> None:
        state = self.oauth.check(bearer_token(request.headers.get("Authorization", "")))
        if state == "unknown":
            raise Refused(
                401,
                "UNAUTHENTICATED",
                "authenticationError",
                "OAUTH_TOKEN_INVALID",
                "Request had invalid authentication credentials.",
            )
        if state == "expired":
            raise Refused(
                401,
                "UNAUTHENTICATED",
                "authenticationError",
                "OAUTH_TOKEN_EXPIRED",
                "The OAuth access token has expired.",
            )
        if request.headers.get("developer-token", "") != self.developer_token:
            raise Refused(
                401,
                "UNAUTHENTICATED",
                "authenticationError",
                "DEVELOPER_TOKEN_INVALID",
                "The developer token is not valid.",
            )
        login = request.headers.get("login-customer-id")
        if login is not None and not _CUSTOMER.fullmatch(login):
            raise Refused(
                400,
                "INVALID_ARGUMENT",
                "authorizationError",
                "INVALID_LOGIN_CUSTOMER_ID_SERVING_CUSTOMER_ID_COMBINATION",
                "login-customer-id must be 10 digits without dashes.",
            )
        if self.login_customer_id is not None and login != self.login_customer_id:
            raise Refused(
                403,
                "PERMISSION_DENIED",
                "authorizationError",
                "USER_PERMISSION_DENIED",
                "The user has no access to the customer: set login-customer-id to the manager.",
            )
        if customer not in self.customers:
            raise Refused(
                403,
                "PERMISSION_DENIED",
                "authorizationError",
                "USER_PERMISSION_DENIED",
                "The user has no access to this customer.",
            )

    def _check_request(self, doc: object) -> dict[str, Any]:
        if not isinstance(doc, dict):
            raise Refused(
                400, "INVALID_ARGUMENT", "requestError", "INVALID_INPUT", "Invalid JSON payload."
            )
        unknown = sorted(set(doc) - REQUEST_KEYS)
        if unknown:
            raise Refused(
                400,
                "INVALID_ARGUMENT",
                "requestError",
                "INVALID_INPUT",
                f"Invalid JSON payload received. Unknown name {unknown[0]!r}.",
            )
        if doc.get("partialFailure") is not True:
            raise Refused(
                400,
                "INVALID_ARGUMENT",
                "partialFailureError",
                "PARTIAL_FAILURE_MODE_REQUIRED",
                "partial_failure must be true for this request.",
            )
        conversions = doc.get("conversions")
        if not isinstance(conversions, list) or not conversions:
            raise Refused(
                400,
                "INVALID_ARGUMENT",
                "requestError",
                "REQUIRED_FIELD_MISSING",
                "conversions must be a non-empty list.",
            )
        if len(conversions) > self.max_batch:
            raise Refused(
                400,
                "INVALID_ARGUMENT",
                "conversionUploadError",
                "TOO_MANY_CONVERSIONS_IN_REQUEST",
                f"At most {self.max_batch} conversions per request.",
            )
        for i, conversion in enumerate(conversions):
            if not isinstance(conversion, dict):
                raise Refused(
                    400, "INVALID_ARGUMENT", "requestError", "INVALID_INPUT", f"conversions[{i}]"
                )
            extra = sorted(set(conversion) - CONVERSION_KEYS)
            if extra:
                raise Refused(
                    400,
                    "INVALID_ARGUMENT",
                    "requestError",
                    "INVALID_INPUT",
                    f"Invalid JSON payload received. Unknown name {extra[0]!r} at"
                    f" 'conversions[{i}]'.",
                )
        validate_only = doc.get("validateOnly", False)
        if not isinstance(validate_only, bool):
            raise Refused(
                400, "INVALID_ARGUMENT", "requestError", "INVALID_INPUT", "validateOnly: a bool"
            )
        return doc

    def _check_conversion(self, customer: str, c: dict[str, Any]) -> RowError | None:
        order = c.get("orderId")
        if order is not None and (not isinstance(order, str) or not order):
            return RowError("fieldError", "INVALID_VALUE", "orderId must be a string", "orderId")
        if isinstance(order, str):
            forced = self.row_errors_once.pop(order, None) or self.row_errors.get(order)
            if forced is not None:
                return bad(forced, f"Rejected by the sandbox (row_errors): {forced}.")
            if order in self.faults.reject_event_ids:
                return bad("UNPARSEABLE_GCLID", "The click id could not be decoded.", "gclid")
        clicks = [k for k in CLICK_IDS if k in c]
        if len(clicks) > 1:
            if set(clicks) == {"gbraid", "wbraid"}:
                return bad("GBRAID_WBRAID_BOTH_SET", "Set only one of gbraid and wbraid.")
            return RowError(
                "fieldError", "VALUE_MUST_BE_UNSET", "Only one click id may be set.", clicks[1]
            )
        for key in clicks:
            value = c[key]
            if not isinstance(value, str) or not _CLICK_ID.fullmatch(value):
                return bad(f"UNPARSEABLE_{key.upper()}", f"The {key} could not be decoded.", key)
        identifiers = c.get("userIdentifiers")
        problem = _check_identifiers(identifiers)
        if problem is not None:
            return problem
        if not clicks and not identifiers:
            return RowError(
                "fieldError", "REQUIRED", "A click id or user identifiers are required.", "gclid"
            )
        action = c.get("conversionAction")
        prefix = f"customers/{customer}/conversionActions/"
        action_id = action[len(prefix) :] if isinstance(action, str) else ""
        if (
            not isinstance(action, str)
            or not action.startswith(prefix)
            or not action_id.isdigit()
            or (self.actions is not None and action_id not in self.actions)
        ):
            return bad(
                "NO_CONVERSION_ACTION_FOUND", "The conversion action was not found.", "action"
            )
        when = c.get("conversionDateTime")
        if not isinstance(when, str) or not _DATE_TIME.fullmatch(when):
            return RowError(
                "dateError",
                "INVALID_STRING_DATE_TIME_SECONDS_WITH_OFFSET",
                "conversionDateTime must be 'yyyy-mm-dd hh:mm:ss+|-hh:mm'.",
                "conversionDateTime",
            )
        value = c.get("conversionValue")
        if value is not None and not is_number(value):
            return RowError("fieldError", "INVALID_VALUE", "a number", "conversionValue")
        currency = c.get("currencyCode")
        if currency is not None and not (
            isinstance(currency, str) and _CURRENCY.fullmatch(currency)
        ):
            return RowError("currencyCodeError", "UNSUPPORTED", "ISO 4217 code", "currencyCode")
        return _check_consent(c.get("consent"), c.get("conversionEnvironment"))


def doubled_rows(conversions: list[Any]) -> dict[int, RowError]:
    """Rows that are the same conversion as another row of the request: none is processed."""
    orders: dict[tuple[object, object], list[int]] = {}
    clicks: dict[tuple[object, ...], list[int]] = {}
    for index, c in enumerate(conversions):
        action = c.get("conversionAction")
        if isinstance(c.get("orderId"), str):
            orders.setdefault((c["orderId"], action), []).append(index)
        for key in CLICK_IDS:
            if isinstance(c.get(key), str):
                clicks.setdefault((c[key], action, c.get("conversionDateTime")), []).append(index)
    out: dict[int, RowError] = {}
    for rows in clicks.values():
        for index in rows if len(rows) > 1 else ():
            out[index] = bad(
                "DUPLICATE_CLICK_CONVERSION_IN_REQUEST", "The request repeats this conversion."
            )
    for rows in orders.values():
        for index in rows if len(rows) > 1 else ():
            out[index] = bad("DUPLICATE_ORDER_ID", "The request repeats this order id.", "orderId")
    return out


def _check_identifiers(identifiers: object) -> RowError | None:
    if identifiers is None:
        return None
    if not isinstance(identifiers, list) or len(identifiers) > MAX_IDENTIFIERS:
        return bad("INVALID_USER_IDENTIFIER", "At most 5 user identifiers.", "userIdentifiers")
    for item in identifiers:
        if not isinstance(item, dict):
            return bad("INVALID_USER_IDENTIFIER", "An identifier is an object.", "userIdentifiers")
        set_ = [k for k in item if k in IDENTIFIER_ONEOF or k == "addressInfo"]
        if len(set_) != 1:
            return bad(
                "INVALID_USER_IDENTIFIER",
                "Each user identifier sets exactly one identifier.",
                "userIdentifiers",
            )
        if set_[0] not in ("hashedEmail", "hashedPhoneNumber"):
            return bad(
                "UNSUPPORTED_USER_IDENTIFIER",
                "Only hashedEmail and hashedPhoneNumber are supported.",
                "userIdentifiers",
            )
        digest = item[set_[0]]
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            return bad(
                "INVALID_USER_IDENTIFIER",
                "Hashed identifiers are SHA-256 as 64 lower-case hex digits.",
                "userIdentifiers",
            )
        source = item.get("userIdentifierSource", "UNSPECIFIED")
        if source not in ("FIRST_PARTY", "THIRD_PARTY", "UNSPECIFIED"):
            return RowError("fieldError", "INVALID_VALUE", "userIdentifierSource", "source")
        unknown = set(item) - {set_[0], "userIdentifierSource"}
        if unknown:
            return RowError("fieldError", "INVALID_VALUE", "unknown identifier field", "id")
    return None


def _check_consent(consent: object, environment: object) -> RowError | None:
    if environment is not None and environment not in ("WEB", "APP", "UNSPECIFIED"):
        return RowError("fieldError", "INVALID_VALUE", "conversionEnvironment", "environment")
    if consent is None:
        return None
    if not isinstance(consent, dict) or set(consent) - {"adUserData", "adPersonalization"}:
        return RowError("fieldError", "INVALID_VALUE", "consent", "consent")
    for value in consent.values():
        if value not in ("GRANTED", "DENIED", "UNSPECIFIED"):
            return RowError("fieldError", "INVALID_VALUE", "GRANTED or DENIED", "consent")
    return None
