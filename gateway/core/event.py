"""Canonical, platform-neutral event model and its parser with field-path errors."""

from __future__ import annotations

import ipaddress
import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from datetime import datetime
from enum import StrEnum
from operator import attrgetter
from typing import Any, Final, ParamSpec, TypeVar

JSON = Any
_P = ParamSpec("_P")
_T = TypeVar("_T")

# Size limits for strings accepted from clients: generous for real data, small enough that a
# hostile body cannot blow up storage or platform payloads.
MAX_NAME = 100
MAX_ID = 256
MAX_URL = 4096
MAX_TEXT = 1024
MAX_UA = 1024
MAX_LIST = 10
MAX_CONTENTS = 500
MAX_CUSTOM_KEYS = 50

# Ms-since-epoch values are ~1.7e12 today; seconds are ~1.7e9. Anything above this bound is
# almost certainly milliseconds (platforms.md §11 pitfall 5) and is refused with that reason.
_MS_THRESHOLD: Final = 100_000_000_000
FUTURE_SKEW = 300.0
"""Client clocks up to five minutes ahead are clamped to now; further ahead is rejected."""


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
class FieldError:
    """One problem with one input field, addressed by its JSON path."""

    path: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        """Return the JSON shape used in API answers."""
        return {"path": self.path, "reason": self.reason}


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


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Per-site bounds applied while parsing."""

    max_age_seconds: float = 7 * 86400
    max_age_offline_seconds: float = 62 * 86400


_EVENT_KEYS: Final = frozenset(
    {
        "event",
        "event_id",
        "time",
        "source",
        "url",
        "referrer",
        "user",
        "data",
        "consent",
        "test_code",
    }
)
_USER_KEYS: Final = frozenset(
    set(PII_FIELDS) | {"ip", "user_agent", "visitor_id", "fbc", "fbp", "click_ids"}
)
_DATA_KEYS: Final = frozenset(
    {
        "value",
        "currency",
        "order_id",
        "contents",
        "content_type",
        "content_name",
        "content_category",
        "num_items",
        "search_string",
        "status",
        "predicted_ltv",
        "custom",
    }
)
_CONTENT_KEYS: Final = frozenset({"id", "quantity", "price"})
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_ .:\-]{0,99}$")
_CURRENCY_RE: Final = re.compile(r"^[A-Za-z]{3}$")
_PRINTABLE_RE: Final = re.compile(r"^[^\x00-\x1f\x7f]*$")
_IPV4_RE: Final = re.compile(
    r"^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$"
)
_COOKIE_SAFE_RE: Final = re.compile(r"^[A-Za-z0-9._\-~]{1,500}$")
_IDENTIFIER_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DECIMAL_TIME_RE: Final = re.compile(r"\d{1,11}(\.\d+)?")
_FB_COOKIE_RE: Final = re.compile(r"fb\.\d\.\d{10,16}\.[A-Za-z0-9_\-.]{1,400}")
_GA_COOKIE_RE: Final = re.compile(r"(?:GA\d\.\d{1,2}\.)?([0-9]{1,20}\.[0-9]{1,20})")
"""A GA4 client id, or the whole `_ga` cookie value (`GA1.<n>.` + client id)."""
_CUSTOM_KEY_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_URL_RE: Final = re.compile(r"^https?://[^\s/?#]+", re.IGNORECASE)
_CONSENT_KEY_SET: Final = frozenset(CONSENT_KEYS)


class _Errors:
    """Collects field errors under a path prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.items: list[FieldError] = []

    def add(self, path: str, reason: str) -> None:
        self.items.append(FieldError(f"{self.prefix}{path}" if path else self.prefix, reason))


def _unknown(obj: Mapping[str, JSON], allowed: frozenset[str], path: str, errs: _Errors) -> None:
    for key in obj:
        if key not in allowed:
            errs.add(f"{path}{_key(key)}", "unknown field")


def _key(key: str) -> str:
    return f".{key}" if _IDENTIFIER_RE.fullmatch(key) else f"[{key[:40]!r}]"


def _string(
    obj: Mapping[str, JSON],
    key: str,
    path: str,
    errs: _Errors,
    *,
    max_len: int = MAX_TEXT,
    allow_number: bool = False,
) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is str and len(value) <= max_len and value.isprintable():
        return value.strip() or None  # the common case, checked in C
    if allow_number and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    elif allow_number and type(value) is float and abs(value) >= 2**63:
        errs.add(f"{path}.{key}", "integer beyond 64 bits: send such ids as strings")
        return None
    if not isinstance(value, str):
        errs.add(f"{path}.{key}", "expected a string" + (" or an integer" if allow_number else ""))
        return None
    value = value.strip()
    if len(value) > max_len:
        errs.add(f"{path}.{key}", f"longer than {max_len} characters")
        return None
    if not _PRINTABLE_RE.match(value):
        errs.add(f"{path}.{key}", "contains control characters")
        return None
    return value or None


def _isfinite(value: int | float) -> bool:
    """`math.isfinite`, without its OverflowError for an int beyond any float (False then).

    orjson reads such integers as floats, but the stdlib, which decodes what orjson refuses
    (jsoncodec), keeps them exact; an int compares with a float without conversion.
    """
    if type(value) is int:
        return -_FLOAT_MAX <= value <= _FLOAT_MAX
    return math.isfinite(value)


_FLOAT_MAX: Final = sys.float_info.max


def _number(
    obj: Mapping[str, JSON], key: str, path: str, errs: _Errors, *, minimum: float | None = None
) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            errs.add(f"{path}.{key}", "expected a number")
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        errs.add(f"{path}.{key}", "expected a number")
        return None
    if not _isfinite(value) or abs(value) > 1e12:
        errs.add(f"{path}.{key}", "expected a finite number below 1e12")
        return None
    if minimum is not None and value < minimum:
        errs.add(f"{path}.{key}", f"must be >= {minimum:g}")
        return None
    return float(value)


def _integer(obj: Mapping[str, JSON], key: str, path: str, errs: _Errors) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000:
        errs.add(f"{path}.{key}", "expected an integer between 0 and 1000000")
        return None
    return value


def parse_time(value: JSON) -> float | str:
    """Return unix seconds from unix seconds or ISO-8601, or a reason string."""
    kind = type(value)
    if kind is int or kind is float:  # the usual case first (and no union object per call)
        if not _isfinite(value) or value < 0:
            return "expected non-negative unix seconds"
        if value >= _MS_THRESHOLD:
            return "looks like milliseconds; expected unix seconds"
        return float(value)
    if isinstance(value, bool):
        return "expected unix seconds or an ISO-8601 string"
    if isinstance(value, int | float):
        if not _isfinite(value) or value < 0:
            return "expected non-negative unix seconds"
        if value >= _MS_THRESHOLD:
            return "looks like milliseconds; expected unix seconds"
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 40:
            return "expected unix seconds or an ISO-8601 string"
        if _DECIMAL_TIME_RE.fullmatch(text):
            return parse_time(float(text))
        try:
            stamp = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return "expected unix seconds or an ISO-8601 string"
        if stamp.tzinfo is None:
            return "ISO-8601 time needs a timezone (e.g. Z or +02:00)"
        return stamp.timestamp()
    return "expected unix seconds or an ISO-8601 string"


def _parse_user(obj: JSON, errs: _Errors) -> User:
    if obj is None:
        return User()
    if not isinstance(obj, dict):
        errs.add(".user", "expected an object")
        return User()
    _unknown(obj, _USER_KEYS, ".user", errs)
    pii: dict[str, tuple[str, ...]] = {}
    for name in [n for n in PII_FIELDS if n in obj]:
        key = PII_FIELDS[name]
        raw = obj[name]
        if raw is None:
            continue
        path = f".user.{name}"
        values: list[JSON] = raw if isinstance(raw, list) and name in LIST_PII else [raw]
        if len(values) > MAX_LIST:
            errs.add(path, f"at most {MAX_LIST} values")
            continue
        kept: list[str] = []
        for i, item in enumerate(values):
            item_path = path if values is not raw else f"{path}[{i}]"
            if (
                isinstance(item, int)
                and not isinstance(item, bool)
                and name in {"phone", "zip", "external_id", "date_of_birth"}
            ):
                item = str(item)
            if not isinstance(item, str):
                hint = " or a list of strings" if name in LIST_PII else ""
                errs.add(item_path, f"expected a string{hint}")
                continue
            if len(item) > MAX_TEXT:
                errs.add(item_path, f"longer than {MAX_TEXT} characters")
                continue
            if item.strip():
                kept.append(item)
        if kept:
            pii[key] = tuple(dict.fromkeys(kept))
    click_ids: dict[str, str] = {}
    raw_ids = obj.get("click_ids")
    if raw_ids is not None:
        if not isinstance(raw_ids, dict):
            errs.add(".user.click_ids", "expected an object")
        else:
            for k, v in raw_ids.items():
                if k.lower() not in CLICK_ID_KEYS:
                    errs.add(f".user.click_ids{_key(k)}", "unknown click id")
                elif not isinstance(v, str) or not _COOKIE_SAFE_RE.match(v):
                    errs.add(f".user.click_ids{_key(k)}", "expected 1-500 URL-safe characters")
                elif k.lower() == "ga":
                    client_id = ga_client_id(v)
                    if client_id is None:
                        errs.add(
                            f".user.click_ids{_key(k)}",
                            "expected a GA client id <random>.<seconds> or a _ga cookie value",
                        )
                    else:
                        click_ids["ga"] = client_id
                else:
                    click_ids[k.lower()] = v
    fbc = _string(obj, "fbc", ".user", errs, max_len=500)
    fbp = _string(obj, "fbp", ".user", errs, max_len=200)
    for key, val in (("fbc", fbc), ("fbp", fbp)):
        if val is not None and not _FB_COOKIE_RE.fullmatch(val):
            errs.add(f".user.{key}", "expected fb.<index>.<ms>.<id> as set by the pixel")
    return User(
        pii=pii,
        ip=_ip(obj, errs),
        user_agent=_string(obj, "user_agent", ".user", errs, max_len=MAX_UA),
        visitor_id=_string(obj, "visitor_id", ".user", errs, max_len=MAX_ID),
        fbc=fbc,
        fbp=fbp,
        click_ids=click_ids,
    )


def _ip(obj: Mapping[str, JSON], errs: _Errors) -> str | None:
    value = _string(obj, "ip", ".user", errs, max_len=64)
    if value is None:
        return None
    if _IPV4_RE.match(value):
        return value
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        errs.add(".user.ip", "expected an IPv4 or IPv6 address")
        return None


def _parse_contents(raw: JSON, errs: _Errors) -> tuple[Content, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errs.add(".data.contents", "expected a list of {id, quantity, price}")
        return ()
    if len(raw) > MAX_CONTENTS:
        errs.add(".data.contents", f"at most {MAX_CONTENTS} items")
        return ()
    items: list[Content] = []
    for i, item in enumerate(raw):
        path = f".data.contents[{i}]"
        if not isinstance(item, dict):
            errs.add(path, "expected an object")
            continue
        _unknown(item, _CONTENT_KEYS, path, errs)
        cid = _string(item, "id", path, errs, max_len=MAX_ID, allow_number=True)
        if cid is None:
            if "id" not in item:
                errs.add(f"{path}.id", "required")
            continue
        items.append(
            Content(
                id=cid,
                quantity=_integer(item, "quantity", path, errs),
                price=_number(item, "price", path, errs),
            )
        )
    return tuple(items)


def _parse_custom(raw: JSON, errs: _Errors) -> dict[str, str | float | bool]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        errs.add(".data.custom", "expected an object")
        return {}
    if len(raw) > MAX_CUSTOM_KEYS:
        errs.add(".data.custom", f"at most {MAX_CUSTOM_KEYS} keys")
        return {}
    out: dict[str, str | float | bool] = {}
    for k, v in raw.items():
        path = f".data.custom{_key(k)}"
        if not _CUSTOM_KEY_RE.fullmatch(k):
            errs.add(path, "keys are 1-64 letters, digits or underscores")
        elif isinstance(v, bool):
            out[k] = v
        elif isinstance(v, int | float) and _isfinite(v):
            out[k] = float(v)
        elif isinstance(v, str) and len(v) <= MAX_TEXT and _PRINTABLE_RE.match(v):
            out[k] = v
        else:
            errs.add(path, f"expected a boolean, number or string up to {MAX_TEXT} characters")
    return out


def _parse_data(obj: JSON, errs: _Errors) -> Data:
    if obj is None:
        return Data()
    if not isinstance(obj, dict):
        errs.add(".data", "expected an object")
        return Data()
    _unknown(obj, _DATA_KEYS, ".data", errs)
    currency = _string(obj, "currency", ".data", errs, max_len=3)
    if currency is not None and not _CURRENCY_RE.match(currency):
        errs.add(".data.currency", "expected an ISO 4217 code such as EUR")
        currency = None
    return Data(
        value=_number(obj, "value", ".data", errs),
        currency=currency.upper() if currency else None,
        order_id=_string(obj, "order_id", ".data", errs, max_len=MAX_ID, allow_number=True),
        contents=_parse_contents(obj.get("contents"), errs),
        content_type=_string(obj, "content_type", ".data", errs, max_len=MAX_NAME),
        content_name=_string(obj, "content_name", ".data", errs),
        content_category=_string(obj, "content_category", ".data", errs),
        num_items=_integer(obj, "num_items", ".data", errs),
        search_string=_string(obj, "search_string", ".data", errs),
        status=_string(obj, "status", ".data", errs, max_len=MAX_NAME),
        predicted_ltv=_number(obj, "predicted_ltv", ".data", errs),
        custom=_parse_custom(obj.get("custom"), errs),
    )


def _parse_consent(obj: JSON, errs: _Errors) -> Consent | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        errs.add(".consent", "expected an object")
        return None
    _unknown(obj, _CONSENT_KEY_SET, ".consent", errs)
    values: dict[str, bool | None] = {}
    for key in CONSENT_KEYS:
        raw = obj.get(key)
        if raw is None:
            values[key] = None
        elif raw == "granted" or raw is True:  # not `in`: 1 == True and 0 == False
            values[key] = True
        elif raw == "denied" or raw is False:
            values[key] = False
        else:
            errs.add(f".consent.{key}", 'expected "granted" or "denied"')
    return Consent(**values)


def _url(obj: Mapping[str, JSON], key: str, errs: _Errors) -> str | None:
    value = _string(obj, key, "", errs, max_len=MAX_URL)
    if value is not None and not _URL_RE.match(value):
        errs.add(f".{key}", "expected an absolute http(s) URL")
        return None
    return value


def parse_event(
    obj: JSON,
    *,
    now: float,
    new_id: Callable[[], str],
    path: str = "",
    limits: ParseLimits = ParseLimits(),
    hasher: PiiHasher | None = None,
) -> Event | list[FieldError]:
    """Parse one event object; return the Event or every field error found.

    `now` is the receipt time (unix seconds) and `new_id` makes a random id when neither an
    event_id nor an order_id is present; both come from the edge, so this stays pure. With a
    `hasher`, a valid event's raw PII is handed to it once and the event comes back holding
    only what it returns (``user.pii`` empty, ``user.hashed`` set): one object built instead
    of parsing and then rebuilding the event around its hashes.
    """
    if type(obj) is dict:
        try:
            return _parse_common(obj, now, new_id, limits, hasher)
        except _Unusual:
            pass  # something is off or unusual: the precise parser decides and explains
    parsed = _parse_precise(obj, now=now, new_id=new_id, path=path, limits=limits)
    if hasher is None or isinstance(parsed, list):
        return parsed
    return _hash_user(parsed, hasher)


PiiHasher = Callable[[Mapping[str, tuple[str, ...]]], Mapping[str, Mapping[str, tuple[str, ...]]]]
"""Raw PII by identifier key → hashed identifiers by rule set (see `core.identity`)."""


def _hash_user(event: Event, hasher: PiiHasher) -> Event:
    """Return the parsed event with its PII replaced by what `hasher` makes of it."""
    u = event.user
    if not u.pii:
        return event
    user = _new_user({}, hasher(u.pii), u.ip, u.user_agent, u.visitor_id, u.fbc, u.fbp, u.click_ids)
    values: list[Any] = list(_event_values(event))
    values[_USER_AT] = user
    return _new_event(*values)


def _parse_precise(
    obj: JSON, *, now: float, new_id: Callable[[], str], path: str, limits: ParseLimits
) -> Event | list[FieldError]:
    """Parse one event object field by field, collecting every error with its path."""
    errs = _Errors(path)
    if not isinstance(obj, dict):
        errs.add("", "expected an object")
        return errs.items
    _unknown(obj, _EVENT_KEYS, "", errs)
    name = obj.get("event")
    if name is None:
        errs.add(".event", "required")
    elif not isinstance(name, str) or not _NAME_RE.match(name):
        errs.add(".event", "expected a name of 1-100 letters, digits, '_', '-', '.', ':' or spaces")
        name = None
    event_id = _string(obj, "event_id", "", errs, max_len=MAX_ID, allow_number=True)
    url = _url(obj, "url", errs)
    referrer = _url(obj, "referrer", errs)
    source_raw = obj.get("source")
    source: Source | None
    if source_raw is None:
        source = Source.WEBSITE if url else Source.OTHER
    else:
        try:
            source = Source(source_raw)
        except ValueError:
            errs.add(".source", "expected one of " + ", ".join(s.value for s in Source))
            source = None
    when = now
    if obj.get("time") is not None:
        parsed = parse_time(obj["time"])
        if isinstance(parsed, str):
            errs.add(".time", parsed)
        else:
            max_age = (
                limits.max_age_offline_seconds
                if source is Source.PHYSICAL_STORE
                else limits.max_age_seconds
            )
            if parsed > now + FUTURE_SKEW:
                errs.add(".time", "is in the future")
            elif parsed < now - max_age:
                errs.add(".time", f"is older than {max_age / 86400:g} days")
            else:
                when = min(parsed, now)
    user = _parse_user(obj.get("user"), errs)
    data = _parse_data(obj.get("data"), errs)
    consent = _parse_consent(obj.get("consent"), errs)
    test_code = _string(obj, "test_code", "", errs, max_len=MAX_NAME)
    if source is Source.WEBSITE and url is None and "url" not in obj:
        errs.add(".url", "required when source is website")
    if name in VALUE_EVENTS and not errs.items:
        if data.value is None:
            errs.add(".data.value", f"required for {name}")
        if data.currency is None:
            errs.add(".data.currency", f"required for {name}")
    if errs.items or name is None or source is None:
        return errs.items
    if event_id is None:
        event_id = derive_event_id(data.order_id) if data.order_id else new_id()
    return Event(
        event=name,
        event_id=event_id,
        time=int(when),
        source=source,
        url=url,
        referrer=referrer,
        user=user,
        data=data,
        consent=consent,
        test_code=test_code,
    )


# -- Fast construction --------------------------------------------------------------------------
# A frozen dataclass's __init__ stores every field with `object.__setattr__` (its own
# __setattr__ refuses), a generic attribute lookup per field. Each event on the request path
# builds six of these objects (Content, Data, User, Event when parsed; User, Event when hashed),
# which made construction about a tenth of the event's CPU cost. The builders below take the
# same arguments as the classes (same order, names, defaults and default factories) and store
# each field through its slot descriptor instead, about twice as fast; what they return is an
# ordinary instance of the class, indistinguishable from one made by calling it.


def _slot_builder(cls: Callable[_P, _T]) -> Callable[_P, _T]:
    """Return a faster equivalent of a frozen slots dataclass's constructor.

    Generated from the class's own fields, as dataclasses generates __init__; only for classes
    without __post_init__, init=False or keyword-only fields (none here).
    """
    if not (isinstance(cls, type) and is_dataclass(cls) and "__slots__" in vars(cls)):
        raise TypeError(f"{cls!r} is not a slots dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has __post_init__")
    # The fields are stored on an instance of a plain twin class with the very same slots
    # (an ordinary, specialised attribute store each), then the instance becomes a `cls`
    # (``__class__`` assignment, allowed between identical layouts): about 40% cheaper than a
    # descriptor call per field. If this Python refuses the assignment, the builder stores
    # through the frozen class's own slot descriptors instead.
    twin = type(f"_{cls.__name__}Twin", (), {"__slots__": vars(cls)["__slots__"]})
    env: dict[str, Any] = {
        "_new": object.__new__,
        "_cls": cls,
        "_twin": twin,
        "_MISSING": MISSING,
    }
    params: list[str] = []
    defaults: list[str] = []
    stores: list[str] = []
    sets: list[str] = []
    for f in fields(cls):
        if not f.init or f.kw_only:
            raise TypeError(f"{cls.__name__}.{f.name} is init=False or keyword-only")
        env[f"_set_{f.name}"] = vars(cls)[f.name].__set__  # the slot's member descriptor
        if f.default is not MISSING:
            env[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        elif f.default_factory is not MISSING:
            env[f"_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_MISSING")
            defaults.append(f"    if {f.name} is _MISSING:\n        {f.name} = _factory_{f.name}()")
        else:
            params.append(f.name)
        stores.append(f"    self.{f.name} = {f.name}")
        sets.append(f"    _set_{f.name}(self, {f.name})")
    head = f"def build({', '.join(params)}):"
    swap = [head, *defaults, "    self = _new(_twin)", *stores, "    self.__class__ = _cls"]
    plain = [head, *defaults, "    self = _new(_cls)", *sets]
    for lines in (swap, plain):
        namespace = dict(env)
        exec("\n".join([*lines, "    return self"]), namespace)  # noqa: S102 - field names only
        builder: Callable[_P, _T] = namespace["build"]
        probe: Callable[..., object] = namespace["build"]
        try:
            sample = probe(*[_SAMPLE] * len(_required(cls)))
        except TypeError:
            continue  # this Python refuses the __class__ assignment: the descriptor builder
        if type(sample) is cls:
            return builder
    raise TypeError(f"cannot build {cls.__name__} quickly")


_SAMPLE: Final = object()


def _required(cls: type) -> list[str]:
    return [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]


_new_content: Final = _slot_builder(Content)
_new_data: Final = _slot_builder(Data)
_new_user: Final = _slot_builder(User)
_new_event: Final = _slot_builder(Event)
_EVENT_FIELDS: Final = tuple(f.name for f in fields(Event))
_event_values: Final = attrgetter(*_EVENT_FIELDS)
"""Every field of an Event in declaration (= constructor) order, read in one call."""
_USER_AT: Final = _EVENT_FIELDS.index("user")


_CHANNEL_AT: Final = _EVENT_FIELDS.index("channel")
_LDU_AT: Final = _EVENT_FIELDS.index("ldu")


def with_channel(event: Event, channel: str, *, ldu: bool | None = None) -> Event:
    """Return ``replace(event, channel=channel)`` (and ``ldu=ldu`` unless None), for the
    request path: one fast build instead of `replace`'s generic field walk."""
    values: list[Any] = list(_event_values(event))
    values[_CHANNEL_AT] = channel
    if ldu is not None:
        values[_LDU_AT] = ldu
    return _new_event(*values)


def with_hashed(event: Event, hashed: Mapping[str, Mapping[str, tuple[str, ...]]]) -> Event:
    """Return the event with its raw PII dropped and `hashed` as its hashed identifiers.

    Same as ``replace(event, user=User(hashed=hashed, ip=…, …, click_ids=…))`` (every other
    field of the event and the user's plain browser ids carried over), for the request path.
    """
    u = event.user
    user = _new_user({}, hashed, u.ip, u.user_agent, u.visitor_id, u.fbc, u.fbp, u.click_ids)
    values: list[Any] = list(_event_values(event))
    values[_USER_AT] = user
    return _new_event(*values)


# -- Fast path ----------------------------------------------------------------------------------
# Nearly every event the gateway receives is valid and uses the plain JSON types, and parsing
# runs once per event on the request path. `_parse_common` accepts exactly such events with
# few calls and no error bookkeeping; as soon as anything is unusual (an unknown key, a number
# sent as a string, a list of e-mails, a value that fails a check, …) it raises `_Unusual` and
# `parse_event` runs `_parse_precise`, which accepts the same valid events and reports every
# problem with its field path. The fast path thus decides nothing on its own: for any input it
# returns what `_parse_precise` would return, or defers to it. Each check below is the
# precise path's check (same patterns, same bounds), narrowed to the common types.


class _Unusual(Exception):
    """Raised by the fast path when the precise parser must decide."""


_SOURCES: Final[Mapping[str, Source]] = {s.value: s for s in Source}
_WEBSITE: Final = Source.WEBSITE  # enum attribute look-ups are slow; these are module globals
_OTHER: Final = Source.OTHER
_PHYSICAL_STORE: Final = Source.PHYSICAL_STORE
_PII_ITEMS: Final = tuple(PII_FIELDS.items())
# What most user and data objects hold. When nothing else is there, the other fields need no
# look-up each: they are absent, which the precise path turns into None (or nothing).
_USER_CORE_KEYS: Final = frozenset(
    {"email", "phone", "ip", "user_agent", "visitor_id", "fbc", "fbp", "click_ids"}
)
_PII_CORE_ITEMS: Final = tuple((n, k) for n, k in _PII_ITEMS if n in _USER_CORE_KEYS)
_DATA_CORE_KEYS: Final = frozenset({"value", "currency", "order_id", "contents"})


def _text(value: JSON, max_len: int) -> str | None:
    """`_string` for None or a printable str within max_len; anything else is unusual."""
    if value is None:
        return None
    if type(value) is str and len(value) <= max_len and value.isprintable():
        return value.strip() or None
    raise _Unusual


def _matching(value: JSON, max_len: int, check: Callable[[str], object]) -> str | None:
    """`_text` whose stripped text must also pass `check` (a pattern's match or fullmatch)."""
    text = _text(value, max_len)
    if text is not None and not check(text):
        raise _Unusual
    return text


def _ip_common(value: JSON) -> str | None:
    """`_text` for an IP address: IPv4 as sent, IPv6 in its canonical spelling."""
    ip = _text(value, 64)
    if ip is not None and not _IPV4_RE.match(ip):
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise _Unusual from None
    return ip


def _when_common(raw: JSON, now: float, source: Source, limits: ParseLimits) -> float:
    """The event time: `raw` checked against the site's window (now when absent)."""
    if raw is None:
        return now
    parsed = parse_time(raw)
    if isinstance(parsed, str):
        raise _Unusual
    max_age = (
        limits.max_age_offline_seconds if source is _PHYSICAL_STORE else limits.max_age_seconds
    )
    if not now - max_age <= parsed <= now + FUTURE_SKEW:
        raise _Unusual
    return min(parsed, now)


def _finite(value: JSON) -> float | None:
    """`_number` (no minimum) for None or a float/int within ±1e12; NaN fails the comparison."""
    if value is None:
        return None
    if (type(value) is float or type(value) is int) and -1e12 <= value <= 1e12:
        return float(value)
    raise _Unusual


def _count(value: JSON) -> int | None:
    """`_integer` for None or an int in 0..1000000."""
    if value is None or (type(value) is int and 0 <= value <= 1_000_000):
        return value
    raise _Unusual


def _parse_common(
    obj: dict[str, JSON],
    now: float,
    new_id: Callable[[], str],
    limits: ParseLimits,
    hasher: PiiHasher | None = None,
) -> Event:
    """Return the Event `_parse_precise` would return for a common valid event, else raise."""
    if not obj.keys() <= _EVENT_KEYS:
        raise _Unusual
    name = obj.get("event")
    if type(name) is not str or not _NAME_RE.match(name):
        raise _Unusual
    event_id = _text(obj.get("event_id"), MAX_ID)
    url = _matching(obj.get("url"), MAX_URL, _URL_RE.match)
    referrer = _matching(obj.get("referrer"), MAX_URL, _URL_RE.match)
    source_raw = obj.get("source")
    if source_raw is None:
        source = _WEBSITE if url else _OTHER
    elif type(source_raw) is str and source_raw in _SOURCES:
        source = _SOURCES[source_raw]
    else:
        raise _Unusual
    when = _when_common(obj.get("time"), now, source, limits)
    raw_user = obj.get("user")
    user = User() if raw_user is None else _user_common(raw_user)
    raw_data = obj.get("data")
    data = Data() if raw_data is None else _data_common(raw_data)
    consent = None
    if obj.get("consent") is not None:  # rare enough to reuse the precise parser as is
        errs = _Errors("")
        consent = _parse_consent(obj["consent"], errs)
        if errs.items:
            raise _Unusual
    test_code = obj.get("test_code")
    if test_code is not None:  # `_text`, inlined
        if type(test_code) is not str or len(test_code) > MAX_NAME or not test_code.isprintable():
            raise _Unusual
        test_code = test_code.strip() or None
    if source is _WEBSITE and url is None and "url" not in obj:
        raise _Unusual
    if name in VALUE_EVENTS and (data.value is None or data.currency is None):
        raise _Unusual
    if event_id is None:
        event_id = derive_event_id(data.order_id) if data.order_id else new_id()
    if hasher is not None and user.pii:  # last: nothing below can send us to the precise path
        u = user
        user = _new_user(
            {}, hasher(u.pii), u.ip, u.user_agent, u.visitor_id, u.fbc, u.fbp, u.click_ids
        )
    return _new_event(
        name, event_id, int(when), source, url, referrer, user, data, consent, test_code
    )


def _user_common(raw: JSON) -> User:
    if type(raw) is not dict or not raw.keys() <= _USER_KEYS:
        raise _Unusual
    pii: dict[str, tuple[str, ...]] = {}
    pii_items = _PII_CORE_ITEMS if raw.keys() <= _USER_CORE_KEYS else _PII_ITEMS
    for name, key in pii_items:  # in PII_FIELDS order, as the precise path keeps them
        value = raw.get(name)
        if value is None:
            continue
        if type(value) is not str or len(value) > MAX_TEXT:
            raise _Unusual  # lists, numbers, over-long values
        if value.strip():
            pii[key] = (value,)
    # Absent fields skip their helper's call: a browser's user often has only ip and agent.
    click_ids = _click_ids_common(raw["click_ids"]) if "click_ids" in raw else {}
    fbc = _matching(raw["fbc"], 500, _FB_COOKIE_RE.fullmatch) if "fbc" in raw else None
    fbp = _matching(raw["fbp"], 200, _FB_COOKIE_RE.fullmatch) if "fbp" in raw else None
    ip = _ip_common(raw["ip"]) if "ip" in raw else None
    user_agent = _text(raw["user_agent"], MAX_UA) if "user_agent" in raw else None
    visitor_id = _text(raw["visitor_id"], MAX_ID) if "visitor_id" in raw else None
    return _new_user(pii, {}, ip, user_agent, visitor_id, fbc, fbp, click_ids)


def _click_ids_common(raw: JSON) -> dict[str, str]:
    """Known click ids (keys lowercased) with cookie-safe values."""
    click_ids: dict[str, str] = {}
    if raw is None:
        return click_ids
    if type(raw) is not dict:
        raise _Unusual
    for k, v in raw.items():
        if type(k) is not str or type(v) is not str:
            raise _Unusual
        key = k.lower()
        if key not in CLICK_ID_KEYS or not _COOKIE_SAFE_RE.match(v):
            raise _Unusual
        if key == "ga":
            client_id = ga_client_id(v)
            if client_id is None:
                raise _Unusual  # the precise path names the field and the reason
            v = client_id
        click_ids[key] = v
    return click_ids


def _currency_common(value: JSON) -> str | None:
    """A three-letter currency code, uppercased."""
    currency = _text(value, 3)
    if currency is None:
        return None
    if not _CURRENCY_RE.match(currency):
        raise _Unusual
    return currency.upper()


def _data_common(raw: JSON) -> Data:
    if type(raw) is not dict or not raw.keys() <= _DATA_KEYS:
        raise _Unusual
    if not raw:
        return _new_data()  # a page view's empty data
    currency = _currency_common(raw.get("currency"))
    contents: tuple[Content, ...] = ()
    raw_contents = raw.get("contents")
    if raw_contents is not None:
        if type(raw_contents) is not list or len(raw_contents) > MAX_CONTENTS:
            raise _Unusual
        contents = tuple([_content_common(item) for item in raw_contents])
    value = _finite(raw.get("value"))
    order_id = _text(raw.get("order_id"), MAX_ID)
    if raw.keys() <= _DATA_CORE_KEYS:
        return _new_data(value, currency, order_id, contents)
    return _new_data(
        value,
        currency,
        order_id,
        contents,
        _text(raw.get("content_type"), MAX_NAME),
        _text(raw.get("content_name"), MAX_TEXT),
        _text(raw.get("content_category"), MAX_TEXT),
        _count(raw.get("num_items")),
        _text(raw.get("search_string"), MAX_TEXT),
        _text(raw.get("status"), MAX_NAME),
        _finite(raw.get("predicted_ltv")),
        _custom_common(raw.get("custom")),
    )


def _custom_common(raw: JSON) -> dict[str, str | float | bool]:
    custom: dict[str, str | float | bool] = {}
    if raw is None:
        return custom
    if type(raw) is not dict or len(raw) > MAX_CUSTOM_KEYS:
        raise _Unusual
    for k, v in raw.items():
        if type(k) is not str or not _CUSTOM_KEY_RE.fullmatch(k):
            raise _Unusual
        kind = type(v)
        if kind is bool:
            custom[k] = v
        elif (kind is float or kind is int) and _isfinite(v):
            custom[k] = float(v)
        elif kind is str and len(v) <= MAX_TEXT and v.isprintable():
            custom[k] = v
        else:
            raise _Unusual
    return custom


def _content_common(item: JSON) -> Content:
    if type(item) is not dict or not item.keys() <= _CONTENT_KEYS:
        raise _Unusual
    return _content_of(item.get("id"), item.get("quantity"), item.get("price"))


def _content_of(cid: JSON, quantity: JSON, price: JSON) -> Content:
    """A line item from its id, quantity and price (`_text`, `_count`, `_finite` inlined)."""
    if type(cid) is not str or len(cid) > MAX_ID or not cid.isprintable():
        raise _Unusual  # missing ids are errors
    cid = cid.strip()
    if not cid:
        raise _Unusual  # blank ones are skipped by the precise path
    if quantity is not None and not (type(quantity) is int and 0 <= quantity <= 1_000_000):
        raise _Unusual
    if price is not None:
        if (type(price) is float or type(price) is int) and -1e12 <= price <= 1e12:
            price = float(price)
        else:
            raise _Unusual
    return _new_content(cid, quantity, price)


def with_user(event: Event, **changes: Any) -> Event:
    """Return the event with its user fields replaced."""
    return replace(event, user=replace(event.user, **changes))
