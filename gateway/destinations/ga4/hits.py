"""GA4 ``/g/collect`` hits (gtag.js) → canonical events, for mirroring (pure).

platforms.md §4.1, §4.2, §10.1 and §11 pitfall 19; the rules every vendor's parser shares are in
``gateway.core.hits``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from itertools import islice
from typing import Any, Final

from gateway.core.eventschema import MAX_ID
from gateway.core.hits import (
    MAX_BODY,
    MAX_PARAMS,
    Hit,
    clean_text,
    client_time,
    content_item,
    custom_fields,
    data_doc,
    event_doc,
    event_name,
    finite_number,
    guarded,
    http_url,
    merged,
    param_pairs,
    query_pairs,
    vendor_id,
)
from gateway.destinations.ga4.mapping import RESERVED_EVENTS

__all__ = ["GA4_EVENTS", "parse_ga4", "read_hits"]

GA4_EVENTS: Final[Mapping[str, str]] = {
    "page_view": "PageView",
    "view_item": "ViewContent",
    "add_to_cart": "AddToCart",
    "begin_checkout": "InitiateCheckout",
    "add_payment_info": "AddPaymentInfo",
    "purchase": "Purchase",
    "generate_lead": "Lead",
    "sign_up": "CompleteRegistration",
    "search": "Search",
    "add_to_wishlist": "AddToWishlist",
}
"""GA4 event name → canonical name (platforms.md §10.1); other names pass through unchanged."""

_GA4_RESERVED_PREFIXES: Final = ("dynamic_link_", "firebase_", "notification_")

_GA4_DATA_PARAMS: Final = frozenset(
    {"event_id", "transaction_id", "value", "currency", "search_term", "items"}
)

_MAX_ITEMS: Final = 200

_GA4_ITEM_RE: Final = re.compile(r"pr([1-9]\d{0,2})")
_GA4_CLIENT_ID_RE: Final = re.compile(r"\d{1,20}\.\d{1,20}")
_GA4_SESSION_ID_RE: Final = re.compile(r"\d{1,20}")
_GCS_RE: Final = re.compile(r"G1([01])([01])")


def parse_ga4(query: Sequence[tuple[str, str]], body: bytes, *, now: float) -> list[Hit]:
    """Return the events of a GA4 ``/g/collect`` hit.

    platforms.md §4.2, §10.1, pitfall 19. Shared parameters are in the query; each non-empty
    body line is one event whose URL-encoded parameters override the shared ones; an empty body
    means the query alone is one event. A body over ``MAX_BODY`` bytes gives ``[]``.

    Per event: no ``en`` (engagement pings) → skipped; GA4's reserved names (``user_engagement``,
    ``session_start``, ``first_visit``… — §4.1, refused by the Measurement Protocol) → skipped;
    ``en`` → canonical name via ``GA4_EVENTS``, others unchanged (``scroll`` stays ``scroll``).
    event_id = ``ep.event_id``, else for ``purchase`` a non-empty ``ep.transaction_id``.
    ``tid`` → pixel id; ``dl``/``dr`` → url/referrer; ``epn.value`` (or ``ep.value``) → value;
    ``cu`` (or ``ep.currency``) → currency; non-empty ``ep.transaction_id`` → order_id;
    ``ep.search_term`` → search_string; ``pr1``…``pr200`` (``id``, ``qt``, ``pr`` of the
    ``~``-separated item) → contents; other ``ep.k``/``epn.k`` → custom (string / number);
    ``gcs`` (``G1<ad><analytics>``) → consent.ad_storage/analytics_storage (``gcd`` is only
    community-decoded, so ignored); time = ``now`` (the protocol has no event time).
    ``cid``/``sid``/``uid`` go to ``Hit.vendor_ids`` only: GA's ids must not reach other
    vendors through the event.
    """
    return guarded(lambda: _ga4(query, body, now), [])


def read_hits(
    query: Sequence[tuple[str, str]], body: bytes, content_type: str, *, now: float
) -> list[Hit]:
    """The proxy's entry (``HitParser``)."""
    return parse_ga4(query, body, now=now)


# --- GA4 ----------------------------------------------------------------------------------------


def _ga4(query: object, body: object, now: float) -> list[Hit]:
    shared = merged(param_pairs(query))
    if body is None:
        body = b""
    if not isinstance(body, bytes | bytearray) or len(body) > MAX_BODY:
        return []
    text = body.decode("utf-8", "replace")
    lines = [s for ln in islice(text.split("\n", MAX_PARAMS), MAX_PARAMS) if (s := ln.strip())]
    events = [{**shared, **merged(list(query_pairs(ln)))} for ln in lines] if lines else [shared]
    hits: list[Hit] = []
    for params in events:
        hit = _ga4_event(params, now)
        if hit is not None:
            hits.append(hit)
    return hits


def _ga4_event(params: Mapping[str, object], now: float) -> Hit | None:
    en = params.get("en")
    if not isinstance(en, str) or event_name(en) is None:
        return None
    if en in RESERVED_EVENTS or en.startswith(_GA4_RESERVED_PREFIXES):
        return None
    name = GA4_EVENTS.get(en, en)
    ep: dict[str, object] = {}
    epn: dict[str, object] = {}
    for key, value in params.items():
        if key.startswith("ep."):
            ep.setdefault(key[3:], value)
        elif key.startswith("epn."):
            epn.setdefault(key[4:], finite_number(value))
    transaction_id = clean_text(ep.get("transaction_id"), MAX_ID)
    event_id = clean_text(ep.get("event_id"), MAX_ID)
    if event_id is None and en == "purchase":
        event_id = transaction_id
    custom: dict[str, object] = {k: v for k, v in ep.items() if k not in _GA4_DATA_PARAMS}
    for key, number in epn.items():
        if key not in _GA4_DATA_PARAMS and number is not None:
            custom.setdefault(key, number)
    value = epn.get("value")
    data = data_doc(
        value=value if value is not None else ep.get("value"),
        currency=params.get("cu") if params.get("cu") is not None else ep.get("currency"),
        order_id=transaction_id,
        contents=_ga4_items(params),
        search_string=ep.get("search_term"),
        custom=custom_fields(custom, numbers=True),
    )
    consent: dict[str, str] | None = None
    gcs = params.get("gcs")
    if isinstance(gcs, str) and (m := _GCS_RE.fullmatch(gcs)) is not None:
        consent = {
            "ad_storage": "granted" if m[1] == "1" else "denied",
            "analytics_storage": "granted" if m[2] == "1" else "denied",
        }
    event = event_doc(
        name,
        event_id=event_id,
        when=client_time(None, now),
        url=http_url(params.get("dl")),
        referrer=http_url(params.get("dr")),
        user={},
        data=data,
        consent=consent,
    )
    vendor_ids: dict[str, str] = {}
    for key, param, pattern in (
        ("client_id", "cid", _GA4_CLIENT_ID_RE),
        ("session_id", "sid", _GA4_SESSION_ID_RE),
        ("user_id", "uid", None),
    ):
        value_text = clean_text(params.get(param), MAX_ID)
        if value_text is not None and (pattern is None or pattern.fullmatch(value_text)):
            vendor_ids[key] = value_text
    return Hit("ga4", vendor_id(params.get("tid")), event, vendor_ids)


def _ga4_items(params: Mapping[str, object]) -> list[dict[str, Any]]:
    numbered: list[tuple[int, str]] = []
    for key, value in params.items():
        m = _GA4_ITEM_RE.fullmatch(key)
        if m is not None and int(m[1]) <= _MAX_ITEMS and isinstance(value, str):
            numbered.append((int(m[1]), value))
    contents: list[dict[str, Any]] = []
    for _, raw in sorted(numbered, key=lambda pair: pair[0]):
        fields: dict[str, str] = {}
        for token in raw.split("~", 64)[:64]:
            if len(token) >= 2:
                fields.setdefault(token[:2], token[2:])
        content = content_item(fields.get("id"), fields.get("qt"), fields.get("pr"))
        if content is not None:
            contents.append(content)
    return contents
