"""The stored form of an Event: a JSON-able dict with hashed identifiers and no raw PII."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.core.event import Consent, Content, Data, Event, Source, User


class RawPIIError(ValueError):
    """Raised when an event that still holds raw PII is about to be stored."""


def to_record(event: Event) -> dict[str, Any]:
    """Return the JSON-able stored form; refuse events that still hold raw PII."""
    if event.user.pii:
        raise RawPIIError("raw PII must be hashed before an event is stored")
    user: dict[str, Any] = {
        k: v
        for k, v in (
            ("ip", event.user.ip),
            ("ua", event.user.user_agent),
            ("vid", event.user.visitor_id),
            ("fbc", event.user.fbc),
            ("fbp", event.user.fbp),
        )
        if v is not None
    }
    if event.user.hashed:
        user["h"] = {
            rule: {k: list(v) for k, v in ids.items()} for rule, ids in event.user.hashed.items()
        }
    if event.user.click_ids:
        user["cid"] = dict(event.user.click_ids)
    d = event.data
    data: dict[str, Any] = {
        k: v
        for k, v in (
            ("value", d.value),
            ("currency", d.currency),
            ("order_id", d.order_id),
            ("content_type", d.content_type),
            ("content_name", d.content_name),
            ("content_category", d.content_category),
            ("num_items", d.num_items),
            ("search_string", d.search_string),
            ("status", d.status),
            ("predicted_ltv", d.predicted_ltv),
        )
        if v is not None
    }
    if d.contents:
        data["contents"] = [[c.id, c.quantity, c.price] for c in d.contents]
    if d.custom:
        data["custom"] = dict(d.custom)
    rec: dict[str, Any] = {
        "e": event.event,
        "id": event.event_id,
        "t": event.time,
        "s": event.source.value,
        "u": user,
        "d": data,
    }
    for key, value in (("url", event.url), ("ref", event.referrer), ("tc", event.test_code)):
        if value is not None:
            rec[key] = value
    if event.ldu:
        rec["ldu"] = 1
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
    )


def encode(event: Event) -> bytes:
    """Return the stored bytes of an event."""
    return json.dumps(to_record(event), separators=(",", ":"), ensure_ascii=False).encode()


def decode(raw: bytes) -> Event:
    """Return the event from its stored bytes."""
    return from_record(json.loads(raw))


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
