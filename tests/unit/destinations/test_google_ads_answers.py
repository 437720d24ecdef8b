"""Google Ads answers → outcomes: one test per documented error class (platforms.md §4.4)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from test_google_ads import NOW, event, google_ads, with_token

from gateway.destinations.base import Delivered, Paused, Permanent, Retry
from gateway.store.base import DeadReason

FAILURE = "type.googleapis.com/google.ads.googleads.v26.errors.GoogleAdsFailure"


def row_error(index: int | None, name: str, kind: str = "conversionUploadError") -> dict[str, Any]:
    path: list[dict[str, Any]] = [{"fieldName": "gclid"}]
    if index is not None:
        path.insert(0, {"fieldName": "conversions", "index": index})
    return {
        "errorCode": {kind: name},
        "message": f"{name} happened",
        "location": {"fieldPathElements": path},
    }


def partial(*errors: dict[str, Any], count: int = 3) -> httpx.Response:
    failed = set()
    for e in errors:
        for el in e["location"]["fieldPathElements"]:
            if "index" in el:
                failed.add(el["index"])
    doc = {
        "partialFailureError": {
            "code": 3,
            "message": "some conversions failed",
            "details": [{"@type": FAILURE, "errors": list(errors), "requestId": "req-1"}],
        },
        "results": [{} if i in failed else {"gclid": f"g{i}"} for i in range(count)],
    }
    return httpx.Response(200, json=doc)


def request_error(
    status: int, name: str, kind: str, rpc: str, headers: dict[str, str] | None = None, **extra: Any
) -> httpx.Response:
    details: list[dict[str, Any]] = [
        {
            "@type": FAILURE,
            "errors": [{"errorCode": {kind: name}, "message": f"{name} said Google"}],
            "requestId": "req-2",
        }
    ]
    if extra:
        details.append(extra)
    doc = {"error": {"code": status, "message": "refused", "status": rpc, "details": details}}
    return httpx.Response(status, json=doc, headers=headers or {})


EVENTS = [event(event_id=f"e{i}") for i in range(3)]


def classify(response: httpx.Response, dest: Any = None) -> Any:
    return (dest or with_token(google_ads())).classify(EVENTS, response, NOW)


def test_full_success_delivers_every_row() -> None:
    verdict = classify(httpx.Response(200, json={"results": [{}, {}, {}]}))
    assert verdict.outcome == Delivered()
    assert verdict.per_event is None


def test_validate_only_answer_without_results_is_delivered() -> None:
    assert classify(httpx.Response(200, json={})).outcome == Delivered()


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("UNPARSEABLE_GCLID", DeadReason.INVALID_FIELD),
        ("CONVERSION_PRECEDES_EVENT", DeadReason.INVALID_FIELD),
        ("EXPIRED_EVENT", DeadReason.TOO_OLD),
        ("CLICK_NOT_FOUND", DeadReason.PLATFORM_REJECTED),
        ("EVENT_NOT_FOUND", DeadReason.PLATFORM_REJECTED),
        ("INVALID_CUSTOMER_FOR_CLICK", DeadReason.PLATFORM_REJECTED),
        ("CUSTOMER_NOT_ACCEPTED_CUSTOMER_DATA_TERMS", DeadReason.PLATFORM_REJECTED),
    ],
)
def test_permanent_row_errors_kill_only_their_row(name: str, reason: DeadReason) -> None:
    verdict = classify(partial(row_error(1, name)))
    assert verdict.per_event is not None
    first, bad, last = verdict.per_event
    assert first == Delivered()
    assert last == Delivered()
    assert isinstance(bad, Permanent)
    assert bad.reason is reason
    assert name in bad.detail
    assert "request_id req-1" in bad.detail


def test_click_not_found_says_why() -> None:
    [_, bad, _] = classify(partial(row_error(1, "CLICK_NOT_FOUND"))).per_event
    assert "no Google Ads click matches it" in bad.detail


@pytest.mark.parametrize("name", ["TOO_RECENT_EVENT", "TOO_RECENT_CONVERSION_ACTION"])
def test_too_recent_rows_retry_later(name: str) -> None:
    verdict = classify(partial(row_error(2, name)))
    assert verdict.per_event is not None
    assert verdict.per_event[:2] == (Delivered(), Delivered())
    retry = verdict.per_event[2]
    assert isinstance(retry, Retry)
    assert retry.after is None, "per-row backoff, never a pause of the whole route"
    assert name in retry.reason


@pytest.mark.parametrize("name", ["CLICK_CONVERSION_ALREADY_EXISTS", "ORDER_ID_ALREADY_IN_USE"])
def test_duplicates_count_as_delivered(name: str) -> None:
    verdict = classify(partial(row_error(0, name), row_error(2, name)))
    assert verdict.per_event == (Delivered(), Delivered(), Delivered())


@pytest.mark.parametrize("name", ["DUPLICATE_CLICK_CONVERSION_IN_REQUEST", "DUPLICATE_ORDER_ID"])
def test_two_copies_in_one_request_are_bisected_apart(name: str) -> None:
    verdict = classify(partial(row_error(0, name), row_error(2, name)))
    assert verdict.bisect
    assert verdict.per_event is None
    assert name in verdict.outcome.detail


def test_the_gravest_error_of_a_row_wins() -> None:
    verdict = classify(
        partial(
            row_error(0, "ORDER_ID_ALREADY_IN_USE"),
            row_error(0, "TOO_RECENT_EVENT"),
            row_error(1, "TOO_RECENT_EVENT"),
            row_error(1, "UNPARSEABLE_GCLID"),
        )
    )
    first, second, third = verdict.per_event
    assert isinstance(first, Retry)
    assert isinstance(second, Permanent)
    assert third == Delivered()


def test_field_errors_are_invalid_fields() -> None:
    [bad, _, _] = classify(partial(row_error(0, "INVALID_VALUE", kind="fieldError"))).per_event
    assert isinstance(bad, Permanent)
    assert bad.reason is DeadReason.INVALID_FIELD


def test_a_partial_failure_naming_no_row_is_bisected() -> None:
    verdict = classify(partial(row_error(None, "UNPARSEABLE_GCLID")))
    assert verdict.bisect
    assert isinstance(verdict.outcome, Permanent)
    out_of_range = classify(partial(row_error(7, "UNPARSEABLE_GCLID")))
    assert out_of_range.bisect


@pytest.mark.parametrize(
    ("status", "kind", "name", "rpc"),
    [
        (401, "authenticationError", "DEVELOPER_TOKEN_INVALID", "UNAUTHENTICATED"),
        (401, "authenticationError", "OAUTH_TOKEN_REVOKED", "UNAUTHENTICATED"),
        (403, "authorizationError", "USER_PERMISSION_DENIED", "PERMISSION_DENIED"),
        (403, "authorizationError", "DEVELOPER_TOKEN_NOT_APPROVED", "PERMISSION_DENIED"),
    ],
)
def test_authentication_and_authorization_errors_pause(
    status: int, kind: str, name: str, rpc: str
) -> None:
    verdict = classify(request_error(status, name, kind, rpc))
    assert isinstance(verdict.outcome, Paused)
    assert f"{kind} {name}" in verdict.outcome.reason
    assert verdict.per_event is None


def test_an_expired_access_token_is_dropped_and_the_batch_retried_once() -> None:
    dest = with_token(google_ads())
    expired = request_error(401, "OAUTH_TOKEN_EXPIRED", "authenticationError", "UNAUTHENTICATED")
    verdict = classify(expired, dest)
    assert verdict.per_event is not None
    assert all(isinstance(o, Retry) and o.after is None for o in verdict.per_event)
    assert dest.token_request(NOW) is not None, "the next request refreshes the token"
    with_token(dest)
    again = classify(expired, dest)
    assert isinstance(again.outcome, Paused), "refused again right after a refresh: pause"
    with_token(dest)
    assert classify(httpx.Response(200, json={}), dest).outcome == Delivered()
    assert dest.expired_in_a_row == 0


def test_resource_exhausted_retries_after_retry_after() -> None:
    verdict = classify(
        request_error(
            429, "RESOURCE_EXHAUSTED", "quotaError", "RESOURCE_EXHAUSTED", {"Retry-After": "30"}
        )
    )
    assert isinstance(verdict.outcome, Retry)
    assert verdict.outcome.after == 30.0


def test_resource_exhausted_reads_retry_info_without_a_header() -> None:
    info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "42s"}
    response = request_error(
        429, "RESOURCE_EXHAUSTED", "quotaError", "RESOURCE_EXHAUSTED", None, **info
    )
    assert classify(response).outcome.after == 42.0
    bare = classify(httpx.Response(429, content=b""))
    assert bare.outcome.after == 60.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_retry(status: int) -> None:
    verdict = classify(request_error(status, "INTERNAL_ERROR", "internalError", "INTERNAL"))
    assert isinstance(verdict.outcome, Retry)


def test_internal_and_quota_row_errors_retry() -> None:
    [bad, _, _] = classify(partial(row_error(0, "INTERNAL_ERROR", kind="internalError"))).per_event
    assert isinstance(bad, Retry)


def test_invalid_argument_is_bisected_and_not_found_pauses() -> None:
    bad = classify(
        request_error(
            400, "PARTIAL_FAILURE_MODE_REQUIRED", "partialFailureError", "INVALID_ARGUMENT"
        )
    )
    assert bad.bisect
    assert isinstance(bad.outcome, Permanent)
    missing = classify(httpx.Response(404, text="<html>Not Found</html>"))
    assert isinstance(missing.outcome, Paused)
    assert "api_base" in missing.outcome.reason


def test_a_2xx_that_is_not_google_json_retries() -> None:
    assert isinstance(classify(httpx.Response(200, text="<html>proxy</html>")).outcome, Retry)
