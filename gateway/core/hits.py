"""Pixel hits → canonical events: what every vendor's hit parser shares (pure).

Each vendor's parser lives with its platform (``gateway/destinations/<name>/hits.py``: Meta
``/tr``, TikTok, Snap, GA4); this module holds the ``Hit`` value, the bounds and the field,
number, URL and container helpers they all use, so that every parser applies the same rules.

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
``POST /v1/events`` looks like, ready for ``gateway.core.eventparse.parse_event``::

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
  ``fbp``/``fbc`` must parse as Meta cookies (``parse_fbp``/``parse_fbc`` of
  ``destinations/meta/clickids.py``), ``ttclid`` as a click id. Click ids in the page URL
  (``fbclid``, ``gclid``…) are captured later by the gateway, not here.
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
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import unquote_plus

from gateway.core.eventschema import (
    MAX_CONTENTS,
    MAX_CUSTOM_KEYS,
    MAX_ID,
    MAX_LIST,
    MAX_NAME,
    MAX_TEXT,
    MAX_URL,
)

__all__ = [
    "MAX_BODY",
    "MAX_CLIENT_LAG",
    "MAX_PARAMS",
    "MAX_PII_LEN",
    "MAX_VALUE",
    "NAME_RE",
    "Hit",
    "HitParser",
    "any_time",
    "as_object",
    "clean_text",
    "client_time",
    "content_ids",
    "content_item",
    "contents_json",
    "custom_fields",
    "data_doc",
    "digests",
    "epoch_seconds",
    "event_doc",
    "event_name",
    "finite_number",
    "guarded",
    "http_url",
    "json_body",
    "merged",
    "param_pairs",
    "put",
    "query_pairs",
    "small_value",
    "valid_cookie",
    "vendor_id",
]

MAX_PARAMS: Final = 200
"""Parameters (query pairs, form fields, JSON keys) and GA4 body lines read per hit."""
MAX_VALUE: Final = 4096
"""Longest parameter value read; longer values are ignored."""
MAX_BODY: Final = 65_536
"""Largest body parsed (bytes); larger bodies are forwarded but not mirrored."""
MAX_CLIENT_LAG: Final = 86_400.0
"""Oldest client time believed, in seconds before now; older means a wrong clock."""
MAX_PII_LEN: Final = MAX_TEXT
"""Longest plain identifier value read from a hit."""

NAME_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_ .:\-]{0,99}")
_BAD_CHARS_RE: Final = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_URL_RE: Final = re.compile(r"https?://[^\s/?#]+", re.IGNORECASE)
_CURRENCY_RE: Final = re.compile(r"[A-Za-z]{3}")
_NUMBER_RE: Final = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?")
_CUSTOM_KEY_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_VENDOR_ID_RE: Final = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
_SHA256_RE: Final = re.compile(r"[0-9a-fA-F]{64}")
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


class HitParser(Protocol):
    """A vendor's hit parser as the proxy calls it: the decoded query, the raw body and its
    Content-Type give the hit's events (never raises: a failure gives ``[]``)."""

    def __call__(
        self, query: Sequence[tuple[str, str]], body: bytes, content_type: str, *, now: float
    ) -> list[Hit]:
        """Return the events of one hit."""


# --- guard ------------------------------------------------------------------------------------


def guarded(parse: Callable[[], _T], default: _T) -> _T:
    """Run `parse`; on any exception return `default` (a parse failure never breaks a proxy)."""
    try:
        return parse()
    except Exception:
        return default


# --- building blocks ----------------------------------------------------------------------------


def event_doc(
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
    put(event, "event_id", event_id)
    event["time"] = when
    if url is not None:
        event["url"] = url
        event["source"] = "website"
    put(event, "referrer", referrer)
    event["user"] = user
    event["data"] = data
    put(event, "consent", consent)
    return event


def data_doc(
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
    put(out, "value", finite_number(value))
    code = clean_text(currency, 3)
    put(out, "currency", code.upper() if code and _CURRENCY_RE.fullmatch(code) else None)
    put(out, "order_id", clean_text(order_id, MAX_ID, numbers=True))
    if contents:
        out["contents"] = contents[:MAX_CONTENTS]
    put(out, "content_type", clean_text(content_type, MAX_NAME))
    put(out, "content_name", clean_text(content_name, MAX_TEXT))
    put(out, "content_category", clean_text(content_category, MAX_TEXT))
    put(out, "num_items", whole_count(num_items))
    put(out, "search_string", clean_text(search_string, MAX_TEXT))
    put(out, "status", clean_text(status, MAX_NAME))
    put(out, "predicted_ltv", finite_number(predicted_ltv))
    if custom:
        out["custom"] = custom
    return out


def custom_fields(raw: Mapping[str, object], *, numbers: bool) -> dict[str, str | float | bool]:
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
            number = finite_number(value)
            if number is not None:
                out[key] = number
        elif (text := clean_text(value, MAX_TEXT)) is not None:
            out[key] = text
    return out


def contents_json(raw: object, id_key: str, price_key: str) -> list[dict[str, Any]]:
    """Return contents from a list (or JSON array text) of objects with id/quantity/price."""
    items = json_text(raw) if isinstance(raw, str) else raw
    if not isinstance(items, list):
        return []
    contents: list[dict[str, Any]] = []
    for item in items[:MAX_CONTENTS]:
        if isinstance(item, dict):
            price = item.get(price_key)
            content = content_item(
                item.get(id_key),
                item.get("quantity"),
                price if price is not None else item.get("price"),
            )
            if content is not None:
                contents.append(content)
    return contents


def content_ids(raw: object, *, split_commas: bool = False) -> list[dict[str, Any]]:
    """Return id-only contents from a list, a JSON array text or a single id."""
    ids: object = raw
    if isinstance(raw, str):
        if raw.lstrip().startswith("["):
            ids = json_text(raw)
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
        content = content_item(item, None, None)
        if content is not None:
            contents.append(content)
    return contents


def content_item(raw_id: object, quantity: object, price: object) -> dict[str, Any] | None:
    content_id = clean_text(raw_id, MAX_ID, numbers=True)
    if content_id is None:
        return None
    content: dict[str, Any] = {"id": content_id}
    put(content, "quantity", whole_count(quantity))
    put(content, "price", finite_number(price))
    return content


def digests(raw: object, *, many: bool) -> str | list[str] | None:
    """Return 64-hex SHA-256 digests only (a list of up to MAX_LIST when `many`)."""
    if isinstance(raw, str):
        return raw.strip() if _SHA256_RE.fullmatch(raw.strip()) else None
    if many and isinstance(raw, list):
        kept = [v.strip() for v in raw[:MAX_LIST] if isinstance(v, str)]
        kept = [v for v in kept if _SHA256_RE.fullmatch(v)]
        return kept or None
    return None


def valid_cookie(raw: object, parse: Callable[[object], object | None]) -> str | None:
    text = clean_text(raw, 500)
    return text if text is not None and parse(text) is not None else None


def put(out: dict[str, Any], key: str, value: object) -> None:
    if value is not None:
        out[key] = value


# --- scalar checks ------------------------------------------------------------------------------


def clean_text(raw: object, max_len: int, *, numbers: bool = False) -> str | None:
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


def event_name(raw: object) -> str | None:
    return raw if isinstance(raw, str) and NAME_RE.fullmatch(raw) else None


def http_url(raw: object) -> str | None:
    text = clean_text(raw, MAX_URL)
    return text if text is not None and _URL_RE.match(text) else None


def vendor_id(raw: object) -> str | None:
    text = clean_text(raw, 64, numbers=True)
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


def finite_number(raw: object) -> float | None:
    """Return a finite number of magnitude at most 1e12 (parse_event's bound), else None."""
    return _float(raw, _MAX_NUMBER)


def whole_count(raw: object) -> int | None:
    """Return a whole number in 0..1_000_000 (parse_event's integer rule), else None."""
    number = _float(raw, 1_000_000)
    if number is None or number < 0 or not number.is_integer():
        return None
    return int(number)


def epoch_seconds(raw: object) -> float | None:
    """Return unix seconds from unix seconds or milliseconds (>= 1e11), else None."""
    number = _float(raw, 1e16)
    if number is None or number < 0:
        return None
    if number >= _MS_THRESHOLD:
        number /= 1000
    return number if number < _MS_THRESHOLD else None


def any_time(raw: object) -> float | None:
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
    return epoch_seconds(raw)


def client_time(seconds: float | None, now: float) -> int:
    """Apply the time rule of the module docstring (clamp the future, distrust old clocks)."""
    if seconds is None or seconds > now or seconds < now - MAX_CLIENT_LAG:
        seconds = now
    return int(seconds)


# --- containers ---------------------------------------------------------------------------------


def param_pairs(
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


def merged(*sources: Iterable[tuple[str, object]]) -> dict[str, object]:
    """Return name → value; earlier sources win, and within one the first occurrence wins."""
    params: dict[str, object] = {}
    for source in sources:
        for key, value in source:
            params.setdefault(key, value)
    return params


def query_pairs(text: str) -> Iterable[tuple[str, str]]:
    """Yield the decoded pairs of a URL-encoded query string (first MAX_PARAMS, bounded)."""
    for pair in islice(text.split("&", MAX_PARAMS), MAX_PARAMS):
        raw_key, _, raw_value = pair.partition("=")
        if not raw_key or len(raw_key) > 3 * 256 or len(raw_value) > 3 * MAX_VALUE:
            continue
        key, value = unquote_plus(raw_key), unquote_plus(raw_value)
        if len(key) <= 256 and len(value) <= MAX_VALUE:
            yield key, value


def json_body(body: object) -> object:
    """Return the JSON document of a body of at most MAX_BODY bytes, or None."""
    if not isinstance(body, bytes | bytearray) or len(body) > MAX_BODY:
        return None
    try:
        return json.loads(bytes(body))
    except (ValueError, RecursionError):
        return None


def json_text(text: str) -> object:
    if len(text) > MAX_BODY:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def as_object(raw: object) -> dict[str, Any]:
    return raw if isinstance(raw, dict) else {}


def small_value(value: object, limit: int) -> bool:
    """Tell whether a JSON value is a scalar or a short list (strings at most `limit` chars)."""
    if isinstance(value, str):
        return len(value) <= limit
    if isinstance(value, list):
        return len(value) <= MAX_CONTENTS
    return value is None or isinstance(value, bool | int | float)
