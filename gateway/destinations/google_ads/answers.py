"""Google Ads API answers → outcomes: request errors and per-row partial failures.

Facts from ../shared/platforms.md §4.4 ("Errors (partial failure)", "Limits") and Google's
REST error shape: a failed request answers `{"error": {"code", "message", "status", "details":
[GoogleAdsFailure]}}`; an upload with `partialFailure: true` answers 200 with
`partialFailureError` (a google.rpc.Status whose `details` hold GoogleAdsFailure objects) and a
`results` list whose failed rows are empty objects. Each GoogleAdsFailure error names its code as
`errorCode: {"<kind>Error": "<NAME>"}` and its row as `location.fieldPathElements` — the element
with `fieldName: "conversions"` carries the row's `index`.

Per row (an error on conversions[i] decides only event i; rows without an error are delivered):

* delivered (a duplicate of a conversion Google already has): CLICK_CONVERSION_ALREADY_EXISTS,
  ORDER_ID_ALREADY_IN_USE;
* retried later (the per-row backoff): TOO_RECENT_EVENT (click younger than ~6 h),
  TOO_RECENT_CONVERSION_ACTION (action younger than 6 h), and internal or quota errors;
* too_old: EXPIRED_EVENT (outside the action's click-through window);
* invalid_field: UNPARSEABLE_GCLID / _GBRAID / _WBRAID (a modified click id),
  CONVERSION_PRECEDES_EVENT (conversion time before the click: a wrong clock or time zone),
  identifier errors and any field, string, date or request error;
* platform_rejected, with Google's name and a hint: CLICK_NOT_FOUND / EVENT_NOT_FOUND (the id is
  not from a Google Ads click of this account), INVALID_CUSTOMER_FOR_CLICK, customer data terms
  or policy refusals, an unknown or wrong-type conversion action, and any other upload error.

A row with several errors takes the gravest (dead over retry over duplicate). A partial failure
whose errors name no row, or that says two rows of the request are the same conversion
(DUPLICATE_ORDER_ID, DUPLICATE_CLICK_CONVERSION_IN_REQUEST: neither was processed), is bisected;
rows Google already kept come back as ORDER_ID_ALREADY_IN_USE, i.e. delivered.

Whole request: 401 with OAUTH_TOKEN_EXPIRED drops the access token and retries at once (see
`GoogleAds.classify`: a second expiry in a row pauses); any other 401/403
(AuthenticationError, AuthorizationError: developer token, permissions, login-customer-id) and
404 (wrong api_base / api_version / customer id) pause the route; 429 and RESOURCE_EXHAUSTED
(QuotaError) retry after Retry-After, else the answer's RetryInfo delay, else a minute; 408 and
5xx retry; any other 4xx (INVALID_ARGUMENT) rejects the request: bisected to the bad event.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import httpx

from gateway.destinations.base import (
    BatchVerdict,
    Delivered,
    Outcome,
    Paused,
    Permanent,
    Retry,
    parse_retry_after,
)
from gateway.destinations.common import json_object, reason_text, strict_int
from gateway.store.base import DeadReason

RATE_LIMIT_WAIT: Final = 60.0
"""Seconds to wait after a 429 / RESOURCE_EXHAUSTED that names no delay."""

DUPLICATES: Final = frozenset({"CLICK_CONVERSION_ALREADY_EXISTS", "ORDER_ID_ALREADY_IN_USE"})
"""Google already has this conversion: the row is delivered."""
IN_REQUEST_DUPLICATES: Final = frozenset(
    {"DUPLICATE_CLICK_CONVERSION_IN_REQUEST", "DUPLICATE_ORDER_ID"}
)
"""Two rows of one request are the same conversion and neither was processed: bisected apart."""
RETRY_LATER: Final = frozenset({"TOO_RECENT_EVENT", "TOO_RECENT_CONVERSION_ACTION"})
TOO_OLD: Final = frozenset({"EXPIRED_EVENT"})
INVALID: Final = frozenset(
    {
        "UNPARSEABLE_GCLID",
        "UNPARSEABLE_GBRAID",
        "UNPARSEABLE_WBRAID",
        "GBRAID_WBRAID_BOTH_SET",
        "CONVERSION_PRECEDES_EVENT",
        "INVALID_USER_IDENTIFIER",
        "UNSUPPORTED_USER_IDENTIFIER",
        "ORDER_ID_CONTAINS_PII",
        "CUSTOM_VARIABLE_VALUE_CONTAINS_PII",
    }
)
RETRY_KINDS: Final = frozenset({"internalError", "quotaError"})
"""Error kinds that mean "not now" rather than "never" for the row they name."""

HINTS: Final[Mapping[str, str]] = {
    "UNPARSEABLE_GCLID": "the gclid was changed on its way (store it exactly as received)",
    "CONVERSION_PRECEDES_EVENT": "the conversion time is before the click (clock or time zone)",
    "EXPIRED_EVENT": "the click is outside the action's click-through window",
    "CLICK_NOT_FOUND": "no Google Ads click matches it, e.g. not from a Google Ads campaign",
    "EVENT_NOT_FOUND": "no Google Ads click matches it, e.g. not from a Google Ads campaign",
    "INVALID_CUSTOMER_FOR_CLICK": "the click belongs to another Google Ads account",
    "CUSTOMER_NOT_ACCEPTED_CUSTOMER_DATA_TERMS": "accept the customer data terms in Google Ads",
    "CUSTOMER_DATA_POLICY_PROHIBITS_ENHANCED_CONVERSIONS": (
        "the account's customer data policy forbids enhanced conversions"
    ),
    "CUSTOMER_NOT_ENABLED_ENHANCED_CONVERSIONS_FOR_LEADS": (
        "turn on enhanced conversions for leads in Google Ads"
    ),
    "NO_CONVERSION_ACTION_FOUND": "check the conversion action ids (purchase_action, …)",
    "INVALID_CONVERSION_ACTION_TYPE": "the conversion action is not of type UPLOAD_CLICKS",
    "OAUTH_TOKEN_EXPIRED": "access token expired: refreshing",
    "DEVELOPER_TOKEN_NOT_APPROVED": "the developer token is not approved for this account",
    "USER_PERMISSION_DENIED": "no access to the account (check login_customer_id)",
}

_PAUSED_STATUS: Final[Mapping[int, str]] = {
    401: "credentials refused",
    403: "permission denied",
    404: "endpoint not found: check api_base, api_version and customer_id",
}
_DELAY = re.compile(r"([0-9]+(?:\.[0-9]+)?)s")


@dataclass(frozen=True, slots=True)
class GoogleError:
    """One error of a GoogleAdsFailure: `kind` ("conversionUploadError"), `name`, the row."""

    kind: str
    name: str
    message: str
    index: int | None

    def reason(self, status: int, request_id: str) -> str:
        """Return the dead-letter/pause reason: status, code, request id, message and hint."""
        parts = [f"HTTP {status}", f"{self.kind} {self.name}".strip()]
        if request_id:
            parts.append(f"request_id {request_id}")
        hint = HINTS.get(self.name)
        text = self.message + (f" ({hint})" if hint else "")
        return reason_text(parts, text or None)


@dataclass(frozen=True, slots=True)
class Failure:
    """A google.rpc.Status of Google Ads: its status name, message, errors and request id."""

    status: str
    message: str
    errors: tuple[GoogleError, ...]
    request_id: str
    retry_delay: float | None

    def describe(self, http_status: int) -> str:
        """Return the request-level reason: the first error's, else status and message."""
        if self.errors:
            return self.errors[0].reason(http_status, self.request_id)
        parts = [f"HTTP {http_status}"] + ([self.status] if self.status else [])
        return reason_text(parts, self.message or None)

    def names(self) -> set[str]:
        """Return the error names (and the status name) the failure carries."""
        return {e.name for e in self.errors} | ({self.status} if self.status else set())


@dataclass(frozen=True, slots=True)
class Reading:
    """How an answer was read: the verdict, and whether it said the access token expired."""

    batch: BatchVerdict
    token_expired: bool = False


def classify(count: int, response: httpx.Response, now: float) -> Reading:
    """Return the fate of a request of `count` conversions from Google's answer."""
    status = response.status_code
    body = json_object(response)
    if 200 <= status < 300:
        if body is None:
            # Not Google's answer (a proxy page?): resending is safe, orderId deduplicates.
            return Reading(BatchVerdict(Retry(f"HTTP {status}: answer is not Google Ads JSON")))
        partial = body.get("partialFailureError")
        if not isinstance(partial, dict):
            return Reading(BatchVerdict(Delivered()))
        failure = _failure(partial)
        if not failure.errors and not _nonzero(partial):
            return Reading(BatchVerdict(Delivered()))
        return Reading(_per_row(count, failure, status))
    error = body.get("error") if body is not None else None
    refused = _failure(error) if isinstance(error, dict) else None
    message = refused.describe(status) if refused is not None else f"HTTP {status}"
    names = refused.names() if refused is not None else set()
    if status == 401 and "OAUTH_TOKEN_EXPIRED" in names:
        retry = Retry(message)
        return Reading(BatchVerdict(retry, per_event=(retry,) * count), token_expired=True)
    if status == 429 or "RESOURCE_EXHAUSTED" in names:
        after = parse_retry_after(response.headers.get("retry-after"), now)
        if after is None and refused is not None:
            after = refused.retry_delay
        return Reading(BatchVerdict(Retry(message, RATE_LIMIT_WAIT if after is None else after)))
    hint = _PAUSED_STATUS.get(status)
    if hint is not None:
        text = message if refused is not None else f"{message}: {hint}"
        return Reading(BatchVerdict(Paused(text)))
    if status == 408 or status >= 500:
        after = parse_retry_after(response.headers.get("retry-after"), now)
        return Reading(BatchVerdict(Retry(message, after)))
    return Reading(BatchVerdict(Permanent(DeadReason.INVALID_FIELD, message), bisect=True))


def paused_after_expiry(reading: Reading) -> BatchVerdict:
    """Return the pause for a token that was refused as expired right after its refresh."""
    outcome = reading.batch.outcome
    reason = outcome.reason if isinstance(outcome, Retry) else "access token refused"
    return BatchVerdict(Paused(f"{reason}; refused again with a new token (check the OAuth app)"))


def row_outcome(errors: Sequence[GoogleError], status: int, request_id: str) -> Outcome:
    """Return one row's outcome from its errors (the gravest wins: dead, retry, duplicate)."""
    retry: Outcome | None = None
    for error in errors:
        reason = error.reason(status, request_id)
        name = error.name
        if name in DUPLICATES:
            continue
        if name in RETRY_LATER or error.kind in RETRY_KINDS:
            retry = retry or Retry(reason)
            continue
        if name in TOO_OLD:
            return Permanent(DeadReason.TOO_OLD, reason)
        if name in INVALID or error.kind != "conversionUploadError":
            return Permanent(DeadReason.INVALID_FIELD, reason)
        return Permanent(DeadReason.PLATFORM_REJECTED, reason)
    return retry or Delivered()


def _per_row(count: int, failure: Failure, status: int) -> BatchVerdict:
    by_row: dict[int, list[GoogleError]] = {}
    for error in failure.errors:
        if error.index is None or not 0 <= error.index < count:
            # Google did not say which row: isolate the bad one by bisecting.
            reason = error.reason(status, failure.request_id)
            return BatchVerdict(Permanent(DeadReason.PLATFORM_REJECTED, reason), bisect=True)
        by_row.setdefault(error.index, []).append(error)
    doubled = next((e for e in failure.errors if e.name in IN_REQUEST_DUPLICATES), None)
    if doubled is not None:
        # Neither copy was processed; apart, one is taken and the other is a known duplicate.
        reason = doubled.reason(status, failure.request_id)
        return BatchVerdict(Permanent(DeadReason.PLATFORM_REJECTED, reason), bisect=True)
    if not by_row:
        reason = failure.describe(status)
        return BatchVerdict(Permanent(DeadReason.PLATFORM_REJECTED, reason), bisect=True)
    outcomes: list[Outcome] = [Delivered()] * count
    for index, errors in by_row.items():
        outcomes[index] = row_outcome(errors, status, failure.request_id)
    return BatchVerdict(outcomes[0], per_event=tuple(outcomes))


def _nonzero(status: dict[str, Any]) -> bool:
    code = strict_int(status.get("code"))
    return code is not None and code != 0


def _failure(status: dict[str, Any]) -> Failure:
    """Read a google.rpc.Status (request `error` or `partialFailureError`) leniently."""
    errors: list[GoogleError] = []
    request_id = ""
    retry_delay: float | None = None
    details = status.get("details")
    for detail in details if isinstance(details, list) else ():
        if not isinstance(detail, dict):
            continue
        rid = detail.get("requestId")
        if isinstance(rid, str) and not request_id:
            request_id = rid[:64]
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and (match := _DELAY.fullmatch(delay)):
            retry_delay = min(float(match.group(1)), 86400.0)
        items = detail.get("errors")
        for item in items if isinstance(items, list) else ():
            if isinstance(item, dict):
                errors.append(_error(item))
    name = status.get("status")
    message = status.get("message")
    return Failure(
        status=name if isinstance(name, str) else "",
        message=message[:300] if isinstance(message, str) else "",
        errors=tuple(errors),
        request_id=request_id,
        retry_delay=retry_delay,
    )


def _error(item: dict[str, Any]) -> GoogleError:
    kind, name = "", ""
    code = item.get("errorCode")
    if isinstance(code, dict):
        for key, value in code.items():
            if isinstance(key, str) and isinstance(value, str):
                kind, name = key[:64], value[:100]
                break
    message = item.get("message")
    return GoogleError(
        kind=kind,
        name=name,
        message=message[:300] if isinstance(message, str) else "",
        index=_row_index(item.get("location")),
    )


def _row_index(location: object) -> int | None:
    """Return the `index` of the `conversions` element of `location.fieldPathElements`."""
    if not isinstance(location, dict):
        return None
    elements = location.get("fieldPathElements")
    for element in elements if isinstance(elements, list) else ():
        if isinstance(element, dict) and element.get("fieldName") == "conversions":
            return strict_int(element.get("index"))
    return None
