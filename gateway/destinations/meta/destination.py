"""Meta Conversions API: settings, Event → CAPI payload, request building, answer classification.

Facts from ../shared/platforms.md §1 (Meta): endpoint and auth §1.1, event fields §1.2, user_data
and hashing §1.3, fbc/fbp §1.4, custom_data §1.5, error codes §1.8.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

import httpx

from gateway.core.event import Event, Source
from gateway.core.secret import Secret
from gateway.destinations.base import (
    BatchVerdict,
    Delivered,
    Outcome,
    Paused,
    Permanent,
    Retry,
    default_verdict,
    parse_retry_after,
)
from gateway.destinations.common import (
    Configured,
    api_base_setting,
    chosen_test_code,
    content_items,
    hashed_ids,
    json_object,
    max_batch_setting,
    optional_setting,
    past_window,
    post_json,
    put_present,
    put_truthy,
    reason_text,
    setting,
    strict_int,
)
from gateway.store.base import DeadReason

MAX_BATCH: Final = 1000
"""Meta accepts at most 1,000 events per request (§1.1)."""
WINDOW: Final = 7 * 86400
"""Events older than 7 days fail the whole request (§1.2, pitfall 7)."""
WINDOW_OFFLINE: Final = 62 * 86400
"""physical_store events may be uploaded within 62 days (§1.2)."""

_HASHED_KEYS: Final = (
    "em",
    "ph",
    "fn",
    "ln",
    "ge",
    "db",
    "ct",
    "st",
    "zp",
    "country",
    "external_id",
)
_RETRY_CODES: Final = {1, 2, 4, 17, 341}
_AUTH_CODES: Final = {3, 10, 190}
_BASELINE_SUBSETS: Final = (
    frozenset({"ct", "country", "st", "zp", "ge", "client_user_agent"}),
    frozenset({"db", "client_user_agent"}),
    frozenset({"fn", "ge"}),
    frozenset({"ln", "ge"}),
)
"""Graph v13+ rejects user_data made only of a subset of one of these (§1.2)."""


@dataclass(frozen=True, slots=True)
class MetaSettings:
    """`[sites.destinations.meta]`: one Meta dataset (pixel) and its CAPI token."""

    pixel_id: str = setting(
        "Dataset (pixel) id from Events Manager.", pattern=r"\d{5,20}", expected="digits"
    )
    access_token: Secret = setting("CAPI access token (Events Manager → Settings), a secret.")
    api_base: str = api_base_setting("https://graph.facebook.com", "Graph API")
    api_version: str = field(
        default="v25.0",
        metadata={"help": "Graph API version.", "pattern": r"v\d+\.\d+", "expected": "vNN.N"},
    )
    test_event_code: str | None = optional_setting(
        "Events Manager test code (TEST12345); for testing only."
    )
    max_batch: int = max_batch_setting("Meta", MAX_BATCH)
    partner_agent: str = field(
        default="signalgate", metadata={"help": "partner_agent sent with each request."}
    )


class Meta(Configured[MetaSettings]):
    """Meta Conversions API destination."""

    name: ClassVar[str] = "meta"
    hash_rules: ClassVar[str] = "meta"

    def __init__(self, settings: MetaSettings) -> None:
        super().__init__(settings)
        base = settings.api_base.rstrip("/")
        self.url = f"{base}/{settings.api_version}/{settings.pixel_id}/events"

    def batch_key(self, event: Event) -> str:
        """Return the test code: it is per request, so events with different codes never mix."""
        return chosen_test_code(event, self.settings.test_event_code)

    def too_old(self, event: Event, now: float) -> bool:
        """Return whether the event is (nearly) outside Meta's upload window."""
        window = WINDOW_OFFLINE if event.source is Source.PHYSICAL_STORE else WINDOW
        return past_window(event.time, now, window)

    def validate(self, event: Event) -> str | None:
        """Return why Meta would refuse the event, or None (§1.2 website rules, baseline)."""
        if event.source is Source.WEBSITE:
            if not event.url:
                return "website events need url (event_source_url)"
            if not event.user.user_agent:
                return "website events need user.user_agent (client_user_agent)"
        user = self.user_data(event)
        if not user:
            return "no customer information: Meta needs at least one identifier"
        keys = set(user)
        if any(keys <= subset for subset in _BASELINE_SUBSETS):
            return "identifiers below Meta's matching baseline: add email, phone or ip"
        if event.event == "Purchase" and (event.data.value is None or not event.data.currency):
            return "Purchase needs data.value and data.currency"
        return None

    def user_data(self, event: Event) -> dict[str, Any]:
        """Return Meta's user_data object: hashed identifiers as given, browser ids plain."""
        u = event.user
        out = hashed_ids(u, self.hash_rules, _HASHED_KEYS, "one_or_list")
        put_truthy(out, (("client_ip_address", u.ip), ("client_user_agent", u.user_agent)))
        fbc = u.fbc or _fbc_from_click(u.click_ids.get("fbclid"), event.time)
        if fbc:
            out["fbc"] = fbc
        if u.fbp:
            out["fbp"] = u.fbp
        return out

    def payload(self, event: Event) -> dict[str, Any]:
        """Return the CAPI event object (§1.2) for one event."""
        body: dict[str, Any] = {
            "event_name": event.event,
            "event_time": event.time,
            "event_id": event.event_id,
            "action_source": event.source.value,
            "user_data": self.user_data(event),
        }
        if event.url:
            body["event_source_url"] = event.url
        if event.referrer:
            body["referrer_url"] = event.referrer
        custom = _custom_data(event)
        if custom:
            body["custom_data"] = custom
        if event.ldu:
            # Limited Data Use, geolocated by Meta (country 0, state 0): platforms.md §1.2.
            body["data_processing_options"] = ["LDU"]
            body["data_processing_options_country"] = 0
            body["data_processing_options_state"] = 0
        return body

    def build_request(self, events: Sequence[Event]) -> httpx.Request:
        """Return one POST carrying the events as JSON; the token travels as a query param."""
        doc: dict[str, Any] = {
            "data": [self.payload(e) for e in events],
            "partner_agent": self.settings.partner_agent,
        }
        code = self.batch_key(events[0]) if events else ""
        if code:
            doc["test_event_code"] = code
        return post_json(self.url, doc, params={"access_token": self.settings.access_token.value})

    def classify(
        self, events: Sequence[Event], response: httpx.Response, now: float
    ) -> BatchVerdict:
        """Map Meta's answer to outcomes by its documented error codes (§1.8, pitfall 23)."""
        status = response.status_code
        if 200 <= status < 300:
            return BatchVerdict(Delivered())
        error = _error(response)
        if error is None:
            return default_verdict(response, now)
        code = strict_int(error.get("code"))
        subcode = strict_int(error.get("error_subcode"))
        message = _message(error, status)
        after = parse_retry_after(response.headers.get("retry-after"), now)
        outcome: Outcome
        if status == 429 or code in _RETRY_CODES or error.get("is_transient") is True:
            return BatchVerdict(Retry(message, after))
        if code == 368:
            return BatchVerdict(Retry(message, max(after or 0.0, 600.0)))
        if code in _AUTH_CODES or 200 <= (code or 0) <= 299 or (code == 100 and subcode == 33):
            return BatchVerdict(Paused(message))
        if status >= 500:
            return BatchVerdict(Retry(message, after))
        if code == 100 and subcode == 2804003:
            outcome = Permanent(DeadReason.TOO_OLD, message)
        elif code == 100:
            outcome = Permanent(DeadReason.INVALID_FIELD, message)
        else:
            outcome = Permanent(DeadReason.PLATFORM_REJECTED, message)
        # One bad event rejects the whole request: isolate it by bisecting (§1.8, pitfall 8).
        return BatchVerdict(outcome, bisect=True)


def _fbc_from_click(fbclid: str | None, event_time: int) -> str | None:
    """Build fbc from a raw fbclid when no _fbc cookie was seen (§1.4: index 1, ms, as-is)."""
    if not fbclid:
        return None
    return f"fb.1.{event_time * 1000}.{fbclid}"


def _custom_data(event: Event) -> dict[str, Any]:
    d = event.data
    out: dict[str, Any] = dict(d.custom)
    put_present(
        out,
        (
            ("value", d.value),
            ("currency", d.currency),
            ("order_id", d.order_id),
            ("content_type", d.content_type),
            ("content_name", d.content_name),
            ("content_category", d.content_category),
            ("num_items", d.num_items),
            ("search_string", d.search_string),
            ("status", d.status),
            ("predicted_ltv", d.predicted_ltv),
        ),
    )
    if d.contents:
        out["content_ids"] = [c.id for c in d.contents]
        out["contents"] = content_items(d.contents)
        out.setdefault("content_type", "product")
    return out


def _error(response: httpx.Response) -> dict[str, Any] | None:
    body = json_object(response)
    error = body.get("error") if body is not None else None
    return error if isinstance(error, dict) else None


def _message(error: dict[str, Any], status: int) -> str:
    parts = [f"HTTP {status}", f"code {error.get('code')}"]
    if error.get("error_subcode") is not None:
        parts.append(f"subcode {error.get('error_subcode')}")
    text = error.get("error_user_msg") or error.get("message") or ""
    return reason_text(parts, text)
