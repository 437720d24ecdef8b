"""GA4 Measurement Protocol mapping: event names, name and parameter rules, Event → MP parts.

Facts from ../shared/platforms.md §4.1 (body, limits, reserved names, `user_data`, consent),
§4.3/§10.2 (client id from `_ga`), §10.1 (recommended event names), §10.4 (what is hashed) and
§10.5 (consent); pitfalls 18/19 (client id format, never an empty `transaction_id`).

Pure: no clock, no I/O. A Measurement Protocol request carries one user (client_id, consent,
user_data, ip_override, user_agent are request-level), so `head` is what events must share to go
in one request and `event_body` is one entry of `events[]`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from gateway.core.event import Event, ga_client_id

MAX_EVENTS: Final = 25
"""Events per request (§4.1)."""
MAX_PARAMS: Final = 25
"""Parameters per event (§4.1); `items` counts as one."""
MAX_NAME: Final = 40
"""Event and parameter names: at most 40 characters (§4.1)."""
MAX_VALUE: Final = 100
"""Parameter values: at most 100 characters (§4.1)."""
URL_LIMITS: Final[Mapping[str, int]] = {"page_location": 1000, "page_referrer": 420}
"""Longer limits of the page parameters (GA4 collection limits; URLs are cut to them)."""
MAX_ITEMS: Final = 200
"""Items per event (the browser protocol numbers items pr1..pr200, §4.2)."""
WINDOW: Final = 72 * 3600
"""Events may be backdated at most 72 hours (§4.1, §10.3)."""

EVENT_NAMES: Final[Mapping[str, str]] = {
    "PageView": "page_view",
    "ViewContent": "view_item",
    "Search": "search",
    "AddToCart": "add_to_cart",
    "AddToWishlist": "add_to_wishlist",
    "InitiateCheckout": "begin_checkout",
    "AddPaymentInfo": "add_payment_info",
    "Purchase": "purchase",
    "Lead": "generate_lead",
    "CompleteRegistration": "sign_up",
    # Standard events without a GA4 recommended event (§10.1 "—"): a custom event in GA4's
    # snake_case style.
    "Contact": "contact",
    "CustomizeProduct": "customize_product",
    "Donate": "donate",
    "FindLocation": "find_location",
    "Schedule": "schedule",
    "StartTrial": "start_trial",
    "SubmitApplication": "submit_application",
    "Subscribe": "subscribe",
}
"""Canonical (Meta-style) name → GA4 event name (§10.1). Any other name is a custom event and
is sent unchanged if it is a valid GA4 name (`name_problem`)."""

RESERVED_EVENTS: Final = frozenset(
    {
        "ad_activeview",
        "ad_click",
        "ad_exposure",
        "ad_impression",
        "ad_query",
        "ad_reward",
        "adunit_exposure",
        "app_clear_data",
        "app_exception",
        "app_install",
        "app_remove",
        "app_store_refund",
        "app_update",
        "app_upgrade",
        "error",
        "first_open",
        "first_visit",
        "in_app_purchase",
        "os_update",
        "screen_view",
        "session_start",
        "user_engagement",
    }
)
"""Event names GA4 reserves (§4.1; `ad_impression`, `in_app_purchase`, `screen_view` are
app-only, so reserved for a web stream too)."""
RESERVED_EVENT_PREFIXES: Final = ("dynamic_link_", "firebase_", "notification_", "ga_", "google_")
"""Event-name prefixes GA4 reserves (§4.1 `dynamic_link_*`, `firebase_*`, `notification_*`, and
the `ga_`/`google_` prefixes it reserves for parameters)."""
RESERVED_PARAM_PREFIXES: Final = ("_", "firebase_", "ga_", "google_", "gtag.")
"""Parameter-name prefixes GA4 reserves (§4.1)."""
RESERVED_PARAMS: Final = frozenset({"firebase_conversion"})

_NAME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
_NAME_RULE: Final = "up to 40 letters, digits or underscores, starting with a letter"

RULES: Final = "google"
"""The normalisation rule set: Google's e-mail rule (gmail dots and +tag), phone E.164 with '+'."""
_USER_DATA_LISTS: Final = (("em", "sha256_email_address"), ("ph", "sha256_phone_number"))
_ADDRESS_KEYS: Final = (("fn", "sha256_first_name"), ("ln", "sha256_last_name"))
IDENTIFIER_KEYS: Final = frozenset({"em", "ph", "fn", "ln"})
"""Our hashed keys GA4 takes. City, region, postcode and country go to GA4 *plain*; the gateway
keeps only their digests after hashing, so they are not sent (§4.1)."""


def event_name(event: Event) -> str:
    """Return the GA4 name of the event: the table's, or the custom name as given."""
    return EVENT_NAMES.get(event.event, event.event)


def name_problem(name: str) -> str | None:
    """Return why GA4 would drop an event with this name, or None."""
    if not _NAME_RE.fullmatch(name):
        return f"event name {name[:60]!r} is not a GA4 event name ({_NAME_RULE})"
    if name in RESERVED_EVENTS or name.startswith(RESERVED_EVENT_PREFIXES):
        return f"event name {name!r} is reserved by GA4"
    return None


def param_name_problem(name: str) -> str | None:
    """Return why GA4 would refuse a parameter with this name, or None."""
    if name in RESERVED_PARAMS or name.startswith(RESERVED_PARAM_PREFIXES):
        return f"parameter {name!r} is reserved by GA4"
    if not _NAME_RE.fullmatch(name):
        return f"parameter {name[:60]!r} is not a GA4 parameter name ({_NAME_RULE})"
    return None


def client_id(event: Event) -> str | None:
    """Return the GA4 client id of the event's visitor (`click_ids["ga"]`), or None."""
    raw = event.user.click_ids.get("ga")
    return ga_client_id(raw) if raw else None


def transaction_id(event: Event) -> str | None:
    """Return the `transaction_id`: the order id, for a purchase else the event id (never "")."""
    if event.data.order_id:
        return event.data.order_id
    return event.event_id if event.event == "Purchase" else None


OWN_PARAMS: Final = frozenset(
    {
        "currency",
        "value",
        "transaction_id",
        "search_term",
        "page_location",
        "page_referrer",
        "items",
    }
)
"""Parameters the gateway fills from the event's own fields; custom data never sets them."""


def params(event: Event) -> dict[str, Any]:
    """Return the event's GA4 `params`: custom data first, then the recommended parameters."""
    d = event.data
    out: dict[str, Any] = {}
    for key, value in d.custom.items():
        if key in OWN_PARAMS:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else value
    standard: tuple[tuple[str, Any], ...] = (
        ("currency", d.currency),
        ("value", d.value if d.currency else None),  # GA4 ignores a value without currency
        ("transaction_id", transaction_id(event)),
        ("search_term", d.search_string),
        ("page_location", _cut(event.url, URL_LIMITS["page_location"])),
        ("page_referrer", _cut(event.referrer, URL_LIMITS["page_referrer"])),
    )
    for key, value in standard:
        if value is not None:
            out[key] = value
    if d.contents:
        items: list[dict[str, Any]] = []
        for c in d.contents:
            item: dict[str, Any] = {"item_id": c.id}
            if c.quantity is not None:
                item["quantity"] = c.quantity
            if c.price is not None:
                item["price"] = c.price
            items.append(item)
        out["items"] = items
    return out


def params_problem(event: Event) -> str | None:
    """Return why GA4 would refuse the event's parameters, or None (§4.1 limits)."""
    for key in event.data.custom:
        problem = param_name_problem(key)
        if problem is not None:
            return f"data.custom: {problem}"
    values = params(event)
    if len(values) > MAX_PARAMS:
        return f"{len(values)} parameters: GA4 takes at most {MAX_PARAMS} per event"
    for key, value in values.items():
        limit = URL_LIMITS.get(key, MAX_VALUE)
        if isinstance(value, str) and len(value) > limit:
            return f"parameter {key} is longer than {limit} characters"
    items = values.get("items", ())
    if len(items) > MAX_ITEMS:
        return f"{len(items)} items: GA4 takes at most {MAX_ITEMS} per event"
    for item in items:
        if len(item["item_id"]) > MAX_VALUE:
            return f"an item_id is longer than {MAX_VALUE} characters"
    return None


def consent(event: Event) -> dict[str, str]:
    """Return `consent` {ad_user_data, ad_personalization} from the event's stated consent.

    An unstated field is left out (GA4 then applies the property's defaults); Limited Data Use
    denies ad personalisation.
    """
    c = event.consent
    out: dict[str, str] = {}
    if c is not None and c.ad_user_data is not None:
        out["ad_user_data"] = _granted(c.ad_user_data)
    personalization = None if c is None else c.ad_personalization
    if event.ldu:
        personalization = False
    if personalization is not None:
        out["ad_personalization"] = _granted(personalization)
    return out


def user_data(event: Event) -> dict[str, Any]:
    """Return `user_data`: the "google" digests (lists of e-mails and phones, first/last name
    in one `address` entry); nothing when the user denied ad_user_data."""
    if event.consent is not None and event.consent.ad_user_data is False:
        return {}
    hashed = event.user.hashed.get(RULES, {})
    out: dict[str, Any] = {}
    for key, name in _USER_DATA_LISTS:
        values = hashed.get(key)
        if values:
            out[name] = list(values)
    address = {name: hashed[key][0] for key, name in _ADDRESS_KEYS if hashed.get(key)}
    if address:
        out["address"] = [address]
    return out


def head(event: Event, client: str) -> dict[str, Any]:
    """Return the request-level fields of the event's request (all but `events`)."""
    out: dict[str, Any] = {"client_id": client}
    given = consent(event)
    if given:
        out["consent"] = given
    data = user_data(event)
    if data:
        out["user_data"] = data
    if event.user.ip:
        out["ip_override"] = event.user.ip
    if event.user.user_agent:
        out["user_agent"] = event.user.user_agent
    return out


def event_body(event: Event) -> dict[str, Any]:
    """Return the event's entry of `events[]`: name, params and its time in microseconds."""
    body: dict[str, Any] = {"name": event_name(event), "params": params(event)}
    body["timestamp_micros"] = int(event.time) * 1_000_000
    return body


def _granted(value: bool) -> str:
    return "GRANTED" if value else "DENIED"


def _cut(text: str | None, limit: int) -> str | None:
    return None if text is None else text[:limit]
