"""Pinterest API for Conversions (v5): settings, Event → event payload, request, answer mapping.

Facts from ../shared/platforms.md §5 (Pinterest): endpoint, auth, test mode, batch and rate limit
§5.1, event object §5.2, `user_data` §5.3, event names §5.2/§10.1, click id §10.2, LDP §10.5,
pitfall 26 (money as strings, seconds, no test flag in production); answer statuses and bodies
from Pinterest's v5 OpenAPI description (`events/create`: 200 `ConversionApiResponse` with one
`events[]` entry per event in request order, 400/401/403/429/503 `{code, message}`, 422 "not all
events were successfully processed").

Identifiers use the "meta" rule set: Pinterest's rules are Meta's (lower-cased trimmed e-mail,
phone digits with country code and no '+', lower-case names, city without spaces or
punctuation, two-letter state and country) and every hashed key is sent as a list. Pinterest's
click id (`epik`, from the landing URL, kept in the `_epik` cookie) goes to `user_data.click_id`
plain, to Pinterest only.

Answers: 2xx is delivered (an event that `events[]` marks ``failed`` is dead-lettered with
Pinterest's `error_message`); 401/403 (token, ad account access) and 404 (ad account) pause the
route; 429 (Retry-After honoured when sent), 408 and 5xx (503: endpoint ramped down) retry; 422
names the failed events when its body lists them (the others were processed: delivered), else
the batch is bisected; any other 4xx (400: request invalid) rejects the request as a whole, which
is bisected until the bad event stands alone.
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
    Permanent,
    default_verdict,
)
from gateway.destinations.common import (
    Configured,
    api_base_setting,
    content_items,
    hashed_ids,
    item_count,
    json_object,
    mapping_setting,
    max_batch_setting,
    optional_setting,
    past_window,
    post_json,
    put_present,
    put_truthy,
    reason_text,
    setting,
    status_verdict,
)
from gateway.store.base import DeadReason

MAX_BATCH: Final = 1000
"""Pinterest accepts at most 1,000 events in `data` per request (§5.1, OpenAPI maxItems)."""
WINDOW: Final = 7 * 86400
"""Pinterest's maximum age is not documented by Pinterest itself (§5.1 unverified); integrators
(Amperity) state seven days. Events later than one hour already count as offline conversions."""

PINTEREST_EVENTS: Final = frozenset(
    {
        "add_payment_info",
        "add_to_cart",
        "add_to_wishlist",
        "checkout",
        "contact",
        "custom",
        "customize_product",
        "find_location",
        "initiate_checkout",
        "lead",
        "page_visit",
        "schedule",
        "search",
        "signup",
        "start_trial",
        "submit_application",
        "subscribe",
        "view_category",
        "view_content",
        "watch_video",
        "app_install",
        "app_open",
    }
)
"""Pinterest's conversion event names (§5.2)."""

EVENT_NAMES: Final[Mapping[str, str]] = {
    "PageView": "page_visit",
    "ViewContent": "view_content",
    "Search": "search",
    "AddToCart": "add_to_cart",
    "AddToWishlist": "add_to_wishlist",
    "InitiateCheckout": "initiate_checkout",
    "AddPaymentInfo": "add_payment_info",
    "Purchase": "checkout",
    "Lead": "lead",
    "CompleteRegistration": "signup",
    "Subscribe": "subscribe",
    "StartTrial": "start_trial",
    "Contact": "contact",
    "CustomizeProduct": "customize_product",
    "FindLocation": "find_location",
    "Schedule": "schedule",
    "SubmitApplication": "submit_application",
}
"""Canonical (Meta-style) name → Pinterest name (§10.1). A Pinterest name passes unchanged; any
other name (Donate, a custom event) is sent as Pinterest's `custom` event unless
`custom_events` maps it."""

ACTION_SOURCES: Final[Mapping[Source, str]] = {Source.WEBSITE: "web"}
"""`web` for website events; every source but app is `offline` (§5.2). App events would need
the device OS (`app_android` / `app_ios`), which events do not carry: they are refused."""

HASHED_KEYS: Final = (
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
"""Identifier keys Pinterest takes as SHA-256 lists under the same names (§5.3)."""

LDP: Final = "LDP"
"""`custom_data.opt_out_type` for Limited Data Processing (US state privacy laws, §10.5)."""

_PAUSED: Final = {
    401: "conversion token or ad account access",
    403: "conversion token or ad account access",
    404: "ad account not found",
}
"""Statuses that pause the route, with the hint each adds to the reason."""


@dataclass(frozen=True, slots=True)
class PinterestSettings:
    """`[sites.destinations.pinterest]`: one Pinterest ad account and its conversion token."""

    ad_account_id: str = setting(
        "Pinterest ad account id (digits, from the Ads Manager URL).",
        pattern=r"[0-9]{1,18}",
        expected="an ad account id (1-18 digits)",
    )
    access_token: Secret = setting(
        "Conversion access token (Ads Manager → Conversions → Conversions API), a secret."
    )
    api_base: str = api_base_setting("https://api.pinterest.com", "Pinterest API")
    test_mode: bool = field(
        default=False,
        metadata={"help": "Send with ?test=true: validated and answered, nothing recorded."},
    )
    max_batch: int = max_batch_setting("Pinterest", MAX_BATCH)
    custom_events: Mapping[str, str] = mapping_setting(
        'Event name → Pinterest event for other names, e.g. {Donate = "checkout"}.'
    )
    partner_name: str | None = optional_setting(
        'partner_name on each event ("ss-<partner>"); only if Pinterest gave one.'
    )


class Pinterest(Configured[PinterestSettings]):
    """Pinterest API for Conversions (v5) destination."""

    name: ClassVar[str] = "pinterest"
    hash_rules: ClassVar[str] = "meta"

    def __init__(self, settings: PinterestSettings) -> None:
        super().__init__(settings)
        base = settings.api_base.rstrip("/")
        self.url = f"{base}/v5/ad_accounts/{settings.ad_account_id}/events"

    def batch_key(self, event: Event) -> str:
        """Return "test" for test events (`?test=true` is per request), else ""."""
        return "test" if self.settings.test_mode or event.test_code else ""

    def too_old(self, event: Event, now: float) -> bool:
        """Return whether the event is (nearly) outside the seven-day window."""
        return past_window(event.time, now, WINDOW)

    def event_name(self, event: Event) -> str:
        """Return the Pinterest name of the event (`custom` for names without one)."""
        mapped = self.settings.custom_events.get(event.event)
        if mapped is not None:
            return mapped
        if event.event in PINTEREST_EVENTS:
            return event.event
        return EVENT_NAMES.get(event.event, "custom")

    def validate(self, event: Event) -> str | None:
        """Return why Pinterest would refuse the event, or None (§5.2, §5.3)."""
        name = self.event_name(event)
        if name not in PINTEREST_EVENTS:
            return (
                f"event name {event.event!r} is mapped by custom_events to {name!r},"
                " which is no Pinterest event"
            )
        if event.source is Source.APP:
            return "app events need the device OS (app_android or app_ios), which is not known"
        if event.source is Source.WEBSITE and not event.url:
            return "website events need url (event_source_url)"
        u = event.user
        hashed = u.hashed.get(self.hash_rules, {})
        if not (hashed.get("em") or (u.ip and u.user_agent)):
            return "Pinterest needs an email or both user.ip and user.user_agent"
        return None

    def user_data(self, event: Event) -> dict[str, Any]:
        """Return Pinterest's user_data: hashed identifiers as lists, click id plain (§5.3)."""
        u = event.user
        out = hashed_ids(u, self.hash_rules, HASHED_KEYS, "list")
        put_truthy(out, (("client_ip_address", u.ip), ("client_user_agent", u.user_agent)))
        click = u.click_ids.get("epik")
        if click:
            out["click_id"] = click
        return out

    def payload(self, event: Event) -> dict[str, Any]:
        """Return the v5 event object (§5.2) for one event (the caller has validated it)."""
        body: dict[str, Any] = {
            "event_name": self.event_name(event),
            "action_source": ACTION_SOURCES.get(event.source, "offline"),
            "event_time": event.time,
            "event_id": event.event_id,
            "user_data": self.user_data(event),
        }
        if event.url:
            body["event_source_url"] = event.url
        consent = event.consent
        if consent is not None and consent.ad_personalization is False:
            body["opt_out"] = True  # the user opted out of ad personalisation (§5.2 opt_out)
        if self.settings.partner_name:
            body["partner_name"] = self.settings.partner_name
        custom = _custom_data(event)
        if event.ldu:
            custom["opt_out_type"] = LDP  # Limited Data Processing (§10.5)
        if custom:
            body["custom_data"] = custom
        return body

    def build_request(self, events: Sequence[Event]) -> httpx.Request:
        """Return one POST carrying `{"data": [...]}` with the token as a Bearer header."""
        doc = {"data": [self.payload(e) for e in events]}
        test = bool(events) and self.batch_key(events[0]) == "test"
        return post_json(
            self.url,
            doc,
            auth={"authorization": f"Bearer {self.settings.access_token.value}"},
            params={"test": "true"} if test else None,
        )

    def classify(
        self, events: Sequence[Event], response: httpx.Response, now: float
    ) -> BatchVerdict:
        """Map Pinterest's answer to outcomes (see the module docstring)."""
        status = response.status_code
        body = json_object(response)
        if 200 <= status < 300:
            per_event = _per_event(status, body, len(events))
            if per_event is None or all(isinstance(o, Delivered) for o in per_event):
                return BatchVerdict(Delivered())
            return BatchVerdict(Delivered(), per_event=per_event)
        message = _message(status, body)
        verdict = status_verdict(response, now, message, _PAUSED)
        if verdict is not None:
            return verdict
        if body is None:
            return default_verdict(response, now)
        if status == 422:
            per_event = _per_event(status, body, len(events))
            if per_event is not None:
                return BatchVerdict(Delivered(), per_event=per_event)
            return BatchVerdict(Permanent(DeadReason.INVALID_FIELD, message), bisect=True)
        # The request was refused as a whole (400): isolate the bad event by bisecting.
        return BatchVerdict(Permanent(DeadReason.PLATFORM_REJECTED, message), bisect=True)


def _money(value: float) -> str:
    """Return a money amount as Pinterest wants it: a decimal string (pitfall 26)."""
    if round(value, 2) == value:
        return f"{value:.2f}"
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _custom_data(event: Event) -> dict[str, Any]:
    """Return Pinterest's `custom_data` (§5.2); it takes no free-form keys (OpenAPI
    additionalProperties false), so custom properties other than `content_brand` stay out."""
    d = event.data
    out: dict[str, Any] = {}
    if d.currency:
        out["currency"] = d.currency.upper()
    if d.value is not None:
        out["value"] = _money(d.value)
    put_present(
        out,
        (
            ("content_name", d.content_name),
            ("content_category", d.content_category),
            ("order_id", d.order_id),
            ("search_string", d.search_string),
        ),
    )
    brand = d.custom.get("content_brand")
    if isinstance(brand, str) and brand:
        out["content_brand"] = brand
    if d.contents:
        out["content_ids"] = [c.id for c in d.contents]
        out["contents"] = content_items(d.contents, price_first=True, money=_money)
    if d.num_items is not None:
        out["num_items"] = d.num_items
    elif d.contents:
        out["num_items"] = item_count(d.contents)
    return out


def _per_event(
    status: int, body: Mapping[str, Any] | None, count: int
) -> tuple[Outcome, ...] | None:
    """Return one outcome per event from an `events[]` list (at the top or in a 422's
    `details`) that has exactly one entry per event sent, else None."""
    if body is None:
        return None
    entries = body.get("events")
    details = body.get("details")
    if not isinstance(entries, list) and isinstance(details, Mapping):
        entries = details.get("events")
    if not isinstance(entries, list) or len(entries) != count:
        return None
    out: list[Outcome] = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            return None
        if entry.get("status") == "processed":
            out.append(Delivered())
            continue
        error = entry.get("error_message")
        detail = f"HTTP {status}, event failed" + (f": {error}" if isinstance(error, str) else "")
        out.append(Permanent(DeadReason.INVALID_FIELD, detail[:500]))
    return tuple(out)


def _message(status: int, body: Mapping[str, Any] | None) -> str:
    parts = [f"HTTP {status}"]
    text = ""
    if body is not None:
        code = body.get("code")
        if isinstance(code, int) and not isinstance(code, bool):
            parts.append(f"code {code}")
        message = body.get("message")
        if isinstance(message, str):
            text = message
    return reason_text(parts, text)
