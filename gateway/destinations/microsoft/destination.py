"""Microsoft Advertising UET Conversions API: settings, Event → UET event, request, answers.

Facts from ../shared/platforms.md §8 (Microsoft UET CAPI): endpoint, Bearer token, body, batch of
1,000, seconds and the 7-day window, answer shape and error classes; §10.1 event names (GA4-style
``eventName`` of ``custom`` events, ``pageLoad`` for page views); §10.2 click id (``msclkid``, the
``_uetmsclkid`` cookie without its ``_uet`` prefix); §10.4 what is hashed (only ``em`` and ``ph``);
§10.5 ``adStorageConsent``; §11 pitfalls 7, 28 and 30.

Identifiers: the "meta" rule set's digests (trimmed lower-case e-mail; phone digits with the
country code and no '+'), as Segment's UET CAPI integration normalises them. Microsoft's own
normalisation is not confirmed (platforms.md §8 marks it unverified). ``externalId`` is sent as
the digest of our external id (an opaque id to Microsoft, never the raw value). Only Microsoft's
click id reaches it; it never gets fbclid, _fbp, ttclid or any other platform's id.

Answers (``{"eventsReceived", "error": {"code", "message", "details": [{"index", …}]},
"traceId"}``): 401/403 (token) and 404 (tag) pause the route; 408, 429 (Retry-After honoured) and
5xx retry; ``details`` naming events dead-letter exactly those as invalid_field, the rest
delivered, when Microsoft says it received the rest (``continueOnValidationError`` is sent, so
it ingests the valid ones); otherwise the request is bisected until the bad event stands alone.
Details marked ``isWarning`` were accepted. ``attemptedValue`` is never copied into a reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import httpx

from gateway.core.event import Event
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
    json_object,
    mapping_setting,
    max_batch_setting,
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
"""At most 1,000 events per request (§8, pitfall 30)."""
WINDOW: Final = 7 * 86400
"""Events older than 7 days are rejected (§8, §10.3)."""

PAGE_LOAD: Final = "pageLoad"
CUSTOM: Final = "custom"

EVENT_NAMES: Final[Mapping[str, str]] = {
    "ViewContent": "view_item",
    "Search": "search",
    "AddToCart": "add_to_cart",
    "AddToWishlist": "add_to_wishlist",
    "InitiateCheckout": "begin_checkout",
    "AddPaymentInfo": "add_payment_info",
    "Purchase": "purchase",
    "Lead": "generate_lead",
    "CompleteRegistration": "sign_up",
    "Subscribe": "subscribe",
}
"""Canonical (Meta-style) name → Microsoft's recommended ``eventName`` (§10.1). ``PageView`` is
a ``pageLoad`` event (no name); any other name (StartTrial, Contact, custom names) is sent
unchanged as a custom event's name: UET's ``eventName`` is free text matched by goals."""

PAGE_TYPES: Final[Mapping[str, str]] = {
    "ViewContent": "product",
    "Search": "searchresults",
    "Purchase": "purchase",
}
"""Canonical name → customData.pageType (§10.1; one of Microsoft's seven page types)."""

_CUSTOM_TEXT: Final = frozenset({"eventCategory", "eventLabel", "ecommCategory"})
_CUSTOM_NUMBERS: Final = frozenset({"eventValue", "ecommTotalValue"})
_PAGE_TYPE_VALUES: Final = frozenset(
    {"home", "product", "category", "searchresults", "cart", "purchase", "other"}
)
"""data.custom keys passed into customData under their own name (text, numbers, and pageType
when it is one of Microsoft's seven); UET has no free-form fields, other keys are not sent."""

_MSCLKID: Final = re.compile(r"(?:_uet)?([0-9A-Fa-f]{32})(?:-[01])?")
"""A click id as Microsoft writes it: 32 hex, maybe with the cookie's ``_uet`` prefix or the
tag hit's ``-0``/``-1`` suffix (pitfall 28; the suffix handling is unverified)."""

_PAUSED: Final = {401: "CAPI token refused", 403: "CAPI token refused", 404: "UET tag not found"}
"""Statuses that pause the route, with the hint each adds to the reason."""


@dataclass(frozen=True, slots=True)
class MicrosoftSettings:
    """`[sites.destinations.microsoft]`: one UET tag and its Conversions API token."""

    tag_id: str = setting(
        "UET tag id (Microsoft Advertising → Tools → UET tag), digits.",
        pattern=r"[1-9][0-9]{3,14}",
        expected="a UET tag id (digits)",
    )
    access_token: Secret = setting(
        "Conversions API token of that UET tag (UET tag settings → Conversions API), a secret."
    )
    api_base: str = api_base_setting("https://capi.uet.microsoft.com", "UET Conversions API")
    max_batch: int = max_batch_setting("Microsoft", MAX_BATCH)
    custom_events: Mapping[str, str] = mapping_setting(
        'Event name → UET eventName, e.g. {StartTrial = "start_trial"}.'
    )


def msclkid(value: str | None) -> str | None:
    """Return the 32-hex click id inside `value` (prefix/suffix removed), or None if none."""
    if not value:
        return None
    match = _MSCLKID.fullmatch(value.strip())
    return match[1] if match else None


class Microsoft(Configured[MicrosoftSettings]):
    """Microsoft Advertising UET Conversions API destination."""

    name: ClassVar[str] = "microsoft"
    hash_rules: ClassVar[str] = "meta"

    def __init__(self, settings: MicrosoftSettings) -> None:
        super().__init__(settings)
        base = settings.api_base.rstrip("/")
        self.url = f"{base}/v1/{settings.tag_id}/events"

    def batch_key(self, event: Event) -> str:
        """Return "test" for test events (never sent, see `validate`), else ""."""
        return "test" if event.test_code else ""

    def too_old(self, event: Event, now: float) -> bool:
        """Return whether the event is (nearly) outside Microsoft's 7-day window."""
        return past_window(event.time, now, WINDOW)

    def event_type_and_name(self, event: Event) -> tuple[str, str | None]:
        """Return (eventType, eventName): ("pageLoad", None) for page views, else custom."""
        mapped = self.settings.custom_events.get(event.event)
        if mapped is not None:
            return (PAGE_LOAD, None) if mapped == PAGE_LOAD else (CUSTOM, mapped)
        if event.event == "PageView":
            return PAGE_LOAD, None
        return CUSTOM, EVENT_NAMES.get(event.event, event.event)

    def validate(self, event: Event) -> str | None:
        """Return why Microsoft would refuse (or must not get) the event, or None."""
        if event.test_code:
            return (
                "Microsoft's UET Conversions API has no test mode: an event with a test_code"
                " is not sent (it would count as a real conversion)"
            )
        kind, _ = self.event_type_and_name(event)
        if kind == PAGE_LOAD and not event.url:
            return "page views (pageLoad) need url (eventSourceUrl)"
        if not _IDENTIFIER_KEYS & self.user_data(event).keys():
            return "no user identifier: Microsoft needs email, phone, external_id, msclkid or ip"
        return None

    def user_data(self, event: Event) -> dict[str, Any]:
        """Return UET ``userData``: em/ph digests, the rest plain (§8, §10.4)."""
        u = event.user
        # UET takes one value per identifier.
        out = hashed_ids(u, self.hash_rules, ("em", "ph", ("external_id", "externalId")), "first")
        put_truthy(out, (("clientIpAddress", u.ip), ("clientUserAgent", u.user_agent)))
        click = msclkid(u.click_ids.get("msclkid"))
        if click:
            out["msclkid"] = click
        return out

    def payload(self, event: Event) -> dict[str, Any]:
        """Return the UET CAPI event object (§8) for one validated event."""
        kind, name = self.event_type_and_name(event)
        body: dict[str, Any] = {
            "eventType": kind,
            "eventId": event.event_id,
            "eventTime": event.time,
        }
        if name is not None:
            body["eventName"] = name
        if event.url:
            body["eventSourceUrl"] = event.url
        if event.referrer:
            body["referrerUrl"] = event.referrer
        consent = event.consent
        # The consent decision let this event reach an ad platform; only an explicit ad_storage
        # denial on the event itself is passed on as "D" (§10.5).
        body["adStorageConsent"] = "D" if consent and consent.ad_storage is False else "G"
        body["userData"] = self.user_data(event)
        custom = _custom_data(event)
        if custom:
            body["customData"] = custom
        return body

    def build_request(self, events: Sequence[Event]) -> httpx.Request:
        """Return one POST of ``{"data": [...], "continueOnValidationError": true}``."""
        doc = {"data": [self.payload(e) for e in events], "continueOnValidationError": True}
        return post_json(
            self.url, doc, auth={"authorization": f"Bearer {self.settings.access_token.value}"}
        )

    def classify(
        self, events: Sequence[Event], response: httpx.Response, now: float
    ) -> BatchVerdict:
        """Map Microsoft's answer to outcomes (see the module docstring)."""
        status = response.status_code
        answer = _answer(response)
        message = answer.describe(status) if answer else f"HTTP {status}"
        verdict = status_verdict(response, now, message, _PAUSED)
        if verdict is not None:
            return verdict
        ok = 200 <= status < 300
        if answer is None:
            return BatchVerdict(Delivered()) if ok else default_verdict(response, now)
        bad = {i: text for i, text in answer.errors.items() if 0 <= i < len(events)}
        if not bad:
            short = answer.received is not None and answer.received < len(events)
            if ok and not (short and answer.has_error):
                return BatchVerdict(Delivered())
            # Refused (or not all received) without saying which event: isolate by bisecting.
            return BatchVerdict(Permanent(DeadReason.PLATFORM_REJECTED, message), bisect=True)
        if ok or answer.received == len(events) - len(bad):
            # The other events were ingested (continueOnValidationError): judge event by event.
            per_event: list[Outcome] = [Delivered()] * len(events)
            for index, text in bad.items():
                per_event[index] = Permanent(DeadReason.INVALID_FIELD, f"{message}: {text}"[:500])
            return BatchVerdict(per_event[0], per_event=tuple(per_event))
        first = bad[min(bad)]
        return BatchVerdict(
            Permanent(DeadReason.INVALID_FIELD, f"{message}: {first}"[:500]), bisect=True
        )


_IDENTIFIER_KEYS: Final = frozenset({"em", "ph", "externalId", "msclkid", "clientIpAddress"})


@dataclass(frozen=True, slots=True)
class _Answer:
    received: int | None
    code: str
    text: str
    trace_id: str
    errors: Mapping[int, str]
    has_error: bool

    def describe(self, status: int) -> str:
        parts = [f"HTTP {status}"]
        if self.code:
            parts.append(self.code)
        if self.trace_id:
            parts.append(f"traceId {self.trace_id}")
        return reason_text(parts, self.text, 300)


def _answer(response: httpx.Response) -> _Answer | None:
    """Return Microsoft's answer, or None if the body is not a JSON object."""
    body = json_object(response)
    if body is None:
        return None
    received = body.get("eventsReceived")
    error = body.get("error")
    error = error if isinstance(error, dict) else {}
    errors: dict[int, str] = {}
    details = error.get("details")
    for item in details if isinstance(details, list) else ():
        if not isinstance(item, dict) or item.get("isWarning") is True:
            continue
        index = item.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            continue
        # Never attemptedValue: it may be an identifier, an IP or a user agent.
        bits = [str(item[k]) for k in ("errorCode", "propertyName") if item.get(k)]
        text = ": ".join([*bits, str(item.get("errorMessage") or "invalid")])
        errors[index] = f"{errors[index]}; {text}" if index in errors else text
    return _Answer(
        received if isinstance(received, int) and not isinstance(received, bool) else None,
        _text(error.get("code")),
        _text(error.get("message")),
        _text(body.get("traceId")),
        errors,
        bool(error),
    )


def _text(value: object) -> str:
    return value[:200] if isinstance(value, str) else ""


def _custom_data(event: Event) -> dict[str, Any]:
    """Return UET ``customData`` (§8): value, currency, transactionId, items, searchTerm, …."""
    d = event.data
    out: dict[str, Any] = {}
    for key, raw in d.custom.items():
        if (key in _CUSTOM_TEXT and isinstance(raw, str)) or (
            key in _CUSTOM_NUMBERS and isinstance(raw, int | float) and not isinstance(raw, bool)
        ):
            out[key] = raw
    page_type = d.custom.get("pageType")
    if page_type in _PAGE_TYPE_VALUES:
        out["pageType"] = page_type
    elif event.event in PAGE_TYPES:
        out["pageType"] = PAGE_TYPES[event.event]
    put_present(
        out,
        (
            ("value", d.value),
            ("currency", d.currency.upper() if d.currency else None),
            ("transactionId", d.order_id),
            ("searchTerm", d.search_string),
            ("ecommCategory", d.content_category),
        ),
    )
    if d.contents:
        out["itemIds"] = [c.id for c in d.contents]
        out["items"] = content_items(d.contents, price_key="price", price_first=True)
    return out
