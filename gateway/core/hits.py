"""Vendor pixel hits → canonical events, for mirroring proxied hits to the server APIs (pure).

The pixel proxy forwards every vendor hit (Meta ``/tr``, TikTok ``/api/v2/pixel``, Snap ``/p``,
GA4 ``/g/collect``) to the vendor **unchanged, whatever these parsers return**: a parse failure
never breaks the pass-through. Independently, it parses the hit here and, for each ``Hit``
returned, hands ``hit.event`` to the normal pipeline, which mirrors it to the vendor's server API
with the *same* ``event_id`` the pixel sent, so the vendor deduplicates the two copies
(platforms.md §1.7, §2.4, §3.4, §1.11).

Sources: platforms.md §1.10 (Meta ``/tr``), §2.8 (TikTok), §3.6 (Snap), §4.2 (GA4 collection
protocol), §10.1 (event names) and §11 pitfalls 9 (future client clocks), 19 (empty GA4
``transaction_id``) and 24 (only real ``/tr`` events count).

Shape produced. ``Hit.event`` is a canonical event object, exactly what one item of
``POST /v1/events`` looks like, ready for ``gateway.core.event.parse_event``::

    {"event": "Purchase", "event_id": "ord-1", "time": 1700000000,
     "url": "https://shop.example/thanks", "referrer": "https://shop.example/cart",
     "source": "website",
     "user": {"email": "<64 hex>", "fbp": "fb.1.…", "click_ids": {"ttclid": "…"}},
     "data": {"value": 12.5, "currency": "EUR", "order_id": "ord-1",
              "contents": [{"id": "SKU1", "quantity": 1, "price": 12.5}], "custom": {…}}}

Keys are present only when they carry a value; ``user`` and ``data`` are always present (maybe
empty). Every field is checked against ``parse_event``'s own rules (name pattern, lengths,
http(s) URLs, 3-letter currency, numbers finite and below 1e12, integer counts 0..1e6, safe custom
keys, no control characters or lone surrogates) and an invalid field is *dropped*, never
repaired, so a hit yields an event ``parse_event`` accepts. Two rejections are left to the
pipeline on purpose, so that the caller can count them: a ``Purchase`` without value or
currency keeps its name (the pixel sent it so; the pipeline refuses it with ``required``), and a
per-site ``ParseLimits.max_age_seconds`` below one day could still refuse a client time.

Decisions common to every vendor:

* ``source`` is ``"website"`` when the hit has a valid page URL. Without one, ``url`` and
  ``source`` are both absent, so ``parse_event`` reads it as ``other``; a caller that knows the
  page (the request's ``Referer``) may set ``event["url"]`` and gets ``website`` automatically.
* Time: the client's time is used when it lies within the last day (``MAX_CLIENT_LAG``); a time
  in the future is clamped to ``now`` (pitfall 9) and one older than that is a wrong clock (a
  pixel sends its hit when the event happens) and is replaced by ``now``; no time → ``now``.
  Numbers at or above 1e11 are read as milliseconds. Always whole seconds.
* Identifiers: pixel-hashed values (64 hex digits) are passed as the canonical user fields
  (``email``, ``phone``, …); the gateway's normaliser passes digests through untouched, so they
  are never hashed twice (pitfall 1). Meta's ``ud[…]`` also passes plain values (the gateway
  normalises and hashes them); TikTok and Snap identifiers are accepted only as digests.
  ``fbp``/``fbc`` must parse as Meta cookies (``clickids.parse_fbp``/``parse_fbc``), ``ttclid`` as
  a click id. Click ids in the page URL (``fbclid``, ``gclid``…) are captured later by the
  gateway, not here.
* No ``event_id`` in the hit → the event has none and the pipeline derives it from
  ``data.order_id`` or makes a random one (then the vendor cannot deduplicate on the id; Meta
  still can on event name + ``fbp`` browser-first, §1.7). The hit is still returned and counted.
* Custom properties (``cd[k]``, TikTok ``properties``, GA4 ``ep.k``/``epn.k``, Snap
  ``e_desc``/``e_sm``) go to ``data.custom`` when their key is 1-64 letters, digits or ``_``
  (at most ``MAX_CUSTOM_KEYS``); string values from query strings stay strings.
* ``Hit.vendor_ids`` carries identifiers the vendor's own server API needs but which are not
  canonical fields and must not travel to other vendors: GA4 ``client_id`` (``cid``),
  ``session_id`` (``sid``) and ``user_id`` (``uid``), needed by a Measurement Protocol mirror.

Bounds (work is bounded whatever the input): the first ``MAX_PARAMS`` parameters, JSON keys or
GA4 lines are read and the rest ignored; parameter values over ``MAX_VALUE`` characters are
ignored (``cd[contents]`` and ``cd[content_ids]`` may be ``MAX_BODY``); bodies over ``MAX_BODY``
bytes are not parsed. No parser raises: any input, of any type, gives ``None`` or ``[]`` at
worst (each public function also has a last-resort guard for that contract).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any, Final, TypeVar
from urllib.parse import unquote_plus

from gateway.core.clickids import parse_fbc, parse_fbp, valid_click_id
from gateway.core.event import (
    LIST_PII,
    MAX_CONTENTS,
    MAX_CUSTOM_KEYS,
    MAX_ID,
    MAX_LIST,
    MAX_NAME,
    MAX_TEXT,
    MAX_URL,
    PII_FIELDS,
)

__all__ = [
    "GA4_EVENTS",
    "MAX_BODY",
    "MAX_CLIENT_LAG",
    "MAX_PARAMS",
    "MAX_VALUE",
    "SNAP_EVENTS",
    "TIKTOK_EVENTS",
    "Hit",
    "parse_ga4",
    "parse_meta_tr",
    "parse_snap",
    "parse_tiktok",
]

MAX_PARAMS: Final = 200
"""Parameters (query pairs, form fields, JSON keys) and GA4 body lines read per hit."""
MAX_VALUE: Final = 4096
"""Longest parameter value read; longer values are ignored."""
MAX_BODY: Final = 65_536
"""Largest body parsed (bytes); larger bodies are forwarded but not mirrored."""
MAX_CLIENT_LAG: Final = 86_400.0
"""Oldest client time believed, in seconds before now; older means a wrong clock."""

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

TIKTOK_EVENTS: Final[Mapping[str, str]] = {
    "CompletePayment": "Purchase",
    "SubmitForm": "Lead",
    "Pageview": "PageView",
}
"""TikTok pixel name → canonical name (platforms.md §2.7, §10.1); others are the same."""

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

_META_MODES: Final = frozenset({"GET", "FGET", "SB", "POST"})
_META_SKIP_EVENTS: Final = frozenset({"Microdata", "SubscribedButtonClick"})
"""Events the Meta pixel generates by itself (page metadata, automatic button clicks)."""
_GA4_RESERVED: Final = frozenset(
    {
        "ad_activeview",
        "ad_click",
        "ad_exposure",
        "ad_impression",
        "ad_query",
        "ad_reward",
        "adunit_exposure",
        "app_clear_data",
        "app_exception",
        "app_install",
        "app_remove",
        "app_store_refund",
        "app_update",
        "app_upgrade",
        "error",
        "first_open",
        "first_visit",
        "in_app_purchase",
        "os_update",
        "screen_view",
        "session_start",
        "user_engagement",
    }
)
_GA4_RESERVED_PREFIXES: Final = ("dynamic_link_", "firebase_", "notification_")
_UD_FIELDS: Final[Mapping[str, str]] = {key: name for name, key in PII_FIELDS.items()}
"""Meta ``ud[key]`` → canonical user field (em → email, ph → phone, …)."""
_META_JSON_PARAMS: Final = frozenset({"cd[contents]", "cd[content_ids]"})
_META_LIMITS: Final[Mapping[str, int]] = {key: MAX_BODY for key in _META_JSON_PARAMS}
_META_DATA_KEYS: Final = frozenset(
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
    }
)
_TIKTOK_DATA_KEYS: Final = frozenset(
    _META_DATA_KEYS | {"query", "content_id", "price", "quantity", "description"}
)
_GA4_DATA_PARAMS: Final = frozenset(
    {"event_id", "transaction_id", "value", "currency", "search_term", "items"}
)
_MAX_ITEMS: Final = 200
_MAX_PII_LEN: Final = MAX_TEXT

_NAME_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_ .:\-]{0,99}")
_BAD_CHARS_RE: Final = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_URL_RE: Final = re.compile(r"https?://[^\s/?#]+", re.IGNORECASE)
_CURRENCY_RE: Final = re.compile(r"[A-Za-z]{3}")
_NUMBER_RE: Final = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?")
_CUSTOM_KEY_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_VENDOR_ID_RE: Final = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
_SHA256_RE: Final = re.compile(r"[0-9a-fA-F]{64}")
_BRACKET_RE: Final = re.compile(r"(cd|ud)\[([^\[\]]{1,64})\]")
_BRACKET_HEADS: Final = ("cd[", "ud[")
_GA4_ITEM_RE: Final = re.compile(r"pr([1-9]\d{0,2})")
_GA4_CLIENT_ID_RE: Final = re.compile(r"\d{1,20}\.\d{1,20}")
_GA4_SESSION_ID_RE: Final = re.compile(r"\d{1,20}")
_GCS_RE: Final = re.compile(r"G1([01])([01])")
_MS_THRESHOLD: Final = 1e11
_MAX_NUMBER: Final = 1e12

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Hit:
    """One canonical event parsed from a pixel hit, plus what the mirror needs."""

    vendor: str
    """``"meta"``, ``"tiktok"``, ``"snap"`` or ``"ga4"``."""
    pixel_id: str | None
    """Meta ``id``, TikTok pixel code, Snap ``pid`` or GA4 ``tid``; None when absent/invalid."""
    event: dict[str, Any]
    """A canonical event object for ``parse_event`` (see the module docstring)."""
    vendor_ids: Mapping[str, str] = field(default_factory=dict)
    """Vendor-only identifiers for that vendor's mirror (GA4: client_id, session_id, user_id)."""


# --- public parsers ---------------------------------------------------------------------------


def parse_meta_tr(
    query: Mapping[str, str] | Sequence[tuple[str, str]],
    body_form: Sequence[tuple[str, str]] = (),
    *,
    now: float,
) -> Hit | None:
    """Return the event of a Meta pixel ``/tr`` hit, or None if it is not an event.

    platforms.md §1.10 and pitfall 24. ``query`` is the decoded query (pairs or a mapping such as
    a multidict); ``body_form`` the decoded form fields of a POSTed hit (``rqm=SB``/``POST``). A
    field in the body wins over the same field in the query; the first occurrence of a name wins.

    Counted: hits with a valid ``ev`` whose ``rqm`` is GET, FGET, SB or POST or absent; a
    ``noscript`` hit is fine. Not events: no ``ev``, another ``rqm``, the pixel's own automatic
    hits (``ev`` ``Microdata``/``SubscribedButtonClick`` or ``es=automatic``). The caller never
    passes ``privacy_sandbox`` trigger requests (they repeat a ``/tr`` hit).

    Mapping: ``eid`` → event_id (absent → none, see the module docstring); ``ts`` (ms) → time;
    ``dl``/``rl`` → url/referrer (http(s) only); ``fbp``/``fbc`` → user; ``ud[em|ph|fn|ln|ge|db|
    ct|st|zp|country|external_id]`` → email, phone, first_name, last_name, gender,
    date_of_birth, city, state, zip, country, external_id as given (digests or plain values);
    ``cd[value|currency|content_type|content_name|content_category|num_items|order_id|
    search_string|status|predicted_ltv]`` → data; ``cd[contents]`` (JSON ``[{id, quantity,
    item_price}]``) or else ``cd[content_ids]`` (JSON array, or one plain id) → contents; other
    ``cd[key]`` → data.custom as strings.
    """
    return _guard(lambda: _meta_tr(query, body_form, now), None)


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
    return _guard(lambda: _tiktok(body, now), [])


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
    return _guard(lambda: _snap(query, body, content_type, now), None)


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
    return _guard(lambda: _ga4(query, body, now), [])


def _guard(parse: Callable[[], _T], default: _T) -> _T:
    """Run `parse`; on any exception return `default` (a parse failure never breaks a proxy)."""
    try:
        return parse()
    except Exception:
        return default


# --- Meta ---------------------------------------------------------------------------------------


def _meta_tr(query: object, body_form: object, now: float) -> Hit | None:
    params: dict[str, object] = {}
    brackets = False
    for source in (body_form, query) if body_form else (query,):  # the body wins
        for key, value in _pairs(source, _META_LIMITS):
            if key not in params:
                params[key] = value
                brackets = brackets or "[" in key
    name = _name(params.get("ev"))
    if name is None or name in _META_SKIP_EVENTS or params.get("es") == "automatic":
        return None
    mode = params.get("rqm")
    if mode is not None and (not isinstance(mode, str) or mode.strip().upper() not in _META_MODES):
        return None
    cd: dict[str, object] = {}
    ud: dict[str, object] = {}
    for key, value in params.items() if brackets else ():
        if "[" in key and key.startswith(_BRACKET_HEADS) and (m := _BRACKET_RE.fullmatch(key)):
            (cd if m[1] == "cd" else ud)[m[2]] = value
    user: dict[str, Any] = {}
    for short, raw in ud.items():  # only the ud[…] the hit has (usually none)
        canonical = _UD_FIELDS.get(short)
        if canonical is not None:
            _put(user, canonical, _text(raw, _MAX_PII_LEN))
    if "fbp" in params:
        _put(user, "fbp", _cookie(params["fbp"], parse_fbp))
    if "fbc" in params:
        _put(user, "fbc", _cookie(params["fbc"], parse_fbc))
    data = _meta_data(cd) if cd else {}  # no cd[…] (a PageView): no data fields
    event = _event(
        name,
        event_id=_text(params.get("eid"), MAX_ID),
        when=_client_time(_epoch(params.get("ts")), now),
        url=_url(params.get("dl")),
        referrer=_url(params.get("rl")),
        user=user,
        data=data,
    )
    return Hit("meta", _vendor_id(params.get("id")), event)


def _meta_data(cd: Mapping[str, object]) -> dict[str, Any]:
    contents = _contents_json(cd.get("contents"), "id", "item_price") or _content_ids(
        cd.get("content_ids")
    )
    custom = {k: v for k, v in cd.items() if k not in _META_DATA_KEYS}
    return _data(
        value=cd.get("value"),
        currency=cd.get("currency"),
        order_id=cd.get("order_id"),
        contents=contents,
        content_type=cd.get("content_type"),
        content_name=cd.get("content_name"),
        content_category=cd.get("content_category"),
        num_items=cd.get("num_items"),
        search_string=cd.get("search_string"),
        status=cd.get("status"),
        predicted_ltv=cd.get("predicted_ltv"),
        custom=_custom(custom, numbers=False),
    )


# --- TikTok -------------------------------------------------------------------------------------


def _tiktok(body: object, now: float) -> list[Hit]:
    doc = _json(body)
    if isinstance(doc, dict) and isinstance(doc.get("batch"), list):
        items: list[object] = doc["batch"]
    elif isinstance(doc, list):
        items = doc
    elif isinstance(doc, dict):
        items = [doc]
    else:
        return []
    fallback_pixel = _vendor_id(doc.get("sdkid")) if isinstance(doc, dict) else None
    hits: list[Hit] = []
    for item in items[:MAX_PARAMS]:
        if isinstance(item, dict) and (hit := _tiktok_event(item, fallback_pixel, now)):
            hits.append(hit)
    return hits


def _tiktok_event(obj: dict[str, Any], fallback_pixel: str | None, now: float) -> Hit | None:
    raw_name = obj.get("event")
    name = _name(TIKTOK_EVENTS.get(raw_name, raw_name) if isinstance(raw_name, str) else None)
    if name is None:
        return None
    context = _obj(obj.get("context"))
    page = _obj(context.get("page"))
    ad = _obj(context.get("ad"))
    pixel = _obj(context.get("pixel"))
    ctx_user = _obj(context.get("user"))
    props = _obj(obj.get("properties"))
    user: dict[str, Any] = {}
    for key, canonical in (
        ("email", "email"),
        ("phone_number", "phone"),
        ("external_id", "external_id"),
    ):
        _put(user, canonical, _digests(ctx_user.get(key), many=canonical in LIST_PII))
    ttclid = ad.get("callback")
    if isinstance(ttclid, str) and valid_click_id("ttclid", ttclid) is not None:
        user["click_ids"] = {"ttclid": ttclid}
    contents = _contents_json(props.get("contents"), "content_id", "price") or _content_ids(
        props.get("content_ids")
    )
    search = props.get("search_string")
    custom = {k: v for k, v in islice(props.items(), MAX_PARAMS) if k not in _TIKTOK_DATA_KEYS}
    data = _data(
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
        custom=_custom(custom, numbers=True),
    )
    event = _event(
        name,
        event_id=_text(obj.get("event_id"), MAX_ID, numbers=True),
        when=_client_time(_any_time(obj.get("timestamp")), now),
        url=_url(page.get("url")),
        referrer=_url(page.get("referrer")),
        user=user,
        data=data,
    )
    return Hit("tiktok", _vendor_id(pixel.get("code")) or fallback_pixel, event)


# --- Snap ---------------------------------------------------------------------------------------


def _snap(query: object, body: object, content_type: object, now: float) -> Hit | None:
    params = _merge(_snap_body(body, content_type), _pairs(query))
    raw_name = params.get("ev")
    name = _name(SNAP_EVENTS.get(raw_name, raw_name) if isinstance(raw_name, str) else None)
    if name is None:
        return None
    user: dict[str, Any] = {}
    _put(user, "email", _digests(params.get("u_hem"), many=False))
    _put(user, "phone", _digests(params.get("u_hpn"), many=False))
    data = _data(
        value=params.get("e_pr"),
        currency=params.get("e_cur"),
        order_id=params.get("e_tid"),
        contents=_content_ids(params.get("e_iids"), split_commas=True),
        content_category=params.get("e_ic"),
        num_items=params.get("e_ni"),
        search_string=params.get("e_ss"),
        custom=_custom(
            {"description": params.get("e_desc"), "sign_up_method": params.get("e_sm")},
            numbers=False,
        ),
    )
    event = _event(
        name,
        event_id=_text(params.get("client_dedup_id"), MAX_ID, numbers=True),
        when=_client_time(_epoch(params.get("ts")), now),
        url=_url(params.get("pl")),
        referrer=_url(params.get("rf")),
        user=user,
        data=data,
    )
    return Hit("snap", _vendor_id(params.get("pid")), event)


def _snap_body(body: object, content_type: object) -> list[tuple[str, object]]:
    if not isinstance(body, bytes | bytearray) or not body or len(body) > MAX_BODY:
        return []
    kind = content_type.lower() if isinstance(content_type, str) else ""
    is_form = "x-www-form-urlencoded" in kind
    if "json" in kind or (not is_form and body.lstrip()[:1] == b"{"):
        doc = _json(body)
        if not isinstance(doc, dict):
            return []
        return [(k, v) for k, v in islice(doc.items(), MAX_PARAMS) if _small(v, MAX_VALUE)]
    return list(_query_string(body.decode("utf-8", "replace")))


# --- GA4 ----------------------------------------------------------------------------------------


def _ga4(query: object, body: object, now: float) -> list[Hit]:
    shared = _merge(_pairs(query))
    if body is None:
        body = b""
    if not isinstance(body, bytes | bytearray) or len(body) > MAX_BODY:
        return []
    text = body.decode("utf-8", "replace")
    lines = [s for ln in islice(text.split("\n", MAX_PARAMS), MAX_PARAMS) if (s := ln.strip())]
    events = [{**shared, **_merge(list(_query_string(ln)))} for ln in lines] if lines else [shared]
    hits: list[Hit] = []
    for params in events:
        hit = _ga4_event(params, now)
        if hit is not None:
            hits.append(hit)
    return hits


def _ga4_event(params: Mapping[str, object], now: float) -> Hit | None:
    en = params.get("en")
    if not isinstance(en, str) or _name(en) is None:
        return None
    if en in _GA4_RESERVED or en.startswith(_GA4_RESERVED_PREFIXES):
        return None
    name = GA4_EVENTS.get(en, en)
    ep: dict[str, object] = {}
    epn: dict[str, object] = {}
    for key, value in params.items():
        if key.startswith("ep."):
            ep.setdefault(key[3:], value)
        elif key.startswith("epn."):
            epn.setdefault(key[4:], _number(value))
    transaction_id = _text(ep.get("transaction_id"), MAX_ID)
    event_id = _text(ep.get("event_id"), MAX_ID)
    if event_id is None and en == "purchase":
        event_id = transaction_id
    custom: dict[str, object] = {k: v for k, v in ep.items() if k not in _GA4_DATA_PARAMS}
    for key, number in epn.items():
        if key not in _GA4_DATA_PARAMS and number is not None:
            custom.setdefault(key, number)
    value = epn.get("value")
    data = _data(
        value=value if value is not None else ep.get("value"),
        currency=params.get("cu") if params.get("cu") is not None else ep.get("currency"),
        order_id=transaction_id,
        contents=_ga4_items(params),
        search_string=ep.get("search_term"),
        custom=_custom(custom, numbers=True),
    )
    consent: dict[str, str] | None = None
    gcs = params.get("gcs")
    if isinstance(gcs, str) and (m := _GCS_RE.fullmatch(gcs)) is not None:
        consent = {
            "ad_storage": "granted" if m[1] == "1" else "denied",
            "analytics_storage": "granted" if m[2] == "1" else "denied",
        }
    event = _event(
        name,
        event_id=event_id,
        when=_client_time(None, now),
        url=_url(params.get("dl")),
        referrer=_url(params.get("dr")),
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
        value_text = _text(params.get(param), MAX_ID)
        if value_text is not None and (pattern is None or pattern.fullmatch(value_text)):
            vendor_ids[key] = value_text
    return Hit("ga4", _vendor_id(params.get("tid")), event, vendor_ids)


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
        content = _content(fields.get("id"), fields.get("qt"), fields.get("pr"))
        if content is not None:
            contents.append(content)
    return contents


# --- building blocks ----------------------------------------------------------------------------


def _event(
    name: str,
    *,
    event_id: str | None,
    when: int,
    url: str | None,
    referrer: str | None,
    user: dict[str, Any],
    data: dict[str, Any],
    consent: dict[str, str] | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {"event": name}
    _put(event, "event_id", event_id)
    event["time"] = when
    if url is not None:
        event["url"] = url
        event["source"] = "website"
    _put(event, "referrer", referrer)
    event["user"] = user
    event["data"] = data
    _put(event, "consent", consent)
    return event


def _data(
    *,
    value: object = None,
    currency: object = None,
    order_id: object = None,
    contents: list[dict[str, Any]] | None = None,
    content_type: object = None,
    content_name: object = None,
    content_category: object = None,
    num_items: object = None,
    search_string: object = None,
    status: object = None,
    predicted_ltv: object = None,
    custom: dict[str, str | float | bool] | None = None,
) -> dict[str, Any]:
    """Return a canonical ``data`` object holding only the valid fields among the given ones."""
    out: dict[str, Any] = {}
    _put(out, "value", _number(value))
    code = _text(currency, 3)
    _put(out, "currency", code.upper() if code and _CURRENCY_RE.fullmatch(code) else None)
    _put(out, "order_id", _text(order_id, MAX_ID, numbers=True))
    if contents:
        out["contents"] = contents[:MAX_CONTENTS]
    _put(out, "content_type", _text(content_type, MAX_NAME))
    _put(out, "content_name", _text(content_name, MAX_TEXT))
    _put(out, "content_category", _text(content_category, MAX_TEXT))
    _put(out, "num_items", _count(num_items))
    _put(out, "search_string", _text(search_string, MAX_TEXT))
    _put(out, "status", _text(status, MAX_NAME))
    _put(out, "predicted_ltv", _number(predicted_ltv))
    if custom:
        out["custom"] = custom
    return out


def _custom(raw: Mapping[str, object], *, numbers: bool) -> dict[str, str | float | bool]:
    """Keep safe keys with string values (and, when `numbers`, finite numbers and booleans)."""
    out: dict[str, str | float | bool] = {}
    for key, value in raw.items():
        if len(out) >= MAX_CUSTOM_KEYS:
            break
        if not _CUSTOM_KEY_RE.fullmatch(key):
            continue
        if numbers and isinstance(value, bool):
            out[key] = value
        elif numbers and isinstance(value, int | float):
            number = _number(value)
            if number is not None:
                out[key] = number
        elif (text := _text(value, MAX_TEXT)) is not None:
            out[key] = text
    return out


def _contents_json(raw: object, id_key: str, price_key: str) -> list[dict[str, Any]]:
    """Return contents from a list (or JSON array text) of objects with id/quantity/price."""
    items = _json_text(raw) if isinstance(raw, str) else raw
    if not isinstance(items, list):
        return []
    contents: list[dict[str, Any]] = []
    for item in items[:MAX_CONTENTS]:
        if isinstance(item, dict):
            price = item.get(price_key)
            content = _content(
                item.get(id_key),
                item.get("quantity"),
                price if price is not None else item.get("price"),
            )
            if content is not None:
                contents.append(content)
    return contents


def _content_ids(raw: object, *, split_commas: bool = False) -> list[dict[str, Any]]:
    """Return id-only contents from a list, a JSON array text or a single id."""
    ids: object = raw
    if isinstance(raw, str):
        if raw.lstrip().startswith("["):
            ids = _json_text(raw)
        elif split_commas:
            ids = raw.split(",", MAX_CONTENTS)[:MAX_CONTENTS]
        else:
            ids = [raw]
    elif isinstance(raw, int) and not isinstance(raw, bool):
        ids = [raw]
    if not isinstance(ids, list):
        return []
    contents: list[dict[str, Any]] = []
    for item in ids[:MAX_CONTENTS]:
        content = _content(item, None, None)
        if content is not None:
            contents.append(content)
    return contents


def _content(raw_id: object, quantity: object, price: object) -> dict[str, Any] | None:
    content_id = _text(raw_id, MAX_ID, numbers=True)
    if content_id is None:
        return None
    content: dict[str, Any] = {"id": content_id}
    _put(content, "quantity", _count(quantity))
    _put(content, "price", _number(price))
    return content


def _digests(raw: object, *, many: bool) -> str | list[str] | None:
    """Return 64-hex SHA-256 digests only (a list of up to MAX_LIST when `many`)."""
    if isinstance(raw, str):
        return raw.strip() if _SHA256_RE.fullmatch(raw.strip()) else None
    if many and isinstance(raw, list):
        kept = [v.strip() for v in raw[:MAX_LIST] if isinstance(v, str)]
        kept = [v for v in kept if _SHA256_RE.fullmatch(v)]
        return kept or None
    return None


def _cookie(raw: object, parse: Callable[[object], object | None]) -> str | None:
    text = _text(raw, 500)
    return text if text is not None and parse(text) is not None else None


def _put(out: dict[str, Any], key: str, value: object) -> None:
    if value is not None:
        out[key] = value


# --- scalar checks ------------------------------------------------------------------------------


def _text(raw: object, max_len: int, *, numbers: bool = False) -> str | None:
    """Return the stripped string if it is 1..max_len characters without control characters."""
    if numbers and isinstance(raw, int) and not isinstance(raw, bool) and abs(raw) < 10**20:
        raw = str(raw)
    if not isinstance(raw, str) or len(raw) > MAX_BODY:
        return None
    text = raw.strip()
    if not text or len(text) > max_len:
        return None
    if not (text.isascii() and text.isprintable()) and _BAD_CHARS_RE.search(text):
        return None  # (printable ASCII, the usual case, has no control or surrogate)
    return text


def _name(raw: object) -> str | None:
    return raw if isinstance(raw, str) and _NAME_RE.fullmatch(raw) else None


def _url(raw: object) -> str | None:
    text = _text(raw, MAX_URL)
    return text if text is not None and _URL_RE.match(text) else None


def _vendor_id(raw: object) -> str | None:
    text = _text(raw, 64, numbers=True)
    return text if text is not None and _VENDOR_ID_RE.fullmatch(text) else None


def _float(raw: object, limit: float) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return float(raw) if abs(raw) <= limit else None
    if isinstance(raw, str):
        text = raw.strip()
        if len(text) > 40:
            return None
        if not (text.isdigit() and text.isascii()) and not _NUMBER_RE.fullmatch(text):
            return None
        raw = float(text)
    if isinstance(raw, float) and math.isfinite(raw) and abs(raw) <= limit:
        return raw
    return None


def _number(raw: object) -> float | None:
    """Return a finite number of magnitude at most 1e12 (parse_event's bound), else None."""
    return _float(raw, _MAX_NUMBER)


def _count(raw: object) -> int | None:
    """Return a whole number in 0..1_000_000 (parse_event's integer rule), else None."""
    number = _float(raw, 1_000_000)
    if number is None or number < 0 or not number.is_integer():
        return None
    return int(number)


def _epoch(raw: object) -> float | None:
    """Return unix seconds from unix seconds or milliseconds (>= 1e11), else None."""
    number = _float(raw, 1e16)
    if number is None or number < 0:
        return None
    if number >= _MS_THRESHOLD:
        number /= 1000
    return number if number < _MS_THRESHOLD else None


def _any_time(raw: object) -> float | None:
    """Return unix seconds from an ISO-8601 string with a zone, or from s/ms numbers."""
    if isinstance(raw, str) and not _NUMBER_RE.fullmatch(raw.strip()):
        text = raw.strip()
        if len(text) > 40:
            return None
        try:
            stamp = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            return stamp.timestamp() if stamp.tzinfo is not None else None
        except (ValueError, OverflowError):
            return None
    return _epoch(raw)


def _client_time(seconds: float | None, now: float) -> int:
    """Apply the time rule of the module docstring (clamp the future, distrust old clocks)."""
    if seconds is None or seconds > now or seconds < now - MAX_CLIENT_LAG:
        seconds = now
    return int(seconds)


# --- containers ---------------------------------------------------------------------------------


def _pairs(
    source: object, long_values: Mapping[str, int] | None = None
) -> list[tuple[str, object]]:
    """Return the first MAX_PARAMS (str, str) pairs of a mapping or a sequence of pairs.

    Values longer than MAX_VALUE are skipped (or than ``long_values[name]`` for those names);
    anything that is not a pair of strings is skipped.
    """
    items: Iterable[object]
    if isinstance(source, list | tuple):  # the usual case first (an ABC check costs more)
        items = source
    elif isinstance(source, Mapping):
        items = source.items()
    elif isinstance(source, Iterable) and not isinstance(source, str | bytes | bytearray):
        items = source
    else:
        return []
    out: list[tuple[str, object]] = []
    for item in islice(items, MAX_PARAMS):
        if not isinstance(item, tuple) or len(item) != 2:
            continue
        key, value = item
        if not isinstance(key, str) or not isinstance(value, str) or len(key) > 256:
            continue
        if len(value) <= MAX_VALUE or (
            long_values is not None and len(value) <= long_values.get(key, MAX_VALUE)
        ):
            out.append((key, value))
    return out


def _merge(*sources: Iterable[tuple[str, object]]) -> dict[str, object]:
    """Return name → value; earlier sources win, and within one the first occurrence wins."""
    params: dict[str, object] = {}
    for source in sources:
        for key, value in source:
            params.setdefault(key, value)
    return params


def _query_string(text: str) -> Iterable[tuple[str, str]]:
    """Yield the decoded pairs of a URL-encoded query string (first MAX_PARAMS, bounded)."""
    for pair in islice(text.split("&", MAX_PARAMS), MAX_PARAMS):
        raw_key, _, raw_value = pair.partition("=")
        if not raw_key or len(raw_key) > 3 * 256 or len(raw_value) > 3 * MAX_VALUE:
            continue
        key, value = unquote_plus(raw_key), unquote_plus(raw_value)
        if len(key) <= 256 and len(value) <= MAX_VALUE:
            yield key, value


def _json(body: object) -> object:
    """Return the JSON document of a body of at most MAX_BODY bytes, or None."""
    if not isinstance(body, bytes | bytearray) or len(body) > MAX_BODY:
        return None
    try:
        return json.loads(bytes(body))
    except (ValueError, RecursionError):
        return None


def _json_text(text: str) -> object:
    if len(text) > MAX_BODY:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _obj(raw: object) -> dict[str, Any]:
    return raw if isinstance(raw, dict) else {}


def _small(value: object, limit: int) -> bool:
    """Tell whether a JSON value is a scalar or a short list (strings at most `limit` chars)."""
    if isinstance(value, str):
        return len(value) <= limit
    if isinstance(value, list):
        return len(value) <= MAX_CONTENTS
    return value is None or isinstance(value, bool | int | float)
