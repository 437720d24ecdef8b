"""Canonical, platform-neutral event model: the types, and the vocabulary they use (event
names, identifier keys, click ids, consent keys)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Final


class Source(StrEnum):
    """Where the conversion happened (Meta's action_source vocabulary)."""

    WEBSITE = "website"
    APP = "app"
    EMAIL = "email"
    PHONE_CALL = "phone_call"
    CHAT = "chat"
    PHYSICAL_STORE = "physical_store"
    SYSTEM_GENERATED = "system_generated"
    BUSINESS_MESSAGING = "business_messaging"
    OTHER = "other"


STANDARD_EVENT_ORDER: Final = (
    "PageView",
    "ViewContent",
    "Search",
    "AddToCart",
    "AddToWishlist",
    "InitiateCheckout",
    "AddPaymentInfo",
    "Purchase",
    "Lead",
    "CompleteRegistration",
    "Contact",
    "CustomizeProduct",
    "Donate",
    "FindLocation",
    "Schedule",
    "StartTrial",
    "SubmitApplication",
    "Subscribe",
)
"""Standard event names in funnel order (platforms.md §1.6, §10.1)."""
STANDARD_EVENTS: Final = frozenset(STANDARD_EVENT_ORDER)
"""Standard event names (platforms.md §1.6, §10.1); anything else is a custom event."""

VALUE_EVENTS: Final = frozenset({"Purchase"})
"""Events that platforms refuse without a value and a currency (platforms.md §1.5)."""

PII_FIELDS: Final[Mapping[str, str]] = {
    "email": "em",
    "phone": "ph",
    "first_name": "fn",
    "last_name": "ln",
    "city": "ct",
    "state": "st",
    "zip": "zp",
    "country": "country",
    "date_of_birth": "db",
    "gender": "ge",
    "external_id": "external_id",
}
"""Input name → identifier key (Meta's user_data keys are our internal vocabulary)."""

LIST_PII: Final = frozenset({"email", "phone", "external_id"})
"""PII inputs that may carry several values (a list of strings)."""

CLICK_ID_KEYS: Final = frozenset(
    {
        "fbclid",
        "ga",
        "gclid",
        "gbraid",
        "wbraid",
        "ttclid",
        "ttp",
        "sccid",
        "scid",
        "msclkid",
        "li_fat_id",
        "epik",
        "rdt_cid",
        "twclid",
        "rdt_uuid",
    }
)
"""Known `User.click_ids` keys: click ids and first-party browser ids. `ga` is GA4's client id
(the `_ga` cookie without its `GA1.<n>.` prefix: `<random>.<seconds>`; a full cookie value is
accepted and stored without the prefix)."""

CONSENT_KEYS: Final = ("ad_storage", "analytics_storage", "ad_user_data", "ad_personalization")


@dataclass(frozen=True, slots=True)
class User:
    """Who did it: raw PII (in memory only), hashed identifiers, and plain browser ids.

    `pii` holds raw values keyed by identifier key (em, ph, …) between parsing and hashing;
    `hashed` holds, per hashing rule set ("meta", …), the SHA-256 values a destination sends.
    Only events whose `pii` is empty may be stored (see `gateway.core.record.encode`).
    """

    pii: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    hashed: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    ip: str | None = None
    user_agent: str | None = None
    visitor_id: str | None = None
    fbc: str | None = None
    fbp: str | None = None
    click_ids: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Content:
    """One line item."""

    id: str
    quantity: int | None = None
    price: float | None = None


@dataclass(frozen=True, slots=True)
class Data:
    """What happened: value, currency, order and line items, plus custom properties."""

    value: float | None = None
    currency: str | None = None
    order_id: str | None = None
    contents: tuple[Content, ...] = ()
    content_type: str | None = None
    content_name: str | None = None
    content_category: str | None = None
    num_items: int | None = None
    search_string: str | None = None
    status: str | None = None
    predicted_ltv: float | None = None
    custom: Mapping[str, str | float | bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Consent:
    """Explicit consent state (Consent Mode v2 vocabulary); None means not stated."""

    ad_storage: bool | None = None
    analytics_storage: bool | None = None
    ad_user_data: bool | None = None
    ad_personalization: bool | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """A conversion or browser event in the gateway's platform-neutral shape."""

    event: str
    event_id: str
    time: int
    source: Source
    url: str | None = None
    referrer: str | None = None
    user: User = field(default_factory=User)
    data: Data = field(default_factory=Data)
    consent: Consent | None = None
    test_code: str | None = None
    ldu: bool = False
    """Limited Data Use applies (US state privacy; set by the consent decision)."""
    channel: str = "api"
    """Which road it came by: "api" (shop backend), "loader" (browser), "pixel" (proxied hit)."""

    @property
    def is_standard(self) -> bool:
        """Return whether the name is a standard event."""
        return self.event in STANDARD_EVENTS


PiiHasher = Callable[[Mapping[str, tuple[str, ...]]], Mapping[str, Mapping[str, tuple[str, ...]]]]
"""Raw PII by identifier key → hashed identifiers by rule set (see `core.identity`)."""


_GA_COOKIE_RE: Final = re.compile(r"(?:GA\d\.\d{1,2}\.)?([0-9]{1,20}\.[0-9]{1,20})")
"""A GA4 client id, or the whole `_ga` cookie value (`GA1.<n>.` + client id)."""


def ga_client_id(value: str) -> str | None:
    """Return the GA4 client id (`<random>.<seconds>`) of a client id or `_ga` cookie value.

    `GA1.1.1234567890.1700000000` and `1234567890.1700000000` both give
    `1234567890.1700000000`; anything else gives None.
    """
    match = _GA_COOKIE_RE.fullmatch(value)
    return None if match is None else match.group(1)


def derive_event_id(order_id: str) -> str:
    """Return the event_id used when the caller gave none but an order id.

    The rule is the identity: the order id *is* the event id. A backend and a browser that both
    know the order id therefore send the same id without sharing any state (platforms dedup on
    event name + event id, so one order can carry several event kinds).
    """
    return order_id


def with_user(event: Event, **changes: Any) -> Event:
    """Return the event with its user fields replaced."""
    return replace(event, user=replace(event.user, **changes))
