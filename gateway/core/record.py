"""The stored form of an Event: compact JSON with hashed identifiers and no raw PII."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, TypeAlias

import msgspec

from gateway.core.event import Consent, Content, Data, Event, Source, User
from gateway.core.jsoncodec import loads
from gateway.core.merge import merge, source_pair


class RawPIIError(ValueError):
    """Raised when an event that still holds raw PII is about to be stored."""


# The stored form, declared as msgspec structs: built with one C call each and encoded in C,
# fields in this order, a field left at its default (None, 0, "api") omitted. It is compact
# JSON of this shape (every key optional but e, id, t, s, u, d):
#   {"e": name, "id": event_id, "t": unix seconds, "s": source,
#    "u": {"ip", "ua", "vid", "fbc", "fbp", "h": {rule set: {key: [sha256, ...]}}, "cid": {...}},
#    "d": {"value", "currency", "order_id", "content_type", "content_name", "content_category",
#          "num_items", "search_string", "status", "predicted_ltv",
#          "contents": [[id, quantity, price], ...], "custom": {...}},
#    "url", "ref", "tc", "ldu": 1, "ch": channel, "c": [ad_storage, analytics_storage,
#    ad_user_data, ad_personalization]}


# gc=False: a record's structs hold strings, numbers and plain containers only (no cycles).


StoredContent: TypeAlias = tuple[str, int | None, float | None]
"""A line item as stored: [id, quantity, price]."""


class StoredUser(msgspec.Struct, omit_defaults=True, gc=False):
    ip: str | None = None
    ua: str | None = None
    vid: str | None = None
    fbc: str | None = None
    fbp: str | None = None
    h: dict[str, Any] | None = None
    cid: dict[str, str] | None = None


class StoredData(msgspec.Struct, omit_defaults=True, gc=False):
    value: float | None = None
    currency: str | None = None
    order_id: str | None = None
    content_type: str | None = None
    content_name: str | None = None
    content_category: str | None = None
    num_items: int | None = None
    search_string: str | None = None
    status: str | None = None
    predicted_ltv: float | None = None
    contents: list[StoredContent] | None = None
    custom: dict[str, str | float | bool] | None = None


class Stored(msgspec.Struct, omit_defaults=True, gc=False):
    e: str
    id: str
    t: int
    s: str
    u: StoredUser
    d: StoredData
    url: str | None = None
    ref: str | None = None
    tc: str | None = None
    ldu: int = 0
    ch: str = "api"
    c: tuple[bool | None, bool | None, bool | None, bool | None] | None = None


_encoder: Final = msgspec.json.Encoder()


def _dict(value: Mapping[str, Any]) -> dict[str, Any] | None:
    """A mapping as the dict the encoder takes (None when empty: the field is left out)."""
    if not value:
        return None
    return value if type(value) is dict else dict(value)


def stored_hashes(hashed: Mapping[str, Mapping[str, tuple[str, ...]]]) -> dict[str, Any] | None:
    """The hashed identifiers as the encoder takes them: dicts (None when there are none)."""
    for ids in hashed.values():
        if type(ids) is not dict:  # the parsers make nothing else
            return {r: dict(ids) for r, ids in hashed.items()}
    return _dict(hashed)


def _stored(event: Event) -> Stored:
    """Return the stored form of the event; refuse events that still hold raw PII."""
    u = event.user
    if u.pii:
        raise RawPIIError("raw PII must be hashed before an event is stored")
    user = StoredUser(
        u.ip, u.user_agent, u.visitor_id, u.fbc, u.fbp, stored_hashes(u.hashed), _dict(u.click_ids)
    )
    d = event.data
    data = StoredData(
        d.value,
        d.currency,
        d.order_id,
        d.content_type,
        d.content_name,
        d.content_category,
        d.num_items,
        d.search_string,
        d.status,
        d.predicted_ltv,
        [(c.id, c.quantity, c.price) for c in d.contents] if d.contents else None,
        _dict(d.custom),
    )
    c = event.consent
    return Stored(
        event.event,
        event.event_id,
        event.time,
        event.source,
        user,
        data,
        event.url,
        event.referrer,
        event.test_code,
        1 if event.ldu else 0,
        event.channel,
        None
        if c is None
        else (c.ad_storage, c.analytics_storage, c.ad_user_data, c.ad_personalization),
    )


def from_record(rec: dict[str, Any]) -> Event:
    """Rebuild an Event from its stored form (trusted input written by `encode`)."""
    u = rec.get("u", {})
    d = rec.get("d", {})
    consent = rec.get("c")
    return Event(
        event=rec["e"],
        event_id=rec["id"],
        time=rec["t"],
        source=Source(rec["s"]),
        url=rec.get("url"),
        referrer=rec.get("ref"),
        test_code=rec.get("tc"),
        user=User(
            hashed={r: {k: tuple(v) for k, v in ids.items()} for r, ids in u.get("h", {}).items()},
            ip=u.get("ip"),
            user_agent=u.get("ua"),
            visitor_id=u.get("vid"),
            fbc=u.get("fbc"),
            fbp=u.get("fbp"),
            click_ids=u.get("cid", {}),
        ),
        data=Data(
            value=d.get("value"),
            currency=d.get("currency"),
            order_id=d.get("order_id"),
            contents=tuple(Content(i, q, p) for i, q, p in d.get("contents", ())),
            content_type=d.get("content_type"),
            content_name=d.get("content_name"),
            content_category=d.get("content_category"),
            num_items=d.get("num_items"),
            search_string=d.get("search_string"),
            status=d.get("status"),
            predicted_ltv=d.get("predicted_ltv"),
            custom=d.get("custom", {}),
        ),
        consent=Consent(*consent) if consent is not None else None,
        ldu=bool(rec.get("ldu")),
        channel=rec.get("ch", "api"),
    )


def encode(event: Event) -> bytes:
    """Return the stored bytes of an event (compact JSON, the shape above); never raw PII."""
    return _encoder.encode(_stored(event))


def encode_stored(stored: Stored) -> bytes:
    """Return the stored bytes of an event already in its stored form (`encode`'s last step)."""
    return _encoder.encode(stored)


def decode(raw: bytes) -> Event:
    """Return the event from its stored bytes."""
    return from_record(loads(raw))


def record_carries(record: Mapping[str, Any], visitor_id: str | None, keys: Iterable[str]) -> bool:
    """Return whether a stored event record belongs to the visitor or carries one of the keys."""
    user = record.get("u", {})
    if visitor_id is not None and user.get("vid") == visitor_id:
        return True
    wanted = set(keys)
    if not wanted:
        return False
    for ids in user.get("h", {}).values():
        for key, digests in ids.items():
            if any(f"{key}:{d}" in wanted for d in digests):
                return True
    return False


def merge_records(old: bytes, new: bytes) -> tuple[bytes, str]:
    """Merge two stored copies of one conversion; return the new record and the source pair."""
    a, b = decode(old), decode(new)
    merged = merge(a, b, a.channel, b.channel)
    return encode(merged), source_pair(a.channel, b.channel)


def channel_of(raw: bytes) -> str:
    """Return the channel of a stored record without decoding all of it."""
    try:
        value = loads(raw).get("ch", "api")
    except (ValueError, AttributeError):
        return "api"
    return value if isinstance(value, str) else "api"
