"""Typed decoding of `POST /v1/events` documents: the request path's fast lane for batches.

`gateway.core.event.parse_event` takes a decoded JSON object; for a batch that means building
a dict per event and line item, then checking each value's type in Python. Here msgspec
decodes the whole ``{"events": [...]}`` body straight into typed structs, checking the JSON
types and refusing unknown keys in C, and `events_from` turns the structs into Events with the
few checks types cannot express (patterns, bounds, printable text).

Like `event._parse_common`, this decides nothing on its own: both functions return None as
soon as anything is unusual (malformed JSON, a type the common path does not take, an unknown
key, a value that fails a check, explicit consent), and the caller then runs the general path,
`loads` + `parse_event` per event, which reports every problem with its field path. For the
documents they accept, the Events are exactly those `parse_event` returns (a differential test
holds the two paths to that).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import Final

import msgspec

from gateway.core.event import (
    _COOKIE_SAFE_RE,
    _CURRENCY_RE,
    _CUSTOM_KEY_RE,
    _FB_COOKIE_RE,
    _IPV4_RE,
    _NAME_RE,
    _OTHER,
    _PHYSICAL_STORE,
    _SOURCES,
    _URL_RE,
    _WEBSITE,
    CLICK_ID_KEYS,
    FUTURE_SKEW,
    MAX_CONTENTS,
    MAX_CUSTOM_KEYS,
    MAX_ID,
    MAX_NAME,
    MAX_TEXT,
    MAX_UA,
    MAX_URL,
    PII_FIELDS,
    VALUE_EVENTS,
    Content,
    Data,
    Event,
    ParseLimits,
    User,
    _new_content,
    _new_data,
    _new_event,
    _new_user,
    derive_event_id,
    parse_time,
)
from gateway.core.identity import PiiHasher

# -- the accepted shape --------------------------------------------------------------------------
# Field names are the JSON keys (gateway.core.event's _EVENT_KEYS, _USER_KEYS, _DATA_KEYS,
# _CONTENT_KEYS); a key outside them fails the decode. Every field the common path reads as
# "absent or null" defaults to None. PII that may come as a list (email, phone, external_id)
# is typed as one string: a list sends the document to the general path.


class _Content(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    quantity: int | None = None
    price: float | None = None


class _User(msgspec.Struct, forbid_unknown_fields=True):
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    city: str | None = None
    state: str | None = None
    zip: str | None = None
    country: str | None = None
    date_of_birth: str | None = None
    gender: str | None = None
    external_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    visitor_id: str | None = None
    fbc: str | None = None
    fbp: str | None = None
    click_ids: dict[str, str] | None = None


class _Data(msgspec.Struct, forbid_unknown_fields=True):
    value: float | None = None
    currency: str | None = None
    order_id: str | None = None
    contents: list[_Content] | None = None
    content_type: str | None = None
    content_name: str | None = None
    content_category: str | None = None
    num_items: int | None = None
    search_string: str | None = None
    status: str | None = None
    predicted_ltv: float | None = None
    custom: dict[str, str | int | float | bool] | None = None


class WireEvent(msgspec.Struct, forbid_unknown_fields=True):
    """One event of a document, as typed JSON (not yet checked beyond its types)."""

    event: str
    event_id: str | None = None
    time: int | float | str | None = None
    source: str | None = None
    url: str | None = None
    referrer: str | None = None
    user: _User | None = None
    data: _Data | None = None
    consent: dict[str, bool | None] | None = None
    test_code: str | None = None


class _Document(msgspec.Struct, forbid_unknown_fields=True):
    events: list[WireEvent]


_decoder: Final = msgspec.json.Decoder(_Document)

# Most users bring an e-mail and a phone only, most data a value, currency, order and items:
# each group of the other fields is read in one call and compared with all-None at once.
_RARE_PII: Final = tuple(name for name in PII_FIELDS if name not in ("email", "phone"))
_RARE_PII_KEYS: Final = tuple(PII_FIELDS[name] for name in _RARE_PII)
_rare_pii: Final = attrgetter(*_RARE_PII)
_NO_RARE_PII: Final = (None,) * len(_RARE_PII)
_RARE_DATA: Final = (
    "content_type",
    "content_name",
    "content_category",
    "num_items",
    "search_string",
    "status",
    "predicted_ltv",
    "custom",
)
_rare_data: Final = attrgetter(*_RARE_DATA)
_NO_RARE_DATA: Final = (None,) * len(_RARE_DATA)


_BIG: Final = 2**63
"""msgspec keeps integers of any size; orjson (the general path) reads those beyond 64 bits as
floats. Such values go to the general path, which also never has to compare a huge int."""


class _Unusual(Exception):
    """Raised inside `events_from` when the general path must decide."""


def decode_document(raw: bytes) -> list[WireEvent] | None:
    """Return the events of a ``{"events": [...]}`` body, or None if anything is unusual."""
    try:
        return _decoder.decode(raw).events
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None


def events_from(
    items: Sequence[WireEvent],
    *,
    now: float,
    new_id: Callable[[], str],
    limits: ParseLimits,
    hasher: PiiHasher,
    prefix: str = "events",
) -> list[Event] | None:
    """Return the Events of decoded items (PII hashed by `hasher`), or None if any is unusual.

    The hasher's warnings name their values under ``<prefix>[i]``. After None, the hasher may
    hold warnings of items that were hashed before the unusual one: use a fresh one.
    """
    try:
        out: list[Event] = []
        for index, item in enumerate(items):
            out.append(_event(item, index, now, new_id, limits, hasher, prefix))
        return out
    except _Unusual:
        return None


def _text(value: str | None, max_len: int) -> str | None:
    """`event._text` for a value already known to be a str or None."""
    if value is None:
        return None
    if len(value) <= max_len and value.isprintable():
        return value.strip() or None
    raise _Unusual


def _event(
    item: WireEvent,
    index: int,
    now: float,
    new_id: Callable[[], str],
    limits: ParseLimits,
    hasher: PiiHasher,
    prefix: str,
) -> Event:
    name = item.event
    if not _NAME_RE.match(name) or item.consent is not None:
        raise _Unusual  # explicit consent is rare: the general path parses it
    event_id = item.event_id
    if event_id is not None:  # `_text`, inlined (as in every hot spot below)
        if len(event_id) > MAX_ID or not event_id.isprintable():
            raise _Unusual
        event_id = event_id.strip() or None
    url = item.url
    if url is not None:
        if len(url) > MAX_URL or not url.isprintable():
            raise _Unusual
        url = url.strip() or None
        if url is not None and not _URL_RE.match(url):
            raise _Unusual
    referrer = item.referrer
    if referrer is not None:
        if len(referrer) > MAX_URL or not referrer.isprintable():
            raise _Unusual
        referrer = referrer.strip() or None
        if referrer is not None and not _URL_RE.match(referrer):
            raise _Unusual
    source_raw = item.source
    if source_raw is None:
        source = _WEBSITE if url else _OTHER
    else:
        found = _SOURCES.get(source_raw)
        if found is None:
            raise _Unusual
        source = found
    if source is _WEBSITE and url is None:
        raise _Unusual  # whether the url was missing or blank, the general path explains
    when = now
    raw_time = item.time
    if raw_time is not None:
        if type(raw_time) is int and not 0 <= raw_time < _BIG:
            raise _Unusual  # beyond any float-safe range: the general path explains
        parsed = parse_time(raw_time)
        if isinstance(parsed, str):
            raise _Unusual
        max_age = (
            limits.max_age_offline_seconds if source is _PHYSICAL_STORE else limits.max_age_seconds
        )
        if not now - max_age <= parsed <= now + FUTURE_SKEW:
            raise _Unusual
        when = min(parsed, now)
    raw_data = item.data
    data = _new_data() if raw_data is None else _data(raw_data)
    if name in VALUE_EVENTS and (data.value is None or data.currency is None):
        raise _Unusual
    test_code = _text(item.test_code, MAX_NAME)
    if event_id is None:
        event_id = derive_event_id(data.order_id) if data.order_id else new_id()
    raw_user = item.user
    user = _new_user() if raw_user is None else _user(raw_user, index, hasher, prefix)
    return _new_event(name, event_id, int(when), source, url, referrer, user, data, None, test_code)


def _user(raw: _User, index: int, hasher: PiiHasher, prefix: str) -> User:
    pii: dict[str, tuple[str, ...]] = {}
    email, phone = raw.email, raw.phone
    if email is not None:
        if len(email) > MAX_TEXT:
            raise _Unusual
        if email.strip():
            pii["em"] = (email,)
    if phone is not None:
        if len(phone) > MAX_TEXT:
            raise _Unusual
        if phone.strip():
            pii["ph"] = (phone,)
    if _rare_pii(raw) != _NO_RARE_PII:  # names, address, …: in PII_FIELDS order after em, ph
        for key, value in zip(_RARE_PII_KEYS, _rare_pii(raw), strict=True):
            if value is None:
                continue
            if len(value) > MAX_TEXT:
                raise _Unusual
            if value.strip():
                pii[key] = (value,)
    click_ids: dict[str, str] = {}
    raw_ids = raw.click_ids
    if raw_ids is not None:
        for k, v in raw_ids.items():
            key = k.lower()
            if key not in CLICK_ID_KEYS or not _COOKIE_SAFE_RE.match(v):
                raise _Unusual
            click_ids[key] = v
    fbc = raw.fbc
    if fbc is not None:
        if len(fbc) > 500 or not fbc.isprintable():
            raise _Unusual
        fbc = fbc.strip() or None
        if fbc is not None and not _FB_COOKIE_RE.fullmatch(fbc):
            raise _Unusual
    fbp = raw.fbp
    if fbp is not None:
        if len(fbp) > 200 or not fbp.isprintable():
            raise _Unusual
        fbp = fbp.strip() or None
        if fbp is not None and not _FB_COOKIE_RE.fullmatch(fbp):
            raise _Unusual
    ip = raw.ip
    if ip is not None:
        if len(ip) > 64 or not ip.isprintable():
            raise _Unusual
        ip = ip.strip() or None
        if ip is not None and not _IPV4_RE.match(ip):
            try:
                ip = str(ipaddress.ip_address(ip))  # IPv6 in its canonical spelling
            except ValueError:
                raise _Unusual from None
    user_agent = _text(raw.user_agent, MAX_UA)
    visitor_id = _text(raw.visitor_id, MAX_ID)
    # Last: nothing after the hasher may send the document to the general path (the hasher
    # records warnings for dropped values).
    hashed: Mapping[str, Mapping[str, tuple[str, ...]]] = {}
    if pii:
        hasher.path = f"{prefix}[{index}]"
        hashed = hasher(pii)
    return _new_user({}, hashed, ip, user_agent, visitor_id, fbc, fbp, click_ids)


def _data(raw: _Data) -> Data:
    currency = raw.currency
    if currency is not None:
        if len(currency) > 3 or not currency.isprintable():
            raise _Unusual
        currency = currency.strip() or None
        if currency is not None:
            if not _CURRENCY_RE.match(currency):
                raise _Unusual
            currency = currency.upper()
    contents: tuple[Content, ...] = ()
    raw_contents = raw.contents
    if raw_contents is not None:
        if len(raw_contents) > MAX_CONTENTS:
            raise _Unusual
        contents = tuple([_content(c) for c in raw_contents])
    value = _finite(raw.value)
    order_id = raw.order_id
    if order_id is not None:
        if len(order_id) > MAX_ID or not order_id.isprintable():
            raise _Unusual
        order_id = order_id.strip() or None
    num_items = raw.num_items
    if num_items is not None and not 0 <= num_items <= 1_000_000:
        raise _Unusual
    if _rare_data(raw) == _NO_RARE_DATA:  # the usual data: value, currency, order, contents
        return _new_data(value, currency, order_id, contents)
    return _new_data(
        value,
        currency,
        order_id,
        contents,
        _text(raw.content_type, MAX_NAME),
        _text(raw.content_name, MAX_TEXT),
        _text(raw.content_category, MAX_TEXT),
        num_items,
        _text(raw.search_string, MAX_TEXT),
        _text(raw.status, MAX_NAME),
        _finite(raw.predicted_ltv),
        _custom(raw.custom) if raw.custom is not None else {},
    )


def _finite(value: float | None) -> float | None:
    if value is None or -1e12 <= value <= 1e12:  # NaN fails the comparison
        return value
    raise _Unusual


def _content(item: _Content) -> Content:
    cid = item.id
    if len(cid) > MAX_ID or not cid.isprintable():
        raise _Unusual
    cid = cid.strip()
    if not cid:
        raise _Unusual
    quantity = item.quantity
    if quantity is not None and not 0 <= quantity <= 1_000_000:
        raise _Unusual
    price = item.price
    if price is not None and not -1e12 <= price <= 1e12:
        raise _Unusual
    return _new_content(cid, quantity, price)


def _custom(raw: dict[str, str | int | float | bool]) -> dict[str, str | float | bool]:
    if len(raw) > MAX_CUSTOM_KEYS:
        raise _Unusual
    custom: dict[str, str | float | bool] = {}
    for k, v in raw.items():
        if not _CUSTOM_KEY_RE.fullmatch(k):
            raise _Unusual
        if isinstance(v, bool):
            custom[k] = v
        elif isinstance(v, str):
            if len(v) > MAX_TEXT or not v.isprintable():
                raise _Unusual
            custom[k] = v
        elif isinstance(v, int) and not -_BIG < v < _BIG:
            raise _Unusual  # the general path sees such integers as floats (jsoncodec)
        elif math.isfinite(v):
            custom[k] = float(v)
        else:
            raise _Unusual
    return custom
