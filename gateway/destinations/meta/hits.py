"""Meta pixel ``/tr`` hits → canonical events, for mirroring to the Conversions API (pure).

platforms.md §1.10 and §11 pitfall 24; the rules every vendor's parser shares are in
``gateway.core.hits``. The usual bodiless hit also has a fast road straight to an Event
(``gateway.destinations.meta.hitwire``), held equal to this one by a differential test.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl

from gateway.core.event import PII_FIELDS
from gateway.core.eventschema import MAX_ID
from gateway.core.hits import (
    MAX_BODY,
    MAX_PII_LEN,
    Hit,
    clean_text,
    client_time,
    content_ids,
    contents_json,
    custom_fields,
    data_doc,
    epoch_seconds,
    event_doc,
    event_name,
    guarded,
    http_url,
    param_pairs,
    put,
    valid_cookie,
    vendor_id,
)
from gateway.destinations.meta.clickids import parse_fbc, parse_fbp

__all__ = ["parse_meta_tr", "read_hits"]

_META_MODES: Final = frozenset({"GET", "FGET", "SB", "POST"})
_META_SKIP_EVENTS: Final = frozenset({"Microdata", "SubscribedButtonClick"})
"""Events the Meta pixel generates by itself (page metadata, automatic button clicks)."""

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

_BRACKET_RE: Final = re.compile(r"(cd|ud)\[([^\[\]]{1,64})\]")
_BRACKET_HEADS: Final = ("cd[", "ud[")


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
    return guarded(lambda: _meta_tr(query, body_form, now), None)


def read_hits(
    query: Sequence[tuple[str, str]], body: bytes, content_type: str, *, now: float
) -> list[Hit]:
    """The proxy's entry (``HitParser``): a POSTed hit's form body is decoded here."""
    form: list[tuple[str, str]] = []
    if body and "json" not in content_type.lower():
        text = body.decode("utf-8", "replace")
        form = parse_qsl(text, keep_blank_values=True, max_num_fields=1000)
    hit = parse_meta_tr(query, form, now=now)
    return [hit] if hit is not None else []


# --- Meta ---------------------------------------------------------------------------------------


def _meta_tr(query: object, body_form: object, now: float) -> Hit | None:
    params: dict[str, object] = {}
    brackets = False
    for source in (body_form, query) if body_form else (query,):  # the body wins
        for key, value in param_pairs(source, _META_LIMITS):
            if key not in params:
                params[key] = value
                brackets = brackets or "[" in key
    name = event_name(params.get("ev"))
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
            put(user, canonical, clean_text(raw, MAX_PII_LEN))
    if "fbp" in params:
        put(user, "fbp", valid_cookie(params["fbp"], parse_fbp))
    if "fbc" in params:
        put(user, "fbc", valid_cookie(params["fbc"], parse_fbc))
    data = _meta_data(cd) if cd else {}  # no cd[…] (a PageView): no data fields
    event = event_doc(
        name,
        event_id=clean_text(params.get("eid"), MAX_ID),
        when=client_time(epoch_seconds(params.get("ts")), now),
        url=http_url(params.get("dl")),
        referrer=http_url(params.get("rl")),
        user=user,
        data=data,
    )
    return Hit("meta", vendor_id(params.get("id")), event)


def _meta_data(cd: Mapping[str, object]) -> dict[str, Any]:
    contents = contents_json(cd.get("contents"), "id", "item_price") or content_ids(
        cd.get("content_ids")
    )
    custom = {k: v for k, v in cd.items() if k not in _META_DATA_KEYS}
    return data_doc(
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
        custom=custom_fields(custom, numbers=False),
    )
