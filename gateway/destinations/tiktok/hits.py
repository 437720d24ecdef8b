"""TikTok pixel JSON hits → canonical events, for mirroring to the Events API (pure).

platforms.md §2.7, §2.8; the rules every vendor's parser shares are in ``gateway.core.hits``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import islice
from typing import Any, Final

from gateway.core.event import LIST_PII
from gateway.core.eventschema import MAX_ID
from gateway.core.hits import (
    MAX_PARAMS,
    Hit,
    any_time,
    as_object,
    clean_text,
    client_time,
    content_ids,
    contents_json,
    custom_fields,
    data_doc,
    digests,
    event_doc,
    event_name,
    guarded,
    http_url,
    json_body,
    put,
    vendor_id,
)
from gateway.destinations.tiktok.clickids import TTCLID

__all__ = ["TIKTOK_EVENTS", "parse_tiktok", "read_hits"]

TIKTOK_EVENTS: Final[Mapping[str, str]] = {
    "CompletePayment": "Purchase",
    "SubmitForm": "Lead",
    "Pageview": "PageView",
}
"""TikTok pixel name → canonical name (platforms.md §2.7, §10.1); others are the same."""

_TIKTOK_DATA_KEYS: Final = frozenset(
    {
        "value",
        "currency",
        "contents",
        "content_ids",
        "content_type",
        "content_name",
        "content_category",
        "num_items",
        "order_id",
        "search_string",
        "status",
        "predicted_ltv",
        "query",
        "content_id",
        "price",
        "quantity",
        "description",
    }
)
"""Properties read as data fields (the others go to ``data.custom``)."""


def parse_tiktok(body: bytes, *, now: float) -> list[Hit]:
    """Return the events of a TikTok pixel JSON hit (``/api/v2/pixel``, ``/pixel/track``).

    platforms.md §2.8 (reverse-engineered body; only the keys listed there are read). The body
    is one event object, ``{"batch": [event, …]}`` or a JSON array of events. Per event:
    ``event`` (CompletePayment → Purchase, SubmitForm → Lead, Pageview → PageView, other names
    unchanged), ``event_id``, ``timestamp`` (ISO-8601 with a zone, or unix s/ms),
    ``context.page.url``/``referrer``, ``context.pixel.code`` (else top-level ``sdkid``) → pixel
    id, ``context.ad.callback`` → ``user.click_ids.ttclid``, ``context.user.email``/
    ``phone_number``/``external_id`` → email/phone/external_id when 64-hex digests (TikTok
    hashes phones as E.164 *with* '+', §2.3, so that digest suits TikTok, not Meta),
    ``properties`` → data (``contents[{content_id, quantity, price}]``, ``content_ids``,
    ``query`` → search_string; other scalar properties → custom).
    """
    return guarded(lambda: _tiktok(body, now), [])


def read_hits(
    query: Sequence[tuple[str, str]], body: bytes, content_type: str, *, now: float
) -> list[Hit]:
    """The proxy's entry (``HitParser``): the JSON body is the hit."""
    return parse_tiktok(body, now=now)


# --- TikTok -------------------------------------------------------------------------------------


def _tiktok(body: object, now: float) -> list[Hit]:
    doc = json_body(body)
    if isinstance(doc, dict) and isinstance(doc.get("batch"), list):
        items: list[object] = doc["batch"]
    elif isinstance(doc, list):
        items = doc
    elif isinstance(doc, dict):
        items = [doc]
    else:
        return []
    fallback_pixel = vendor_id(doc.get("sdkid")) if isinstance(doc, dict) else None
    hits: list[Hit] = []
    for item in items[:MAX_PARAMS]:
        if isinstance(item, dict) and (hit := _tiktok_event(item, fallback_pixel, now)):
            hits.append(hit)
    return hits


def _tiktok_event(obj: dict[str, Any], fallback_pixel: str | None, now: float) -> Hit | None:
    raw_name = obj.get("event")
    name = event_name(TIKTOK_EVENTS.get(raw_name, raw_name) if isinstance(raw_name, str) else None)
    if name is None:
        return None
    context = as_object(obj.get("context"))
    page = as_object(context.get("page"))
    ad = as_object(context.get("ad"))
    pixel = as_object(context.get("pixel"))
    ctx_user = as_object(context.get("user"))
    props = as_object(obj.get("properties"))
    user: dict[str, Any] = {}
    for key, canonical in (
        ("email", "email"),
        ("phone_number", "phone"),
        ("external_id", "external_id"),
    ):
        put(user, canonical, digests(ctx_user.get(key), many=canonical in LIST_PII))
    ttclid = ad.get("callback")
    if isinstance(ttclid, str) and TTCLID.valid(ttclid) is not None:
        user["click_ids"] = {"ttclid": ttclid}
    contents = contents_json(props.get("contents"), "content_id", "price") or content_ids(
        props.get("content_ids")
    )
    search = props.get("search_string")
    custom = {k: v for k, v in islice(props.items(), MAX_PARAMS) if k not in _TIKTOK_DATA_KEYS}
    data = data_doc(
        value=props.get("value"),
        currency=props.get("currency"),
        order_id=props.get("order_id"),
        contents=contents,
        content_type=props.get("content_type"),
        content_name=props.get("content_name"),
        content_category=props.get("content_category"),
        num_items=props.get("num_items"),
        search_string=search if search is not None else props.get("query"),
        status=props.get("status"),
        predicted_ltv=props.get("predicted_ltv"),
        custom=custom_fields(custom, numbers=True),
    )
    event = event_doc(
        name,
        event_id=clean_text(obj.get("event_id"), MAX_ID, numbers=True),
        when=client_time(any_time(obj.get("timestamp")), now),
        url=http_url(page.get("url")),
        referrer=http_url(page.get("referrer")),
        user=user,
        data=data,
    )
    return Hit("tiktok", vendor_id(pixel.get("code")) or fallback_pixel, event)
