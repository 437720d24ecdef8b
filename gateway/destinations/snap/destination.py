"""Snap Conversions API v3: settings, Event → CAPI payload, request building, answer classification.

Facts from ../shared/platforms.md §3 (Snap): endpoint, auth, batch and window §3.1, event fields
§3.2, user_data and hashing §3.3, deduplication §3.4, event names §3.5 and §10.1; answer shape
from Snap's v3 OpenAPI description (`EventResponse`: ``status`` VALID/INVALID, ``reason``, and on
errors the index of the offending ``event`` with ``errors.codes`` / ``errors.error_msgs``).

Snap's identifier rules are Meta's (trim + lowercase e-mail, E.164 digits without '+', hashed
names/places lowercased), so this destination uses the "meta" rule set and its digests; only the
shape differs: every hashed key is sent as a list, as in Snap's v3 schema.

Answers: 2xx with ``status`` VALID (or no body) is delivered; 401/403 (token) and 404 (pixel)
pause the route; 429 (Snap sends no Retry-After: exponential backoff, §3.1), 408 and 5xx retry;
an INVALID answer rejects the request as a whole: it is bisected until the bad event stands
alone, which is dead-lettered as invalid_field when Snap named an event (``"event": <index>``),
else as platform_rejected.
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
    past_window,
    post_json,
    put_present,
    put_truthy,
    reason_text,
    setting,
    status_verdict,
    strict_int,
)
from gateway.store.base import DeadReason

MAX_BATCH: Final = 2000
"""Snap accepts at most 2,000 events per request (§3.1)."""
WINDOW: Final = 37 * 86400
"""Events older than 37 days are no longer reportable (§3.1)."""

SNAP_EVENTS: Final = frozenset(
    {
        "PAGE_VIEW",
        "VIEW_CONTENT",
        "LIST_VIEW",
        "SEARCH",
        "ADD_CART",
        "ADD_TO_WISHLIST",
        "START_CHECKOUT",
        "ADD_BILLING",
        "PURCHASE",
        "SIGN_UP",
        "SUBSCRIBE",
        "START_TRIAL",
        "SAVE",
        "SHARE",
        "INVITE",
        "LOGIN",
        "RESERVE",
        "RATE",
        "COMPLETE_TUTORIAL",
        "LEVEL_COMPLETE",
        "ACHIEVEMENT_UNLOCKED",
        "SPENT_CREDITS",
        "AD_CLICK",
        "AD_VIEW",
        "APP_OPEN",
        "APP_INSTALL",
        *(f"CUSTOM_EVENT_{i}" for i in range(1, 6)),
    }
)
"""Snap's v3 standard event names (§3.5)."""

EVENT_NAMES: Final[Mapping[str, str]] = {
    "PageView": "PAGE_VIEW",
    "ViewContent": "VIEW_CONTENT",
    "Search": "SEARCH",
    "AddToCart": "ADD_CART",
    "AddToWishlist": "ADD_TO_WISHLIST",
    "InitiateCheckout": "START_CHECKOUT",
    "AddPaymentInfo": "ADD_BILLING",
    "Purchase": "PURCHASE",
    "CompleteRegistration": "SIGN_UP",
    "Subscribe": "SUBSCRIBE",
    "StartTrial": "START_TRIAL",
}
"""Canonical (Meta-style) name → Snap v3 name (§10.1). Lead and Contact have no Snap event:
map them (or any custom name) with `custom_events`; a Snap name itself passes unchanged."""

ACTION_SOURCES: Final[Mapping[Source, str]] = {Source.WEBSITE: "WEB", Source.APP: "MOBILE_APP"}
"""Snap knows WEB, MOBILE_APP and OFFLINE; every other source is OFFLINE (§3.2)."""

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
_CUSTOM_KEYS: Final = frozenset(
    {"brands", "delivery_category", "sign_up_method", "content_type", "status"}
)
"""Custom properties that are top-level custom_data fields of Snap; others go to custom_fields."""

_PAUSED: Final = {401: "access token refused", 403: "access token refused", 404: "pixel not found"}
"""Statuses that pause the route, with the hint each adds to the reason."""


@dataclass(frozen=True, slots=True)
class SnapSettings:
    """`[sites.destinations.snap]`: one Snap pixel and its Conversions API token."""

    pixel_id: str = setting(
        "Snap Pixel id from Ads Manager → Events Manager (a UUID).",
        pattern=r"[A-Za-z0-9][A-Za-z0-9-]{7,63}",
        expected="a Snap pixel id (UUID)",
    )
    access_token: Secret = setting(
        "Conversions API token (Ads Manager → Business Details → Conversions API tokens), a secret."
    )
    api_base: str = api_base_setting("https://tr.snapchat.com", "Snap CAPI")
    test_mode: bool = field(
        default=False,
        metadata={
            "help": "Send to /events/validate: checked and shown in Events Manager, not counted."
        },
    )
    max_batch: int = max_batch_setting("Snap", MAX_BATCH)
    custom_events: Mapping[str, str] = mapping_setting(
        'Event name → Snap event for names without one, e.g. {Lead = "SIGN_UP"}.'
    )


class Snap(Configured[SnapSettings]):
    """Snap Conversions API v3 destination."""

    name: ClassVar[str] = "snap"
    hash_rules: ClassVar[str] = "meta"

    def __init__(self, settings: SnapSettings) -> None:
        super().__init__(settings)
        base = settings.api_base.rstrip("/")
        self.url = f"{base}/v3/{settings.pixel_id}/events"
        self.validate_url = f"{self.url}/validate"

    def batch_key(self, event: Event) -> str:
        """Return "validate" for test events (their own endpoint), else ""."""
        return "validate" if self.settings.test_mode or event.test_code else ""

    def too_old(self, event: Event, now: float) -> bool:
        """Return whether the event is (nearly) outside Snap's 37-day window."""
        return past_window(event.time, now, WINDOW)

    def event_name(self, event: Event) -> str | None:
        """Return the Snap v3 name of the event, or None if it has none."""
        mapped = self.settings.custom_events.get(event.event)
        if mapped is not None:
            return mapped
        if event.event in SNAP_EVENTS:
            return event.event
        return EVENT_NAMES.get(event.event)

    def validate(self, event: Event) -> str | None:
        """Return why Snap would refuse the event, or None (§3.2, §3.4)."""
        name = self.event_name(event)
        if name is None:
            return (
                f"event name {event.event!r} has no Snap event: map it in"
                " sites[].destinations.snap.custom_events"
            )
        if name not in SNAP_EVENTS:
            return (
                f"event name {event.event!r} is mapped by custom_events to {name!r},"
                " which is no Snap v3 event"
            )
        if event.source is Source.WEBSITE and not event.url:
            return "website events need url (event_source_url)"
        u = event.user
        hashed = u.hashed.get(self.hash_rules, {})
        if not (hashed.get("em") or hashed.get("ph") or (u.ip and u.user_agent)):
            return "Snap needs an email, a phone, or both user.ip and user.user_agent"
        if name == "PURCHASE" and (event.data.value is None or not event.data.currency):
            return "PURCHASE needs data.value and data.currency"
        return None

    def user_data(self, event: Event) -> dict[str, Any]:
        """Return Snap's user_data: hashed identifiers as lists, browser ids plain (§3.3)."""
        u = event.user
        out = hashed_ids(u, self.hash_rules, _HASHED_KEYS, "list")
        put_truthy(out, (("client_ip_address", u.ip), ("client_user_agent", u.user_agent)))
        click = u.click_ids.get("sccid")
        if click:
            out["sc_click_id"] = click
        cookie = u.click_ids.get("scid")
        if cookie:
            out["sc_cookie1"] = cookie
        return out

    def payload(self, event: Event) -> dict[str, Any]:
        """Return the v3 event object (§3.2) for one event (the caller has validated it)."""
        body: dict[str, Any] = {
            "event_name": self.event_name(event) or event.event,
            "event_time": event.time,
            "event_id": event.event_id,
            "action_source": ACTION_SOURCES.get(event.source, "OFFLINE"),
            "user_data": self.user_data(event),
        }
        if event.url:
            body["event_source_url"] = event.url
        custom = _custom_data(event)
        if custom:
            body["custom_data"] = custom
        if event.ldu:
            # Limited Data Use; without country/state Snap geolocates the event (§3.2, §10.5).
            body["data_processing_options"] = ["LDU"]
        return body

    def build_request(self, events: Sequence[Event]) -> httpx.Request:
        """Return one POST carrying `{"data": [...]}`; the token travels as access_token."""
        doc = {"data": [self.payload(e) for e in events]}
        test = bool(events) and self.batch_key(events[0]) == "validate"
        return post_json(
            self.validate_url if test else self.url,
            doc,
            params={"access_token": self.settings.access_token.value},
        )

    def classify(
        self, events: Sequence[Event], response: httpx.Response, now: float
    ) -> BatchVerdict:
        """Map Snap's answer to outcomes (see the module docstring)."""
        status = response.status_code
        body = json_object(response)
        invalid = body is not None and str(body.get("status", "")).upper() == "INVALID"
        if 200 <= status < 300 and not invalid:
            return BatchVerdict(Delivered())
        message = _message(status, body)
        verdict = status_verdict(response, now, message, _PAUSED)
        if verdict is not None:
            return verdict
        if body is None and not 200 <= status < 300:
            return default_verdict(response, now)
        # The request was refused as a whole. Bisect it until the bad event stands alone: the
        # halves go out at once, without an attempt counted or a backoff for the good events
        # (a per-event verdict would delay them once per bad event of the batch).
        index = strict_int(body.get("event")) if body is not None else None
        if index is not None and 0 <= index < len(events):
            return BatchVerdict(Permanent(DeadReason.INVALID_FIELD, message), bisect=True)
        return BatchVerdict(Permanent(DeadReason.PLATFORM_REJECTED, message), bisect=True)


def _custom_data(event: Event) -> dict[str, Any]:
    d = event.data
    out: dict[str, Any] = {}
    fields: dict[str, str] = {}
    for key, raw in d.custom.items():
        if key in _CUSTOM_KEYS:
            out[key] = raw
        else:
            fields[key] = ("true" if raw else "false") if isinstance(raw, bool) else str(raw)
    put_present(
        out,
        (
            ("value", d.value),
            ("currency", d.currency.upper() if d.currency else None),
            ("order_id", d.order_id),
            ("content_type", d.content_type),
            ("content_category", d.content_category),
            ("num_items", d.num_items),
            ("search_string", d.search_string),
            ("status", d.status),
        ),
    )
    if d.contents:
        out["content_ids"] = [c.id for c in d.contents]
        out["contents"] = content_items(d.contents)
        if d.num_items is None:
            out["num_items"] = item_count(d.contents)
    if fields:
        out["custom_fields"] = fields
    return out


def _message(status: int, body: Mapping[str, Any] | None) -> str:
    parts = [f"HTTP {status}"]
    if body is not None:
        if body.get("status"):
            parts.append(str(body["status"]))
        if strict_int(body.get("event")) is not None:
            parts.append(f"event {body['event']}")
    text = ""
    if body is not None:
        errors = body.get("errors")
        if isinstance(errors, dict):
            codes = errors.get("codes")
            msgs = errors.get("error_msgs")
            bits = [str(c) for c in codes] if isinstance(codes, list) else []
            bits += [str(m) for m in msgs] if isinstance(msgs, list) else []
            text = "; ".join(bits)
        if not text and body.get("reason"):
            text = str(body["reason"])
    return reason_text(parts, text)
