"""What Meta's Conversions API refuses in one event of `data`: the event's fields, its time
window, its `user_data` identifiers (hashed or plain, and above the matching baseline) and its
`custom_data`. The event checks of the Meta sandbox (gateway/sandbox/meta.py), written from the
platform reference (shared platforms.md §1) like it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .meta_errors import SUBCODE_TOO_OLD, MetaError, Rejected, bad_field
from .values import is_http_url, is_int, is_ip, is_number

__all__ = ["ACTION_SOURCES", "check_event"]

ACTION_SOURCES = frozenset(
    {
        "website",
        "app",
        "email",
        "phone_call",
        "chat",
        "physical_store",
        "system_generated",
        "business_messaging",
        "other",
    }
)

# user_data keys that must arrive SHA-256 hashed (string or list of strings).
HASHED_KEYS = frozenset(
    {"em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country"}
    | {"f5first", "f5last", "fi", "dobd", "dobm", "doby"}
)
# user_data keys that are never hashed.
PLAIN_KEYS = frozenset(
    {
        "client_ip_address",
        "client_user_agent",
        "fbc",
        "fbp",
        "subscription_id",
        "lead_id",
        "fb_login_id",
        "anon_id",
        "madid",
        "page_id",
        "page_scoped_user_id",
        "ctwa_clid",
        "ig_account_id",
        "ig_sid",
    }
)
IDENTIFIER_KEYS = HASHED_KEYS | PLAIN_KEYS | {"external_id"}

# §1.2 matching baseline: user_data holding only a subset of one of these is rejected.
MATCH_BASELINE_COMBOS: tuple[frozenset[str], ...] = (
    frozenset({"ct", "country", "st", "zp", "ge", "client_user_agent"}),
    frozenset({"db", "client_user_agent"}),
    frozenset({"fn", "ge"}),
    frozenset({"ln", "ge"}),
)

MAX_AGE_SECONDS = 7 * 86_400
MAX_AGE_PHYSICAL_STORE_SECONDS = 62 * 86_400
MAX_FUTURE_SECONDS = 5 * 60
MS_THRESHOLD = 100_000_000_000  # an event_time at or above this is a millisecond timestamp

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_FB_COOKIE = re.compile(r"fb\.\d\.\d{10,16}\.[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)?")
_CURRENCY = re.compile(r"[A-Za-z]{3}")


def check_event(index: int, event: Mapping[str, object], now: float) -> None:
    """Raise `Rejected` for the first field of `data[index]` Meta would refuse."""
    name = event.get("event_name")
    if not isinstance(name, str) or not name.strip():
        raise bad_field(index, "event_name", "required, must be a non-empty string")

    action_source = event.get("action_source")
    if action_source is None:
        raise bad_field(index, "action_source", "required")
    if action_source not in ACTION_SOURCES:
        raise bad_field(
            index, "action_source", f"must be one of {', '.join(sorted(ACTION_SOURCES))}"
        )
    _check_event_time(index, event.get("event_time"), now, str(action_source))

    event_id = event.get("event_id")
    if event_id is not None and not isinstance(event_id, str):
        raise bad_field(index, "event_id", "must be a string")

    url = event.get("event_source_url")
    if action_source == "website":
        if url is None:
            raise bad_field(index, "event_source_url", "required for website events")
        if not is_http_url(url):
            raise bad_field(index, "event_source_url", "must be an absolute http(s) URL")
    elif url is not None and not isinstance(url, str):
        raise bad_field(index, "event_source_url", "must be a string")
    referrer = event.get("referrer_url")
    if referrer is not None and not isinstance(referrer, str):
        raise bad_field(index, "referrer_url", "must be a string")
    opt_out = event.get("opt_out")
    if opt_out is not None and not isinstance(opt_out, bool):
        raise bad_field(index, "opt_out", "must be a boolean")
    _check_processing_options(index, event)

    _check_user_data(index, event.get("user_data"), website=action_source == "website")
    _check_custom_data(index, event.get("custom_data"), purchase=name == "Purchase")


def _check_event_time(index: int, value: object, now: float, action_source: str) -> None:
    if value is None:
        raise bad_field(index, "event_time", "required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_field(index, "event_time", "must be an integer Unix timestamp in seconds")
    if value <= 0:
        raise bad_field(index, "event_time", "must be a positive Unix timestamp in seconds")
    if value >= MS_THRESHOLD:
        raise bad_field(
            index, "event_time", "looks like milliseconds; it must be Unix time in seconds"
        )
    if value > now + MAX_FUTURE_SECONDS:
        raise bad_field(index, "event_time", "is in the future")
    max_age = (
        MAX_AGE_PHYSICAL_STORE_SECONDS if action_source == "physical_store" else MAX_AGE_SECONDS
    )
    if value < now - max_age:
        days = max_age // 86_400
        raise Rejected(
            MetaError(
                status=400,
                code=100,
                subcode=SUBCODE_TOO_OLD,
                message="(#100) Invalid parameter",
                title="Event Timestamp Too Old",
                user_msg=(
                    f"Event data[{index}], field event_time: the timestamp is more than {days} days"
                    " in the past."
                ),
            )
        )


def _check_processing_options(index: int, event: Mapping[str, object]) -> None:
    options = event.get("data_processing_options")
    if options is not None and (
        not isinstance(options, list) or not all(isinstance(o, str) for o in options)
    ):
        raise bad_field(index, "data_processing_options", "must be an array of strings")
    for key in ("data_processing_options_country", "data_processing_options_state"):
        value = event.get(key)
        if value is not None and not is_int(value):
            raise bad_field(index, key, "must be an integer")


def _check_user_data(index: int, user_data: object, *, website: bool) -> None:
    if user_data is None:
        raise bad_field(index, "user_data", "required")
    if not isinstance(user_data, dict):
        raise bad_field(index, "user_data", "must be an object")
    present = {key for key, value in user_data.items() if value is not None}
    for key in sorted(present & HASHED_KEYS):
        _check_hashed(index, key, user_data[key])
    if "external_id" in present:
        _check_strings(index, "external_id", user_data["external_id"])
    for key in ("fbc", "fbp"):
        if key in present:
            value = user_data[key]
            if not isinstance(value, str) or _FB_COOKIE.fullmatch(value) is None:
                raise bad_field(
                    index,
                    f"user_data.{key}",
                    "must look like fb.<subdomainIndex>.<creationTimeMs>.<value>[.<appendix>]",
                )
    if "client_ip_address" in present:
        ip = user_data["client_ip_address"]
        if not isinstance(ip, str) or not is_ip(ip):
            raise bad_field(
                index, "user_data.client_ip_address", "must be a valid IPv4 or IPv6 address"
            )
    if "client_user_agent" in present:
        ua = user_data["client_user_agent"]
        if not isinstance(ua, str) or not ua.strip():
            raise bad_field(index, "user_data.client_user_agent", "must be a non-empty string")
    for key in sorted(present & (PLAIN_KEYS - {"fbc", "fbp", "client_ip_address"})):
        value = user_data[key]
        if not (isinstance(value, str) and value) and not is_int(value):
            raise bad_field(index, f"user_data.{key}", "must be a non-empty string")

    if website and "client_user_agent" not in present:
        raise bad_field(index, "user_data.client_user_agent", "required for website events")
    identifiers = present & IDENTIFIER_KEYS
    if not identifiers:
        raise bad_field(index, "user_data", "must contain at least one customer identifier")
    for combo in MATCH_BASELINE_COMBOS:
        if identifiers <= combo:
            raise bad_field(
                index,
                "user_data",
                f"the identifiers ({', '.join(sorted(identifiers))}) are below the matching"
                f" baseline: a subset of ({', '.join(sorted(combo))}) alone is not enough",
            )


def _check_hashed(index: int, key: str, value: object) -> None:
    values = _string_list(value)
    if values is None:
        raise bad_field(index, f"user_data.{key}", "must be a string or a non-empty array of them")
    for item in values:
        if _SHA256_HEX.fullmatch(item) is None:
            problem = "not hashed: must be a SHA-256 hash (64 lowercase hex characters)"
            if key == "em" and "@" in item:
                problem = "not hashed: looks like a raw email address; send its SHA-256 hash"
            raise bad_field(index, f"user_data.{key}", problem)


def _check_strings(index: int, key: str, value: object) -> None:
    values = _string_list(value)
    if values is None or not all(values):
        raise bad_field(
            index, f"user_data.{key}", "must be a non-empty string or a non-empty array of them"
        )


def _string_list(value: object) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return [str(v) for v in value]
    return None


def _check_custom_data(index: int, custom_data: object, *, purchase: bool) -> None:
    if custom_data is None:
        if purchase:
            raise bad_field(index, "custom_data", "required for Purchase (value and currency)")
        return
    if not isinstance(custom_data, dict):
        raise bad_field(index, "custom_data", "must be an object")
    value = custom_data.get("value")
    if value is None and purchase:
        raise bad_field(index, "custom_data.value", "required for Purchase")
    if value is not None and not is_number(value):
        raise bad_field(index, "custom_data.value", "must be a number")
    currency = custom_data.get("currency")
    if currency is None and purchase:
        raise bad_field(index, "custom_data.currency", "required for Purchase")
    if currency is not None and (
        not isinstance(currency, str) or _CURRENCY.fullmatch(currency) is None
    ):
        raise bad_field(index, "custom_data.currency", "must be a 3-letter ISO 4217 code")
    content_ids = custom_data.get("content_ids")
    if content_ids is not None and (
        not isinstance(content_ids, list)
        or not all((isinstance(c, str) and c) or is_int(c) for c in content_ids)
    ):
        raise bad_field(index, "custom_data.content_ids", "must be an array of ids")
    contents = custom_data.get("contents")
    if contents is not None:
        if not isinstance(contents, list):
            raise bad_field(index, "custom_data.contents", "must be an array of objects")
        for position, item in enumerate(contents):
            path = f"custom_data.contents[{position}]"
            if not isinstance(item, dict):
                raise bad_field(index, path, "must be an object")
            item_id = item.get("id")
            if not ((isinstance(item_id, str) and item_id) or is_int(item_id)):
                raise bad_field(index, f"{path}.id", "required")
            quantity = item.get("quantity")
            if quantity is not None and not is_int(quantity):
                raise bad_field(index, f"{path}.quantity", "must be an integer")
            price = item.get("item_price")
            if price is not None and not is_number(price):
                raise bad_field(index, f"{path}.item_price", "must be a number")
    num_items = custom_data.get("num_items")
    if num_items is not None and not is_int(num_items):
        raise bad_field(index, "custom_data.num_items", "must be an integer")
