"""Snap pixel hits → canonical events, for mirroring to the Conversions API (pure).

platforms.md §3.5, §3.6; the rules every vendor's parser shares are in ``gateway.core.hits``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import islice
from typing import Any, Final

from gateway.core.eventschema import MAX_ID
from gateway.core.hits import (
    MAX_BODY,
    MAX_PARAMS,
    MAX_VALUE,
    Hit,
    clean_text,
    client_time,
    content_ids,
    custom_fields,
    data_doc,
    digests,
    epoch_seconds,
    event_doc,
    event_name,
    guarded,
    http_url,
    json_body,
    merged,
    param_pairs,
    put,
    query_pairs,
    small_value,
    vendor_id,
)

__all__ = ["SNAP_EVENTS", "parse_snap", "read_hits"]

SNAP_EVENTS: Final[Mapping[str, str]] = {
    "PAGE_VIEW": "PageView",
    "VIEW_CONTENT": "ViewContent",
    "ADD_CART": "AddToCart",
    "START_CHECKOUT": "InitiateCheckout",
    "ADD_BILLING": "AddPaymentInfo",
    "PURCHASE": "Purchase",
    "SIGN_UP": "CompleteRegistration",
    "SEARCH": "Search",
    "ADD_TO_WISHLIST": "AddToWishlist",
    "SUBSCRIBE": "Subscribe",
    "START_TRIAL": "StartTrial",
}
"""Snap pixel name → canonical name (platforms.md §3.5, §10.1); others pass through unchanged."""


def parse_snap(
    query: Sequence[tuple[str, str]], body: bytes, content_type: str, *, now: float
) -> Hit | None:
    """Return the event of a Snap pixel hit (``tr.snapchat.com/p``, noscript ``/cm/i``).

    platforms.md §3.6. Parameters come from the body (form-encoded, or a flat JSON object when
    ``content_type`` says JSON or the body starts with ``{``) and from the query; the body wins.
    ``ev`` (PAGE_VIEW → PageView, VIEW_CONTENT → ViewContent, ADD_CART → AddToCart,
    START_CHECKOUT → InitiateCheckout, ADD_BILLING → AddPaymentInfo, PURCHASE → Purchase,
    SIGN_UP → CompleteRegistration, SEARCH → Search, ADD_TO_WISHLIST → AddToWishlist, SUBSCRIBE →
    Subscribe, START_TRIAL → StartTrial; other names unchanged), ``pid`` → pixel id,
    ``client_dedup_id`` → event_id, ``pl``/``rf`` → url/referrer, ``ts``, ``u_hem``/``u_hpn`` →
    email/phone (64-hex only), ``e_cur`` currency, ``e_pr`` → value, ``e_tid`` → order_id,
    ``e_iids`` (list, JSON array or comma-separated) → contents, ``e_ni`` → num_items, ``e_ss`` →
    search_string, ``e_ic`` → content_category, ``e_desc``/``e_sm`` → custom description /
    sign_up_method. No ``ev`` → None.
    """
    return guarded(lambda: _snap(query, body, content_type, now), None)


def read_hits(
    query: Sequence[tuple[str, str]], body: bytes, content_type: str, *, now: float
) -> list[Hit]:
    """The proxy's entry (``HitParser``)."""
    hit = parse_snap(query, body, content_type, now=now)
    return [hit] if hit is not None else []


# --- Snap ---------------------------------------------------------------------------------------


def _snap(query: object, body: object, content_type: object, now: float) -> Hit | None:
    params = merged(_snap_body(body, content_type), param_pairs(query))
    raw_name = params.get("ev")
    name = event_name(SNAP_EVENTS.get(raw_name, raw_name) if isinstance(raw_name, str) else None)
    if name is None:
        return None
    user: dict[str, Any] = {}
    put(user, "email", digests(params.get("u_hem"), many=False))
    put(user, "phone", digests(params.get("u_hpn"), many=False))
    data = data_doc(
        value=params.get("e_pr"),
        currency=params.get("e_cur"),
        order_id=params.get("e_tid"),
        contents=content_ids(params.get("e_iids"), split_commas=True),
        content_category=params.get("e_ic"),
        num_items=params.get("e_ni"),
        search_string=params.get("e_ss"),
        custom=custom_fields(
            {"description": params.get("e_desc"), "sign_up_method": params.get("e_sm")},
            numbers=False,
        ),
    )
    event = event_doc(
        name,
        event_id=clean_text(params.get("client_dedup_id"), MAX_ID, numbers=True),
        when=client_time(epoch_seconds(params.get("ts")), now),
        url=http_url(params.get("pl")),
        referrer=http_url(params.get("rf")),
        user=user,
        data=data,
    )
    return Hit("snap", vendor_id(params.get("pid")), event)


def _snap_body(body: object, content_type: object) -> list[tuple[str, object]]:
    if not isinstance(body, bytes | bytearray) or not body or len(body) > MAX_BODY:
        return []
    kind = content_type.lower() if isinstance(content_type, str) else ""
    is_form = "x-www-form-urlencoded" in kind
    if "json" in kind or (not is_form and body.lstrip()[:1] == b"{"):
        doc = json_body(body)
        if not isinstance(doc, dict):
            return []
        return [(k, v) for k, v in islice(doc.items(), MAX_PARAMS) if small_value(v, MAX_VALUE)]
    return list(query_pairs(body.decode("utf-8", "replace")))
