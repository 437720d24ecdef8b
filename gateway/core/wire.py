"""Typed decoding of `POST /v1/events` documents: the request path's fast lane for batches.

`gateway.core.eventparse.parse_event` takes a decoded JSON object; for a batch that means
building a dict per event and line item, then checking each value's type in Python. Here msgspec
decodes the whole ``{"events": [...]}`` body straight into typed structs, checking the JSON
types and refusing unknown keys in C, and `events_from` turns the structs into Events with the
few checks types cannot express (patterns, bounds, printable text): the very helpers of
`eventfast._parse_common`, so the two fast paths cannot drift apart.

Like `eventfast._parse_common`, this decides nothing on its own: both functions return None as
soon as anything is unusual (malformed JSON, a type the common path does not take, an unknown
key, a value that fails a check, explicit consent), and the caller then runs the general path,
`loads` + `parse_event` per event, which reports every problem with its field path. For the
documents they accept, the Events are exactly those `parse_event` returns (a differential test
holds the two paths to that).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import Any, Final, NamedTuple, cast

import msgspec

from gateway.core.event import PII_FIELDS, VALUE_EVENTS, Content, Event, Source, derive_event_id
from gateway.core.eventbuild import _new_content, _new_data, _new_event, _new_user
from gateway.core.eventfast import (
    _DATA_CORE_KEYS,
    _OTHER,
    _SOURCES,
    _WEBSITE,
    _click_ids_common,
    _content_of,
    _count,
    _currency_common,
    _custom_common,
    _finite,
    _ip_common,
    _matching,
    _text,
    _Unusual,
    _when_common,
)
from gateway.core.eventschema import (
    _DATA_KEYS,
    _FB_COOKIE_RE,
    _IPV4_RE,
    _NAME_RE,
    _URL_RE,
    JSON,
    MAX_CONTENTS,
    MAX_ID,
    MAX_NAME,
    MAX_TEXT,
    MAX_UA,
    MAX_URL,
    ParseLimits,
)
from gateway.core.identity import PiiHasher
from gateway.core.record import (
    Stored,
    StoredContent,
    StoredData,
    StoredUser,
    stored_hashes,
)

# -- the accepted shape --------------------------------------------------------------------------
# Field names are the JSON keys (gateway.core.eventschema's _EVENT_KEYS, _USER_KEYS, _DATA_KEYS,
# _CONTENT_KEYS); a key outside them fails the decode. Every field the common path reads as
# "absent or null" defaults to None. PII that may come as a list (email, phone, external_id)
# is typed as one string: a list sends the document to the general path.
# gc=False: decoded JSON holds no reference cycles, so the structs need no GC tracking (cheaper
# to make and free, and a 100-event body no longer brings the next collection ~1,500 objects
# closer).


class _Content(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    id: str
    quantity: int | None = None
    price: float | None = None


class _User(msgspec.Struct, forbid_unknown_fields=True, gc=False):
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


class _Data(msgspec.Struct, forbid_unknown_fields=True, gc=False):
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


class WireEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
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


class _Document(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    events: list[WireEvent]


_decoder: Final = msgspec.json.Decoder(_Document)

# Most users bring an e-mail and a phone only, most data a value, currency, order and items:
# each group of the other fields is read in one call and compared with all-None at once.
_RARE_PII: Final = tuple(name for name in PII_FIELDS if name not in ("email", "phone"))
_RARE_PII_KEYS: Final = tuple(PII_FIELDS[name] for name in _RARE_PII)
_rare_pii: Final = attrgetter(*_RARE_PII)
_NO_RARE_PII: Final = (None,) * len(_RARE_PII)
_RARE_DATA: Final = tuple(sorted(_DATA_KEYS - _DATA_CORE_KEYS))
_rare_data: Final = attrgetter(*_RARE_DATA)
_NO_RARE_DATA: Final = (None,) * len(_RARE_DATA)


def decode_document(raw: bytes) -> list[WireEvent] | None:
    """Return the events of a ``{"events": [...]}`` body, or None if anything is unusual."""
    try:
        return _decoder.decode(raw).events
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None


def is_clean(raw: bytes) -> bool:
    """Tell whether every string a JSON body decodes to is printable (``s.isprintable()``).

    True for a body that is ASCII without backslashes (so no escapes: each string is its raw
    bytes) and without DEL (0x7F, the one ASCII byte JSON allows raw in a string that is not
    printable; bytes below 0x20 cannot appear raw in a JSON string at all): every string is
    then made of 0x20-0x7E. Three fast scans of the body instead of one printable check per
    value; most machine-written JSON qualifies.
    """
    return raw.isascii() and b"\\" not in raw and b"\x7f" not in raw


def events_from(
    items: Sequence[WireEvent],
    *,
    now: float,
    new_id: Callable[[], str],
    limits: ParseLimits,
    hasher: PiiHasher,
    prefix: str = "events",
    clean: bool = False,
) -> list[Event] | None:
    """Return the Events of decoded items (PII hashed by `hasher`), or None if any is unusual.

    The hasher's warnings name their values under ``<prefix>[i]``. After None, the hasher may
    hold warnings of items that were hashed before the unusual one: use a fresh one.
    `clean` says the items come from a body `is_clean` accepted: their strings then skip the
    printable checks (same Events, fewer steps).
    """
    out = _convert(items, now, new_id, limits, hasher, prefix, _CLEAN if clean else _ANY)
    return cast("list[Event] | None", out)


def records_from(
    items: Sequence[WireEvent],
    *,
    now: float,
    new_id: Callable[[], str],
    limits: ParseLimits,
    hasher: PiiHasher,
    prefix: str = "events",
    clean: bool = False,
) -> list[Stored] | None:
    """`events_from`, but each event straight in its stored form (`core.record.Stored`).

    For a caller that only stores the events (nothing to enrich first): the same checks and
    hashing, minus building each Event and then its record. ``encode_stored(s)`` of each is
    byte for byte ``encode(e)`` of the Event `events_from` returns (a differential test holds
    the two to that).
    """
    out = _convert(items, now, new_id, limits, hasher, prefix, _CLEAN_REC if clean else _ANY_REC)
    return cast("list[Stored] | None", out)


def _convert(
    items: Sequence[WireEvent],
    now: float,
    new_id: Callable[[], str],
    limits: ParseLimits,
    hasher: PiiHasher,
    prefix: str,
    checks: _Checks,
) -> list[Any] | None:
    hasher.prefix = prefix
    try:
        out: list[Any] = []
        for index, item in enumerate(items):
            out.append(_event(item, index, now, new_id, limits, hasher, checks))
        return out
    except _Unusual:
        return None


def _clean_text(value: str | None, max_len: int) -> str | None:
    """`_text` for a string of a clean body (printable): length and strip only."""
    if value is None:
        return None
    if len(value) <= max_len:
        return value.strip() or None
    raise _Unusual


def _clean_matching(value: str | None, max_len: int, check: Callable[[str], object]) -> str | None:
    """`_matching` for a string of a clean body."""
    if value is None:
        return None
    if len(value) > max_len:
        raise _Unusual
    text = value.strip()
    if not text:
        return None
    if check(text):
        return text
    raise _Unusual


def _clean_ip(value: str | None) -> str | None:
    """`_ip_common` for a string of a clean body: IPv4 as sent, anything else the general way."""
    if value is not None and len(value) <= 64:
        text = value.strip()
        if _IPV4_RE.match(text):
            return text
    return _ip_common(value)


def _clean_id(cid: str) -> str:
    """A line item's id from a clean body, as `_content_of` reads it."""
    if len(cid) > MAX_ID:
        raise _Unusual  # long ids are refused
    cid = cid.strip()
    if not cid:
        raise _Unusual  # blank ones are skipped by the precise path
    return cid


def _clean_content(cid: str, quantity: int | None, price: float | None) -> Content:
    """`_content_of` for a line item of a clean body."""
    cid = _clean_id(cid)
    if quantity is not None and not 0 <= quantity <= 1_000_000:
        raise _Unusual
    if price is not None and not -1e12 <= price <= 1e12:
        raise _Unusual
    return _new_content(cid, quantity, price)


def _clean_row(cid: str, quantity: int | None, price: float | None) -> StoredContent:
    """`_clean_content` in the stored form of a line item."""
    cid = _clean_id(cid)
    if quantity is not None and not 0 <= quantity <= 1_000_000:
        raise _Unusual
    if price is not None and not -1e12 <= price <= 1e12:
        raise _Unusual
    return (cid, quantity, price)


def _row_of(cid: JSON, quantity: JSON, price: JSON) -> StoredContent:
    """`_content_of` in the stored form of a line item."""
    c = _content_of(cid, quantity, price)
    return (c.id, c.quantity, c.price)


# The stored forms, built with the Event builders' positional arguments (see `_stored` in
# core.record for the mapping they must keep).


def _stored_event(
    name: str,
    event_id: str,
    when: int,
    source: Source,
    url: str | None,
    referrer: str | None,
    user: StoredUser,
    data: StoredData,
    consent: None,
    test_code: str | None,
) -> Stored:
    return Stored(name, event_id, when, source, user, data, url, referrer, test_code)


def _stored_user(
    pii: Mapping[str, tuple[str, ...]] | None = None,
    hashed: Mapping[str, Mapping[str, tuple[str, ...]]] | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    visitor_id: str | None = None,
    fbc: str | None = None,
    fbp: str | None = None,
    click_ids: dict[str, str] | None = None,
) -> StoredUser:
    return StoredUser(
        ip,
        user_agent,
        visitor_id,
        fbc,
        fbp,
        stored_hashes(hashed) if hashed else None,
        click_ids or None,
    )


def _stored_data(
    value: float | None = None,
    currency: str | None = None,
    order_id: str | None = None,
    contents: tuple[StoredContent, ...] = (),
    content_type: str | None = None,
    content_name: str | None = None,
    content_category: str | None = None,
    num_items: int | None = None,
    search_string: str | None = None,
    status: str | None = None,
    predicted_ltv: float | None = None,
    custom: dict[str, str | float | bool] | None = None,
) -> StoredData:
    return StoredData(
        value,
        currency,
        order_id,
        content_type,
        content_name,
        content_category,
        num_items,
        search_string,
        status,
        predicted_ltv,
        list(contents) if contents else None,
        custom or None,
    )


class _Checks(NamedTuple):
    """How one body's strings are checked (general, or a clean body's shortcuts) and what is
    built from them (Events, or straight their stored form)."""

    text: Callable[[str | None, int], str | None]
    matching: Callable[[str | None, int, Callable[[str], object]], str | None]
    ip: Callable[[str | None], str | None]
    content: Callable[[str, int | None, float | None], Any]
    event: Callable[..., Any]
    user: Callable[..., Any]
    data: Callable[..., Any]


_ANY: Final = _Checks(_text, _matching, _ip_common, _content_of, _new_event, _new_user, _new_data)
_CLEAN: Final = _Checks(
    _clean_text, _clean_matching, _clean_ip, _clean_content, _new_event, _new_user, _new_data
)
_ANY_REC: Final = _Checks(
    _text, _matching, _ip_common, _row_of, _stored_event, _stored_user, _stored_data
)
_CLEAN_REC: Final = _Checks(
    _clean_text, _clean_matching, _clean_ip, _clean_row, _stored_event, _stored_user, _stored_data
)


def _event(
    item: WireEvent,
    index: int,
    now: float,
    new_id: Callable[[], str],
    limits: ParseLimits,
    hasher: PiiHasher,
    checks: _Checks,
) -> Any:
    text, matching = checks.text, checks.matching
    name = item.event
    if not _NAME_RE.match(name) or item.consent is not None:
        raise _Unusual  # explicit consent is rare: the general path parses it
    event_id = text(item.event_id, MAX_ID)
    url = matching(item.url, MAX_URL, _URL_RE.match)
    referrer = matching(item.referrer, MAX_URL, _URL_RE.match)
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
    when = _when_common(item.time, now, source, limits)
    raw_data = item.data
    data = checks.data() if raw_data is None else _data(raw_data, checks)
    if name in VALUE_EVENTS and (data.value is None or data.currency is None):
        raise _Unusual
    test_code = text(item.test_code, MAX_NAME)
    if event_id is None:
        event_id = derive_event_id(data.order_id) if data.order_id else new_id()
    raw_user = item.user
    user = checks.user() if raw_user is None else _user(raw_user, index, hasher, checks)
    return checks.event(
        name, event_id, int(when), source, url, referrer, user, data, None, test_code
    )


def _user(raw: _User, index: int, hasher: PiiHasher, checks: _Checks) -> Any:
    text, matching = checks.text, checks.matching
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
    click_ids = _click_ids_common(raw.click_ids)
    fbc = matching(raw.fbc, 500, _FB_COOKIE_RE.fullmatch)
    fbp = matching(raw.fbp, 200, _FB_COOKIE_RE.fullmatch)
    ip = checks.ip(raw.ip)
    user_agent = text(raw.user_agent, MAX_UA)
    visitor_id = text(raw.visitor_id, MAX_ID)
    # Last: nothing after the hasher may send the document to the general path (the hasher
    # records warnings for dropped values).
    hashed: Mapping[str, Mapping[str, tuple[str, ...]]] = {}
    if pii:
        hasher.index = index
        hashed = hasher(pii)
    return checks.user({}, hashed, ip, user_agent, visitor_id, fbc, fbp, click_ids)


def _data(raw: _Data, checks: _Checks) -> Any:
    text = checks.text
    currency = _currency_common(raw.currency)
    contents: tuple[Any, ...] = ()
    raw_contents = raw.contents
    if raw_contents is not None:
        if len(raw_contents) > MAX_CONTENTS:
            raise _Unusual
        content = checks.content
        contents = tuple([content(c.id, c.quantity, c.price) for c in raw_contents])
    value = _finite(raw.value)
    order_id = text(raw.order_id, MAX_ID)
    if _rare_data(raw) == _NO_RARE_DATA:  # the usual data: value, currency, order, contents
        return checks.data(value, currency, order_id, contents)
    return checks.data(
        value,
        currency,
        order_id,
        contents,
        text(raw.content_type, MAX_NAME),
        text(raw.content_name, MAX_TEXT),
        text(raw.content_category, MAX_TEXT),
        _count(raw.num_items),
        text(raw.search_string, MAX_TEXT),
        text(raw.status, MAX_NAME),
        _finite(raw.predicted_ltv),
        _custom_common(raw.custom),
    )
