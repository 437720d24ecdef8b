"""Click ids from landing URLs, and the vendor cookie values built from them (pure).

The clock and randomness are parameters (``now_ms``, ``random_bits``): nothing here reads the
time, draws random numbers or does I/O. Sources: platforms.md §1.4 (Meta ``_fbc``/``_fbp``),
§3.3 (Snap), §4.3 (Google), §8 (Microsoft), §10.2 (click-id table) and §11 pitfalls 4, 21, 28;
browser.md §2.1 (cookie formats, observed values), §2.2 (server-side re-setting), §1.8 (lifetimes).

Rules:

* ``capture`` reads these query parameters: fbclid, gclid, gbraid, wbraid, ttclid, ScCid (name
  matched case-insensitively, as Snap's own tag does), msclkid, li_fat_id, epik, rdt_cid, twclid.
  Other names are case-sensitive. Keys come back lower-case (``sccid``). A missing or invalid id
  in the page URL is taken from the referrer's query (Meta's param builder does this for fbclid,
  Snap's tag for ScCid). The query is percent-decoded once (``+`` is a space, as in forms) and the
  value is never re-cased, trimmed or decoded again: fbclid and gclid are case-sensitive and a
  modified gclid is refused by Google (pitfall 21). The first valid occurrence wins.
* Value checks: every id is 1-500 of ``A-Z a-z 0-9 . _ ~ -`` (the event parser's rule, so a
  captured id is always accepted by ``parse_event``); fbclid is base64url only and at most 400
  characters (a dot would break the ``_fbc`` segments); msclkid is 32 hex digits. Anything else
  is ignored, never repaired.
* Cookie formats (a parser/validator returns ``None`` for a malformed value; a formatter raises
  ``ValueError`` on inputs it could not format validly, which is a programming error):

  - ``_fbc`` ``fb.<subdomainIndex>.<creation ms>.<fbclid>[.<appendix>]`` and ``_fbp``
    ``fb.<subdomainIndex>.<creation ms>.<random digits>[.<appendix>]``; the index is one digit,
    the time 10-16 digits when parsed (the event parser's rule) but exactly 13 when we format (a
    time in seconds is pitfall 4), the appendix (Meta's param builder) 2 or 8 base64url
    characters. Parsed values keep their exact original string (``value``).
  - ``_gcl_aw`` ``GCL.<unix seconds>.<gclid>`` (9-11 digits parsed, 10 formatted).
  - ``ttclid`` = the raw ttclid; ``_scclid`` = the raw ScCid; ``_uetmsclkid`` = ``_uet`` + the
    32-hex msclkid (strip the prefix before sending, pitfall 28).
  - ``_ttp``: opaque; pixels have written 27 base64url characters (``2F7h37YkS1j57AYSKTI7IHhJPYH``)
    and, lately, a ULID plus ``_.tt.1``. Accepted: 16-64 base64url characters, then up to three
    ``.<token>`` parts. Created by us as base64url of 160 random bits (27 characters).
  - ``_scid``: a UUID (older pixels) or 32 base64url characters (newer pixels); accepted as 16-64
    base64url characters. Created by us as a lower-case UUID v4 string.

* Only these eight cookies are managed. ``_gcl_au``, ``_epik``, ``li_fat_id``, ``_rdt_cid`` and
  ``_twclid`` are never written: their formats are undocumented or unverified and we must not
  invent values for formats we do not control (browser.md §2.2). Their click ids still reach the
  server APIs through ``capture``.
* ``plan_cookies`` decides what to (re)issue on a hit; its docstring holds the rules.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

__all__ = [
    "CLICK_ID_PARAMS",
    "COOKIE_MAX_AGE_DAYS",
    "MAX_QUERY_CHARS",
    "VENDOR_COOKIES",
    "Fbc",
    "Fbp",
    "GclAw",
    "capture",
    "click_ids_from_cookies",
    "format_fbc",
    "format_fbp",
    "format_gcl_aw",
    "format_scid",
    "format_ttp",
    "format_uetmsclkid",
    "parse_fbc",
    "parse_fbp",
    "parse_gcl_aw",
    "parse_uetmsclkid",
    "plan_cookies",
    "valid_click_id",
]

_SAFE_ID: Final = re.compile(r"[A-Za-z0-9._~-]{1,500}")

CLICK_ID_PARAMS: Final[Mapping[str, re.Pattern[str]]] = {
    "fbclid": re.compile(r"[A-Za-z0-9_-]{1,400}"),
    "gclid": _SAFE_ID,
    "gbraid": _SAFE_ID,
    "wbraid": _SAFE_ID,
    "ttclid": _SAFE_ID,
    "sccid": _SAFE_ID,
    "msclkid": re.compile(r"[0-9A-Fa-f]{32}"),
    "li_fat_id": _SAFE_ID,
    "epik": _SAFE_ID,
    "rdt_cid": _SAFE_ID,
    "twclid": _SAFE_ID,
}
"""Click-id key (lower-case) → the pattern its whole value must match."""

MAX_QUERY_CHARS: Final = 16_384
"""Query characters examined per URL; a pair reaching past this bound is ignored, not cut."""

COOKIE_MAX_AGE_DAYS: Final[Mapping[str, int]] = {
    "_fbc": 90,
    "_fbp": 90,
    "_gcl_aw": 90,
    "ttclid": 395,
    "_ttp": 395,
    "_scid": 395,
    "_scclid": 365,
    "_uetmsclkid": 90,
}
"""Vendor lifetimes: Meta/Google 90 d, TikTok and Snap pixels ~13 months, Snap's tag 1 y for
``_scclid`` (browser.md §2.1, platforms.md §1.4, §3.3), UET 90 d; all below the 400-day cap."""

_APPENDIX: Final = r"(?:\.([A-Za-z0-9_-]{2}|[A-Za-z0-9_-]{8}))?"
_FBC_RE: Final = re.compile(r"fb\.(\d)\.(\d{10,16})\.([A-Za-z0-9_-]{1,400})" + _APPENDIX)
_FBP_RE: Final = re.compile(r"fb\.(\d)\.(\d{10,16})\.(\d{1,20})" + _APPENDIX)
_GCL_AW_RE: Final = re.compile(r"GCL\.([1-9]\d{8,10})\.([A-Za-z0-9._~-]{1,500})")
_TTP_RE: Final = re.compile(r"[A-Za-z0-9_-]{16,64}(?:\.[A-Za-z0-9_-]{1,16}){0,3}")
_SCID_RE: Final = re.compile(r"[A-Za-z0-9_-]{16,64}")
_UETMSCLKID_RE: Final = re.compile(r"_uet([0-9A-Fa-f]{32})")


@dataclass(frozen=True, slots=True)
class Fbc:
    """A parsed ``_fbc`` value; ``value`` is the exact original string."""

    subdomain_index: int
    created_ms: int
    fbclid: str
    appendix: str | None
    value: str


@dataclass(frozen=True, slots=True)
class Fbp:
    """A parsed ``_fbp`` value; ``value`` is the exact original string."""

    subdomain_index: int
    created_ms: int
    random: int
    appendix: str | None
    value: str


@dataclass(frozen=True, slots=True)
class GclAw:
    """A parsed ``_gcl_aw`` value; ``value`` is the exact original string."""

    created_s: int
    gclid: str
    value: str


def valid_click_id(key: str, value: object) -> str | None:
    """Return `value` if it is a well-formed click id for `key` (lower-case), else None."""
    pattern = CLICK_ID_PARAMS.get(key)
    if pattern is None or not isinstance(value, str) or not pattern.fullmatch(value):
        return None
    return value


def capture(url: str | None, referrer: str | None) -> dict[str, str]:
    """Return the valid click ids of `url`'s query, each missing one taken from `referrer`'s."""
    found = _query_click_ids(url)
    for key, value in _query_click_ids(referrer).items():
        found.setdefault(key, value)
    return found


def _query_click_ids(url: object) -> dict[str, str]:
    if not isinstance(url, str):
        return {}
    query = url.partition("#")[0].partition("?")[2][: MAX_QUERY_CHARS + 1]
    found: dict[str, str] = {}
    start = 0
    for pair in query.split("&"):
        end = start + len(pair)
        if end > MAX_QUERY_CHARS:
            break
        start = end + 1
        raw_name, eq, raw_value = pair.partition("=")
        if not eq:
            continue
        key = _param_key(_form_decode(raw_name))
        if key is None or key in found:
            continue
        value = valid_click_id(key, _form_decode(raw_value))
        if value is not None:
            found[key] = value
    return found


def _param_key(name: str) -> str | None:
    if name in CLICK_ID_PARAMS and name != "sccid":
        return name
    return "sccid" if name.lower() == "sccid" else None


def _form_decode(text: str) -> str:
    # One percent-decoding pass; invalid UTF-8 becomes U+FFFD, which no id pattern accepts.
    return unquote(text.replace("+", " "))


def format_fbc(fbclid: str, created_ms: int, subdomain_index: int = 1) -> str:
    """Return the ``_fbc`` value ``fb.<index>.<ms>.<fbclid>`` (fbclid unchanged; 13-digit ms)."""
    _check_index(subdomain_index)
    _check_digits("created_ms", created_ms, 13, 13)
    if valid_click_id("fbclid", fbclid) is None:
        raise ValueError("fbclid must be 1-400 base64url characters")
    return f"fb.{subdomain_index}.{created_ms}.{fbclid}"


def parse_fbc(value: object) -> Fbc | None:
    """Return the parts of a 4- or 5-segment ``_fbc`` value, or None if malformed."""
    if not isinstance(value, str) or (m := _FBC_RE.fullmatch(value)) is None:
        return None
    return Fbc(int(m[1]), int(m[2]), m[3], m[4], value)


def format_fbp(created_ms: int, random_int: int, subdomain_index: int = 1) -> str:
    """Return the ``_fbp`` value ``fb.<index>.<ms>.<random>`` (13-digit ms)."""
    _check_index(subdomain_index)
    _check_digits("created_ms", created_ms, 13, 13)
    _check_digits("random_int", random_int, 1, 20)
    return f"fb.{subdomain_index}.{created_ms}.{random_int}"


def parse_fbp(value: object) -> Fbp | None:
    """Return the parts of a 4- or 5-segment ``_fbp`` value, or None if malformed."""
    if not isinstance(value, str) or (m := _FBP_RE.fullmatch(value)) is None:
        return None
    return Fbp(int(m[1]), int(m[2]), int(m[3]), m[4], value)


def format_gcl_aw(gclid: str, created_s: int) -> str:
    """Return the ``_gcl_aw`` value ``GCL.<unix seconds>.<gclid>`` (gclid unchanged; 10 digits)."""
    _check_digits("created_s", created_s, 10, 10)
    if valid_click_id("gclid", gclid) is None:
        raise ValueError("gclid must be 1-500 URL-safe characters")
    return f"GCL.{created_s}.{gclid}"


def parse_gcl_aw(value: object) -> GclAw | None:
    """Return the parts of a ``_gcl_aw`` value, or None if malformed."""
    if not isinstance(value, str) or (m := _GCL_AW_RE.fullmatch(value)) is None:
        return None
    return GclAw(int(m[1]), m[2], value)


def format_ttp(random_160: int) -> str:
    """Return a new ``_ttp`` value: 160 random bits as 27 base64url characters."""
    _check_bits("random_160", random_160, 160)
    return base64.urlsafe_b64encode(random_160.to_bytes(20, "big")).decode("ascii").rstrip("=")


def format_scid(random_128: int) -> str:
    """Return a new ``_scid`` value: a lower-case UUID v4 made from 128 random bits."""
    _check_bits("random_128", random_128, 128)
    bits = (random_128 & ~(0xF << 76) & ~(0x3 << 62)) | (0x4 << 76) | (0x2 << 62)
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def format_uetmsclkid(msclkid: str) -> str:
    """Return the ``_uetmsclkid`` value ``_uet<msclkid>``."""
    if valid_click_id("msclkid", msclkid) is None:
        raise ValueError("msclkid must be 32 hex digits")
    return "_uet" + msclkid


def parse_uetmsclkid(value: object) -> str | None:
    """Return the msclkid inside a ``_uetmsclkid`` value (prefix stripped), or None."""
    if not isinstance(value, str) or (m := _UETMSCLKID_RE.fullmatch(value)) is None:
        return None
    return m[1]


def _matching(pattern: re.Pattern[str]) -> Callable[[str], str | None]:
    def validate(value: str) -> str | None:
        return value if pattern.fullmatch(value) else None

    return validate


def _via(parse: Callable[[object], object | None]) -> Callable[[str], str | None]:
    def validate(value: str) -> str | None:
        return value if parse(value) is not None else None

    return validate


VENDOR_COOKIES: Final[Mapping[str, Callable[[str], str | None]]] = {
    "_fbc": _via(parse_fbc),
    "_fbp": _via(parse_fbp),
    "_gcl_aw": _via(parse_gcl_aw),
    "ttclid": _matching(CLICK_ID_PARAMS["ttclid"]),
    "_ttp": _matching(_TTP_RE),
    "_scid": _matching(_SCID_RE),
    "_scclid": _matching(CLICK_ID_PARAMS["sccid"]),
    "_uetmsclkid": _via(parse_uetmsclkid),
}
"""Managed vendor cookie name → validator returning the value unchanged, or None if malformed."""


def click_ids_from_cookies(cookies: Mapping[str, str]) -> dict[str, str]:
    """Return ``User.click_ids`` entries (gclid, ttclid, ttp, sccid, scid, msclkid) from cookies."""
    out: dict[str, str] = {}
    if (gcl := parse_gcl_aw(cookies.get("_gcl_aw"))) is not None:
        out["gclid"] = gcl.gclid
    for name, key in (("ttclid", "ttclid"), ("_ttp", "ttp"), ("_scclid", "sccid")):
        if (raw := cookies.get(name)) is not None and VENDOR_COOKIES[name](raw) is not None:
            out[key] = raw
    if (raw := cookies.get("_scid")) is not None and VENDOR_COOKIES["_scid"](raw) is not None:
        out["scid"] = raw
    if (msclkid := parse_uetmsclkid(cookies.get("_uetmsclkid"))) is not None:
        out["msclkid"] = msclkid
    return out


def plan_cookies(
    *,
    click_ids: Mapping[str, str],
    existing: Mapping[str, str],
    profile_values: Mapping[str, str],
    now_ms: int,
    random_bits: Callable[[int], int],
    subdomain_index: int,
) -> dict[str, str]:
    """Return cookie name → value for every vendor cookie to (re)issue on this hit.

    Inputs: `click_ids` from ``capture`` (lower-case keys), `existing` request cookies and the
    visitor profile's last known values (`profile_values`), both keyed by cookie name;
    `random_bits(k)` returns a random int of k bits (``secrets.randbits``); `subdomain_index` is
    ``labels(cookie domain) - 1`` (platforms.md §1.4). Invalid inputs are ignored. A value is
    *known* when the existing cookie, else the profile value, passes its validator. Rules:

    * ``_fbc``: a new fbclid equal to a known value's fbclid keeps that value (and so its first
      creation time and appendix); a different or first fbclid gives ``fb.<index>.<now_ms>.<id>``
      (platforms.md §1.4: rewrite only when the fbclid differs). No fbclid: the known value.
    * ``_gcl_aw``: the same with gclid and ``GCL.<now s>.<gclid>``.
    * ``ttclid``, ``_scclid``, ``_uetmsclkid``: built from the new click id, else the known value.
    * ``_fbp``, ``_ttp``, ``_scid`` (visitor ids, one per visitor): the known value, else a new
      one (``_fbp`` random of 31 bits as Meta's param builder, ``_ttp`` 160 bits, ``_scid`` 128).
    * A cookie with no valid value is left out: a malformed cookie is replaced when something
      replaces it, otherwise not re-issued (never deleted: it may be a vendor format we do not
      know, which its own script still reads).

    Every emitted value passes ``VENDOR_COOKIES[name]``; ``random_bits`` is called only for
    visitor ids that must be created, in the order ``_fbp``, ``_ttp``, ``_scid``.
    """
    plan: dict[str, str] = {}

    def known(name: str) -> list[str]:
        check = VENDOR_COOKIES[name]
        return [
            raw
            for raw in (existing.get(name), profile_values.get(name))
            if isinstance(raw, str) and check(raw) is not None
        ]

    def fresh(key: str) -> str | None:
        return valid_click_id(key, click_ids.get(key))

    fbclid = fresh("fbclid")
    fbcs = [fbc for raw in known("_fbc") if (fbc := parse_fbc(raw)) is not None]
    if fbclid is not None:
        same = next((fbc.value for fbc in fbcs if fbc.fbclid == fbclid), None)
        plan["_fbc"] = same or format_fbc(fbclid, now_ms, subdomain_index)
    elif fbcs:
        plan["_fbc"] = fbcs[0].value

    gclid = fresh("gclid")
    gcls = [gcl for raw in known("_gcl_aw") if (gcl := parse_gcl_aw(raw)) is not None]
    if gclid is not None:
        same = next((gcl.value for gcl in gcls if gcl.gclid == gclid), None)
        plan["_gcl_aw"] = same or format_gcl_aw(gclid, now_ms // 1000)
    elif gcls:
        plan["_gcl_aw"] = gcls[0].value

    builders: tuple[tuple[str, str, Callable[[str], str]], ...] = (
        ("ttclid", "ttclid", str),
        ("_scclid", "sccid", str),
        ("_uetmsclkid", "msclkid", format_uetmsclkid),
    )
    for name, key, build in builders:
        click_id = fresh(key)
        values = known(name)
        if click_id is not None:
            plan[name] = build(click_id)
        elif values:
            plan[name] = values[0]

    creators: tuple[tuple[str, Callable[[], str]], ...] = (
        ("_fbp", lambda: format_fbp(now_ms, random_bits(31), subdomain_index)),
        ("_ttp", lambda: format_ttp(random_bits(160))),
        ("_scid", lambda: format_scid(random_bits(128))),
    )
    for name, create in creators:
        values = known(name)
        plan[name] = values[0] if values else create()
    return plan


def _check_index(subdomain_index: int) -> None:
    if type(subdomain_index) is not int or not 0 <= subdomain_index <= 9:
        raise ValueError("subdomain_index must be 0-9")


def _check_digits(name: str, number: int, low: int, high: int) -> None:
    if type(number) is not int or number < 0:
        raise ValueError(f"{name} must be a non-negative int")
    if not low <= len(str(number)) <= high:
        raise ValueError(f"{name} must have {low}-{high} digits")


def _check_bits(name: str, number: int, bits: int) -> None:
    if type(number) is not int or not 0 <= number < 1 << bits:
        raise ValueError(f"{name} must be an int of at most {bits} bits")
