"""The fast path of event parsing: common valid events accepted with few calls; anything
unusual goes to the precise parser (see the comment below)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Final

from gateway.core.event import (
    CLICK_ID_KEYS,
    PII_FIELDS,
    VALUE_EVENTS,
    Content,
    Data,
    Event,
    PiiHasher,
    Source,
    User,
    derive_event_id,
    ga_client_id,
)
from gateway.core.eventbuild import _new_content, _new_data, _new_event, _new_user
from gateway.core.eventprecise import _parse_consent
from gateway.core.eventschema import (
    _CONTENT_KEYS,
    _COOKIE_SAFE_RE,
    _CURRENCY_RE,
    _CUSTOM_KEY_RE,
    _DATA_KEYS,
    _EVENT_KEYS,
    _FB_COOKIE_RE,
    _IPV4_RE,
    _NAME_RE,
    _URL_RE,
    _USER_KEYS,
    FUTURE_SKEW,
    JSON,
    MAX_CONTENTS,
    MAX_CUSTOM_KEYS,
    MAX_ID,
    MAX_NAME,
    MAX_TEXT,
    MAX_UA,
    MAX_URL,
    ParseLimits,
    _isfinite,
    parse_time,
)
from gateway.core.fielderrors import _Errors

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
