"""Reddit Conversions API v3: settings, Event → conversion event, request building, answers.

Facts from ../shared/platforms.md §7 (Reddit) and §10 (event names, click ids, time units,
hashing, LDU), checked against Reddit's v3 migration and direct-integration pages (as captured by
connectors): endpoint ``POST /api/v3/pixels/{pixel_id}/conversion_events`` with
``Authorization: Bearer <conversion access token>``; body ``{"data": {"events": [...],
"test_id": …}}``; ``event_at`` in epoch **milliseconds**, at most 7 days old; ``action_source``
required (``WEBSITE``, ``APP``, ``PHYSICAL_STORE``, ``OTHER``); ``type.tracking_type`` in
UPPER_SNAKE_CASE, ``CUSTOM`` with a ``custom_event_name`` of at most 64 characters; at most 1,000
events a request.

Identifiers: only the "reddit" rule set's digests are sent (e-mail with Reddit's own
canonicalisation, phone as E.164 *with* '+', external_id trimmed). Unlike Meta, TikTok and Snap,
Reddit wants the IP address SHA-256 hashed (pitfall 3); the user agent stays plain. The click id
``rdt_cid`` goes plain as ``click_id``, to Reddit only.

Deduplication: Reddit keeps one of a pixel and a server copy with the same
``metadata.conversion_id`` and event type (custom: the same name); the event's ``event_id`` is
sent as the conversion id, plain, as the pixel sends ``conversionId``.

Answers (Reddit's documented errors): 2xx is delivered; 401 (no or bad token), 403 (no
permission for the pixel, missing scope) and 404 (unknown pixel) pause the route; 429 (quota or
a throttled default user agent — every request names signalgate in ``User-Agent``), 408 and 5xx
retry, honouring Retry-After when sent; 400 ("There were N invalid conversion events. None were
processed.", or a batch over 1,000) refuses the whole request without naming the event, so the
batch is bisected until the bad event stands alone and is dead-lettered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import httpx

from gateway import __version__
from gateway.core.event import Event, Source
from gateway.core.normalize.digests import sha256_hex
from gateway.core.secret import Secret
from gateway.destinations.base import (
    BatchVerdict,
    Delivered,
    Permanent,
)
from gateway.destinations.common import (
    Configured,
    api_base_setting,
    chosen_test_code,
    content_items,
    hashed_ids,
    item_count,
    mapping_setting,
    max_batch_setting,
    optional_setting,
    past_window,
    post_json,
    setting,
    status_verdict,
)
from gateway.store.base import DeadReason

MAX_BATCH: Final = 1000
"""Reddit accepts at most 1,000 events per request (§7)."""
WINDOW: Final = 7 * 86400
"""Events must reach Reddit within 7 days of happening (§7, §10.3)."""
MAX_CUSTOM_NAME: Final = 64
"""A custom_event_name is at most 64 UTF-8 characters."""

TRACKING_TYPES: Final = frozenset(
    {
        "PAGE_VISIT",
        "VIEW_CONTENT",
        "SEARCH",
        "ADD_TO_CART",
        "ADD_TO_WISHLIST",
        "PURCHASE",
        "LEAD",
        "SIGN_UP",
    }
)
"""Reddit v3 standard tracking types; anything else is sent as CUSTOM with its name (§7)."""

EVENT_NAMES: Final[Mapping[str, str]] = {
    "PageView": "PAGE_VISIT",
    "ViewContent": "VIEW_CONTENT",
    "Search": "SEARCH",
    "AddToCart": "ADD_TO_CART",
    "AddToWishlist": "ADD_TO_WISHLIST",
    "Purchase": "PURCHASE",
    "Lead": "LEAD",
    "CompleteRegistration": "SIGN_UP",
}
"""Canonical (Meta-style) name → Reddit v3 tracking type (§10.1). InitiateCheckout,
AddPaymentInfo, Subscribe, StartTrial, Contact and custom names have no Reddit type: they are sent
as CUSTOM events under their own name (`custom_events` may map them to a type instead)."""

NO_VALUE_TYPES: Final = frozenset({"PAGE_VISIT", "VIEW_CONTENT", "SEARCH"})
"""Types that carry no value, currency or item_count (Reddit's event-metadata article)."""
NO_ITEM_COUNT_TYPES: Final = frozenset({"LEAD", "SIGN_UP"})
"""Types that carry value and currency but no item_count."""

ACTION_SOURCES: Final[Mapping[Source, str]] = {
    Source.WEBSITE: "WEBSITE",
    Source.APP: "APP",
    Source.PHYSICAL_STORE: "PHYSICAL_STORE",
}
"""Reddit's action_source values; every other source is OTHER (§7: enum from v3 reference)."""

_USER_KEYS: Final = (("em", "email"), ("ph", "phone_number"), ("external_id", "external_id"))
"""Our hashed identifier key → Reddit's `user` key (one SHA-256 value each, §7)."""

_PAUSED: Final = {
    401: "conversion access token refused",
    403: "no permission for this pixel",
    404: "pixel not found",
}
"""Statuses that pause the route, with the hint each adds to the reason."""


@dataclass(frozen=True, slots=True)
class RedditSettings:
    """`[sites.destinations.reddit]`: one Reddit pixel and its conversion access token."""

    pixel_id: str = setting(
        "Reddit Pixel id from Events Manager (a2_… or t2_…).",
        pattern=r"[A-Za-z0-9][A-Za-z0-9_]{2,63}",
        expected="a Reddit pixel id (letters, digits and '_', e.g. a2_abc123)",
    )
    access_token: Secret = setting(
        "Conversion access token (Events Manager → your pixel → Conversions API), a secret."
    )
    api_base: str = api_base_setting("https://ads-api.reddit.com", "Reddit Ads API")
    test_id: str | None = optional_setting(
        "Event Testing id from Events Manager; for testing only."
    )
    max_batch: int = max_batch_setting("Reddit", MAX_BATCH)
    custom_events: Mapping[str, str] = mapping_setting(
        'Event name → Reddit type or custom name, e.g. {Subscribe = "PURCHASE"}.'
    )


@dataclass(frozen=True, slots=True)
class EventType:
    """Reddit's `type`: a standard tracking type, or CUSTOM with the custom event's name."""

    tracking_type: str
    custom_event_name: str | None = None

    def as_json(self) -> dict[str, str]:
        """Return the `type` object."""
        out = {"tracking_type": self.tracking_type}
        if self.custom_event_name is not None:
            out["custom_event_name"] = self.custom_event_name
        return out


class Reddit(Configured[RedditSettings]):
    """Reddit Conversions API v3 destination."""

    name: ClassVar[str] = "reddit"
    hash_rules: ClassVar[str] = "reddit"

    def __init__(self, settings: RedditSettings) -> None:
        super().__init__(settings)
        base = settings.api_base.rstrip("/")
        self.url = f"{base}/api/v3/pixels/{settings.pixel_id}/conversion_events"

    def batch_key(self, event: Event) -> str:
        """Return the test id: it is per request, so events with different ids never mix."""
        return chosen_test_code(event, self.settings.test_id)

    def too_old(self, event: Event, now: float) -> bool:
        """Return whether the event is (nearly) outside Reddit's 7-day window."""
        return past_window(event.time, now, WINDOW)

    def event_type(self, event: Event) -> EventType:
        """Return the Reddit type of the event: mapped, standard, or CUSTOM under its name."""
        name = self.settings.custom_events.get(event.event, event.event)
        if name in TRACKING_TYPES:
            return EventType(name)
        standard = EVENT_NAMES.get(name)
        if standard is not None:
            return EventType(standard)
        return EventType("CUSTOM", name)

    def validate(self, event: Event) -> str | None:
        """Return why Reddit would refuse the event, or None."""
        kind = self.event_type(event)
        name = kind.custom_event_name
        if name is not None and not 1 <= len(name) <= MAX_CUSTOM_NAME:
            return (
                f"event name {event.event!r} is sent as a Reddit custom event, whose name must"
                f" have 1-{MAX_CUSTOM_NAME} characters: map it in"
                " sites[].destinations.reddit.custom_events"
            )
        u = event.user
        hashed = u.hashed.get(self.hash_rules, {})
        if not (u.ip or u.click_ids.get("rdt_cid") or any(hashed.get(k) for k, _ in _USER_KEYS)):
            return "no customer information: Reddit needs rdt_cid, email, phone, external_id or ip"
        return None

    def user(self, event: Event) -> dict[str, Any]:
        """Return Reddit's `user` object: "reddit" digests, the IP hashed, the UA plain."""
        u = event.user
        out = hashed_ids(u, self.hash_rules, _USER_KEYS, "first")  # one value per key
        if u.ip:
            out["ip_address"] = sha256_hex(u.ip)  # parse_event gives the canonical text form
        if u.user_agent:
            out["user_agent"] = u.user_agent
        if uuid := u.click_ids.get("rdt_uuid"):
            out["uuid"] = uuid  # the pixel's _rdt_uuid cookie, plain (§7)
        return out

    def payload(self, event: Event) -> dict[str, Any]:
        """Return the v3 conversion event (§7) for one event."""
        kind = self.event_type(event)
        body: dict[str, Any] = {
            "event_at": event.time * 1000,
            "action_source": ACTION_SOURCES.get(event.source, "OTHER"),
            "type": kind.as_json(),
        }
        if event.url:
            body["event_source_url"] = event.url
        click = event.user.click_ids.get("rdt_cid")
        if click:
            body["click_id"] = click  # as received: never hashed, never re-cased
        body["metadata"] = _metadata(event, kind.tracking_type)
        user = self.user(event)
        if event.ldu:
            # Limited Data Use; without country/region Reddit locates the user itself (§10.5).
            user["data_processing_options"] = {"modes": ["LDU"]}
        if user:
            body["user"] = user
        return body

    def build_request(self, events: Sequence[Event]) -> httpx.Request:
        """Return one POST carrying `{"data": {"events": [...]}}` with the bearer token."""
        data: dict[str, Any] = {"events": [self.payload(e) for e in events]}
        test_id = self.batch_key(events[0]) if events else ""
        if test_id:
            data["test_id"] = test_id
        return post_json(
            self.url,
            {"data": data},
            auth={"authorization": f"Bearer {self.settings.access_token.value}"},
            extra={
                # Reddit throttles default client user agents (documented 429).
                "user-agent": f"signalgate/{__version__} (+reddit-capi)",
            },
        )

    def classify(
        self, events: Sequence[Event], response: httpx.Response, now: float
    ) -> BatchVerdict:
        """Map Reddit's answer to outcomes (see the module docstring)."""
        status = response.status_code
        message = _message(status, response)
        if 200 <= status < 300:
            return BatchVerdict(Delivered())
        verdict = status_verdict(response, now, message, _PAUSED)
        if verdict is not None:
            return verdict
        # 400 and other refusals: the whole request is refused and Reddit does not say which
        # event is at fault. Bisect until the bad event stands alone; the good halves go out at
        # once, without an attempt counted or a backoff.
        reason = (
            DeadReason.INVALID_FIELD
            if status in (400, 422) and "invalid" in message.lower()
            else DeadReason.PLATFORM_REJECTED
        )
        return BatchVerdict(Permanent(reason, message), bisect=True)


def _metadata(event: Event, tracking_type: str) -> dict[str, Any]:
    """Return Reddit's `metadata`: the conversion id (dedup key), value, currency, products."""
    d = event.data
    out: dict[str, Any] = {"conversion_id": event.event_id}
    if tracking_type not in NO_VALUE_TYPES:
        if d.value is not None:
            out["value"] = d.value
        if d.currency:
            out["currency"] = d.currency.upper()
        if tracking_type not in NO_ITEM_COUNT_TYPES:
            count = d.num_items
            if count is None and d.contents:
                count = item_count(d.contents)
            if count is not None:
                out["item_count"] = count
    if d.contents:
        products = content_items(d.contents)
        if len(products) == 1:
            if d.content_name:
                products[0]["name"] = d.content_name
            if d.content_category:
                products[0]["category"] = d.content_category
        out["products"] = products
    return out


def _message(status: int, response: httpx.Response) -> str:
    """Return "HTTP <status>: <Reddit's message>", read from `{"error": {...}}` when present."""
    text = ""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            text = str(error.get("message") or "")
        elif isinstance(error, str):
            text = error
        elif isinstance(body.get("message"), str):
            text = body["message"]
    return (f"HTTP {status}" + (f": {text}" if text else ""))[:500]
