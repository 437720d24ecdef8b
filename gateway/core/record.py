"""The stored form of an Event: a JSON-able dict with hashed identifiers and no raw PII."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gateway.core.event import Consent, Content, Data, Event, Source, User
from gateway.core.jsoncodec import dumps, loads
from gateway.core.merge import merge, source_pair


class RawPIIError(ValueError):
    """Raised when an event that still holds raw PII is about to be stored."""


def to_record(event: Event) -> dict[str, Any]:
    """Return the JSON-able stored form; refuse events that still hold raw PII."""
    if event.user.pii:
        raise RawPIIError("raw PII must be hashed before an event is stored")
    # Runs once per stored event: plain `if`s, no intermediate tuples or filtering generators.
    u = event.user
    user: dict[str, Any] = {}
    if u.ip is not None:
        user["ip"] = u.ip
    if u.user_agent is not None:
        user["ua"] = u.user_agent
    if u.visitor_id is not None:
        user["vid"] = u.visitor_id
    if u.fbc is not None:
        user["fbc"] = u.fbc
    if u.fbp is not None:
        user["fbp"] = u.fbp
    if u.hashed:  # tuples encode as JSON arrays: no list copies
        user["h"] = {r: ids if type(ids) is dict else dict(ids) for r, ids in u.hashed.items()}
    if u.click_ids:
        user["cid"] = dict(u.click_ids)
    d = event.data
    data: dict[str, Any] = {}
    if d.value is not None:
        data["value"] = d.value
    if d.currency is not None:
        data["currency"] = d.currency
    if d.order_id is not None:
        data["order_id"] = d.order_id
    if d.content_type is not None:
        data["content_type"] = d.content_type
    if d.content_name is not None:
        data["content_name"] = d.content_name
    if d.content_category is not None:
        data["content_category"] = d.content_category
    if d.num_items is not None:
        data["num_items"] = d.num_items
    if d.search_string is not None:
        data["search_string"] = d.search_string
    if d.status is not None:
        data["status"] = d.status
    if d.predicted_ltv is not None:
        data["predicted_ltv"] = d.predicted_ltv
    if d.contents:
        data["contents"] = [[c.id, c.quantity, c.price] for c in d.contents]
    if d.custom:
        data["custom"] = dict(d.custom)
    rec: dict[str, Any] = {
        "e": event.event,
        "id": event.event_id,
        "t": event.time,
        "s": event.source,  # a StrEnum: encodes as its value, without the enum property
        "u": user,
        "d": data,
    }
    if event.url is not None:
        rec["url"] = event.url
    if event.referrer is not None:
        rec["ref"] = event.referrer
    if event.test_code is not None:
        rec["tc"] = event.test_code
    if event.ldu:
        rec["ldu"] = 1
    if event.channel != "api":
        rec["ch"] = event.channel
    if event.consent is not None:
        c = event.consent
        rec["c"] = [c.ad_storage, c.analytics_storage, c.ad_user_data, c.ad_personalization]
    return rec


def from_record(rec: dict[str, Any]) -> Event:
    """Rebuild an Event from its stored form (trusted input written by `to_record`)."""
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
    """Return the stored bytes of an event."""
    return dumps(to_record(event))


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
