"""TikTok Events API 2.0: settings, Event → event payload, request building, answer classification.

Facts from ../shared/platforms.md §2 (TikTok): endpoint and auth §2.1, event object §2.2, `user`
identifiers §2.3, deduplication §2.4, codes §2.5, test mode §2.6, event names §2.7/§10.1, LDU
§10.5, pitfall 22 (HTTP 200 with a non-zero `code` is an error).

Identifiers: only the "tiktok" rule set's digests are sent (phone hashed as E.164 *with* '+',
unlike Meta's digits-only form); click ids only TikTok's own (`ttclid`, and `ttp` = the `_ttp`
cookie), never another platform's (fbclid, _fbp, …).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
)
from gateway.store.base import DeadReason

MAX_BATCH: Final = 1000
"""TikTok accepts at most 1,000 events in `data` per request (§2.1)."""
WINDOW: Final = 7 * 86400
"""Web events: TikTok's limit is undocumented (§2.2); older than 7 days is treated as lost."""
WINDOW_OFFLINE: Final = 28 * 86400
"""Offline events must have occurred within the previous 28 days (§2.2)."""

EVENT_NAMES: Final[Mapping[str, str]] = {
    "PageView": "Pageview",
    "ViewContent": "ViewContent",
    "Search": "Search",
    "AddToCart": "AddToCart",
    "AddToWishlist": "AddToWishlist",
    "InitiateCheckout": "InitiateCheckout",
    "AddPaymentInfo": "AddPaymentInfo",
    "Purchase": "Purchase",
    "Lead": "Lead",
    "CompleteRegistration": "CompleteRegistration",
    "Contact": "Contact",
    "CustomizeProduct": "CustomizeProduct",
    "FindLocation": "FindLocation",
    "Schedule": "Schedule",
    "StartTrial": "StartTrial",
    "SubmitApplication": "SubmitApplication",
    "Subscribe": "Subscribe",
}
"""Canonical (Meta-style) name → TikTok standard name (§2.7, §10.1). Any other name (Donate, a
custom event) is sent unchanged: TikTok takes custom event names."""

EVENT_SOURCES: Final = ("web", "offline", "crm")
"""Supported `event_source` values (§2.1; `app` needs app fields we do not model)."""

_USER_KEYS: Final = (("em", "email"), ("ph", "phone"), ("external_id", "external_id"))
"""Our hashed identifier key → TikTok's `user` key (SHA-256 fields, §2.3)."""

CODE_OK: Final = 0
CODE_PARTIAL: Final = 20001
CODE_NO_PERMISSION: Final = 40001
CODE_INVALID_PARAMS: Final = 40002
CODE_RATE_LIMIT: Final = 40100
CODE_BAD_APP: Final = 40101
RATE_LIMIT_WAIT: Final = 60.0
"""Seconds to wait after a rate-limit code when TikTok sends no Retry-After (QPS/QPM limits)."""


@dataclass(frozen=True, slots=True)
class TikTokSettings:
    """`[sites.destinations.tiktok]`: one TikTok pixel (event source) and its Events API token."""

    pixel_code: str = setting(
        "Pixel code (web) or event set id (offline/CRM): the `event_source_id`.",
        pattern=r"[A-Za-z0-9]{6,40}",
        expected="6-40 letters and digits",
    )
    access_token: Secret = setting("Events API access token (Events Manager → Settings), a secret.")
    api_base: str = api_base_setting("https://business-api.tiktok.com", "TikTok Business API")
    api_version: str = field(
        default="v1.3",
        metadata={"help": "Business API version.", "pattern": r"v\d+\.\d+", "expected": "vN.N"},
    )
    event_source: str = field(
        default="web",
        metadata={
            "help": "TikTok event_source: web, offline or crm.",
            "pattern": "|".join(EVENT_SOURCES),
            "expected": "web, offline or crm",
        },
    )
    test_event_code: str | None = optional_setting(
        "Test Events code (TEST12345); for testing only."
    )
    max_batch: int = max_batch_setting("TikTok", MAX_BATCH)
    partner_name: str = field(
        default="signalgate", metadata={"help": "partner_name sent with each request."}
    )


class TikTok(Configured[TikTokSettings]):
    """TikTok Events API 2.0 destination."""

    name: ClassVar[str] = "tiktok"
    hash_rules: ClassVar[str] = "tiktok"

    def __init__(self, settings: TikTokSettings) -> None:
        super().__init__(settings)
        base = settings.api_base.rstrip("/")
        self.url = f"{base}/open_api/{settings.api_version}/event/track/"

    def batch_key(self, event: Event) -> str:
        """Return the test code: it is per request, so events with different codes never mix."""
        return chosen_test_code(event, self.settings.test_event_code)

    def too_old(self, event: Event, now: float) -> bool:
        """Return whether the event is (nearly) outside TikTok's window for its source."""
        offline = self.settings.event_source != "web" or event.source is Source.PHYSICAL_STORE
        window = WINDOW_OFFLINE if offline else WINDOW
        return past_window(event.time, now, window)

    def validate(self, event: Event) -> str | None:
        """Return why TikTok would refuse (or could not use) the event, or None."""
        if self.settings.event_source == "web" and event.source is Source.WEBSITE and not event.url:
            return "website events need url (page.url)"
        if not self.user(event):
            return (
                "no customer information: TikTok needs email, phone, external_id, ttclid, ttp or ip"
            )
        return None

    def user(self, event: Event) -> dict[str, Any]:
        """Return TikTok's `user` object: "tiktok" digests as given, TikTok's browser ids plain."""
        u = event.user
        out = hashed_ids(u, self.hash_rules, _USER_KEYS, "one_or_list")
        for key in ("ttclid", "ttp"):
            value = u.click_ids.get(key)
            if value:
                out[key] = value
        put_truthy(out, (("ip", u.ip), ("user_agent", u.user_agent)))
        return out

    def payload(self, event: Event) -> dict[str, Any]:
        """Return the Events API 2.0 event object (§2.2) for one event."""
        body: dict[str, Any] = {
            "event": EVENT_NAMES.get(event.event, event.event),
            "event_time": event.time,
            "event_id": event.event_id,
            "user": self.user(event),
        }
        page: dict[str, str] = {}
        if event.url:
            page["url"] = event.url
        if event.referrer:
            page["referrer"] = event.referrer
        if page:
            body["page"] = page
        properties = _properties(event)
        if properties:
            body["properties"] = properties
        if event.ldu:
            body["limited_data_use"] = True  # §2.2, §10.5
        return body

    def build_request(self, events: Sequence[Event]) -> httpx.Request:
        """Return one POST carrying the events; the token travels in the Access-Token header."""
        doc: dict[str, Any] = {
            "event_source": self.settings.event_source,
            "event_source_id": self.settings.pixel_code,
            "partner_name": self.settings.partner_name,
            "data": [self.payload(e) for e in events],
        }
        code = self.batch_key(events[0]) if events else ""
        if code:
            doc["test_event_code"] = code
        return post_json(self.url, doc, auth={"access-token": self.settings.access_token.value})

    def classify(
        self, events: Sequence[Event], response: httpx.Response, now: float
    ) -> BatchVerdict:
        """Map TikTok's answer to outcomes by its `code` (§2.5), even under HTTP 200 (pit. 22)."""
        status = response.status_code
        envelope = _envelope(response)
        after = parse_retry_after(response.headers.get("retry-after"), now)
        if envelope is None:
            if 200 <= status < 300:
                # Not TikTok's answer (a proxy page?): sending again is safe, event_id dedups.
                return BatchVerdict(Retry(f"HTTP {status}: answer without a TikTok code", after))
            return default_verdict(response, now)
        code = envelope.code
        message = envelope.describe(status)
        if code in (CODE_OK, CODE_PARTIAL):
            # 20001: some events were refused, which ones is not said; nothing to resend.
            return BatchVerdict(Delivered())
        if code == CODE_RATE_LIMIT or status == 429:
            return BatchVerdict(Retry(message, after if after is not None else RATE_LIMIT_WAIT))
        if code == CODE_NO_PERMISSION or 40101 <= code <= 40199 or status in (401, 403):
            # No permission (40001), invalid app (40101), token incorrect or revoked (40105,
            # Business API users' reports): credentials or config are broken, nothing to drop.
            return BatchVerdict(Paused(message))
        if 50000 <= code <= 59999 or status >= 500:
            return BatchVerdict(Retry(message, after))
        outcome: Outcome
        if code == CODE_INVALID_PARAMS:
            outcome = Permanent(DeadReason.INVALID_FIELD, message)
        else:
            outcome = Permanent(DeadReason.PLATFORM_REJECTED, message)
        # One bad event fails the whole batch (§2.1): isolate it by bisecting.
        return BatchVerdict(outcome, bisect=True)


@dataclass(frozen=True, slots=True)
class _Envelope:
    code: int
    message: str
    request_id: str

    def describe(self, status: int) -> str:
        parts = [f"HTTP {status}", f"code {self.code}"]
        if self.request_id:
            parts.append(f"request_id {self.request_id}")
        return reason_text(parts, self.message)


def _envelope(response: httpx.Response) -> _Envelope | None:
    """Return TikTok's `{code, message, request_id}` answer, or None if the body is not one."""
    body = json_object(response)
    if body is None:
        return None
    code = body.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        return None
    message = body.get("message")
    request_id = body.get("request_id")
    return _Envelope(
        code,
        message if isinstance(message, str) else "",
        request_id if isinstance(request_id, str) else "",
    )


def _properties(event: Event) -> dict[str, Any]:
    """Return TikTok's `properties` (§2.2): our data fields under TikTok's names."""
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
            ("query", d.search_string),
            ("status", d.status),
            ("predicted_ltv", d.predicted_ltv),
        ),
    )
    if d.contents:
        out["contents"] = content_items(d.contents, id_key="content_id", price_key="price")
        out.setdefault("content_type", "product")
    return out
