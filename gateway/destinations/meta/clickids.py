"""Meta's click id (``fbclid``) and first-party cookies ``_fbc`` and ``_fbp`` (pure).

platforms.md §1.4, §10.2 and §11 pitfall 4; browser.md §2.1, §2.2. Formats:

* ``_fbc`` ``fb.<subdomainIndex>.<creation ms>.<fbclid>[.<appendix>]`` and ``_fbp``
  ``fb.<subdomainIndex>.<creation ms>.<random digits>[.<appendix>]``; the index is one digit,
  the time 10-16 digits when parsed (the event parser's rule) but exactly 13 when we format (a
  time in seconds is pitfall 4), the appendix (Meta's param builder) 2 or 8 base64url
  characters. Parsed values keep their exact original string (``value``).
* fbclid is base64url only and at most 400 characters (a dot would break the ``_fbc``
  segments). Lifetimes: 90 days.
* ``_fbc`` is a CLICK cookie (rewritten only when the fbclid differs), ``_fbp`` a VISITOR
  cookie (a new one: 31 random bits, as Meta's param builder).
* Attribution: the default setting is "7-day click"; events older than 7 days are refused. A
  click found on another device travels as ``fbc`` (``fbc_for_click``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from gateway.core.clickids import (
    ClickIdParam,
    CookieKind,
    CookieSpec,
    check_digits,
    check_index,
    validating,
)
from gateway.core.crossdevice import ClickWindow

__all__ = [
    "CLICK_IDS",
    "CLICK_WINDOW",
    "COOKIES",
    "FBCLID",
    "Fbc",
    "Fbp",
    "fbc_for_click",
    "format_fbc",
    "format_fbp",
    "parse_fbc",
    "parse_fbp",
]

FBCLID: Final = ClickIdParam("fbclid", re.compile(r"[A-Za-z0-9_-]{1,400}"))

_APPENDIX: Final = r"(?:\.([A-Za-z0-9_-]{2}|[A-Za-z0-9_-]{8}))?"
_FBC_RE: Final = re.compile(r"fb\.(\d)\.(\d{10,16})\.([A-Za-z0-9_-]{1,400})" + _APPENDIX)
_FBP_RE: Final = re.compile(r"fb\.(\d)\.(\d{10,16})\.(\d{1,20})" + _APPENDIX)


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


def format_fbc(fbclid: str, created_ms: int, subdomain_index: int = 1) -> str:
    """Return the ``_fbc`` value ``fb.<index>.<ms>.<fbclid>`` (fbclid unchanged; 13-digit ms)."""
    check_index(subdomain_index)
    check_digits("created_ms", created_ms, 13, 13)
    if FBCLID.valid(fbclid) is None:
        raise ValueError("fbclid must be 1-400 base64url characters")
    return f"fb.{subdomain_index}.{created_ms}.{fbclid}"


def parse_fbc(value: object) -> Fbc | None:
    """Return the parts of a 4- or 5-segment ``_fbc`` value, or None if malformed."""
    if not isinstance(value, str) or (m := _FBC_RE.fullmatch(value)) is None:
        return None
    return Fbc(int(m[1]), int(m[2]), m[3], m[4], value)


def format_fbp(created_ms: int, random_int: int, subdomain_index: int = 1) -> str:
    """Return the ``_fbp`` value ``fb.<index>.<ms>.<random>`` (13-digit ms)."""
    check_index(subdomain_index)
    check_digits("created_ms", created_ms, 13, 13)
    check_digits("random_int", random_int, 1, 20)
    return f"fb.{subdomain_index}.{created_ms}.{random_int}"


def parse_fbp(value: object) -> Fbp | None:
    """Return the parts of a 4- or 5-segment ``_fbp`` value, or None if malformed."""
    if not isinstance(value, str) or (m := _FBP_RE.fullmatch(value)) is None:
        return None
    return Fbp(int(m[1]), int(m[2]), int(m[3]), m[4], value)


def _fbclid_of(value: str) -> str | None:
    fbc = parse_fbc(value)
    return None if fbc is None else fbc.fbclid


def _new_fbp(now_ms: int, random_bits: Callable[[int], int], subdomain_index: int) -> str:
    return format_fbp(now_ms, random_bits(31), subdomain_index)


def fbc_for_click(browser_ids: Mapping[str, str], fbclid: str, seen: float) -> str | None:
    """Return the clicking visitor's ``_fbc`` when it holds `fbclid`, else one built from the
    click (first seen at `seen`, unix seconds); None if no valid one can be built."""
    cookie = parse_fbc(browser_ids.get("_fbc"))
    if cookie is not None and cookie.fbclid == fbclid:
        return cookie.value
    index = cookie.subdomain_index if cookie is not None else 1
    try:
        return format_fbc(fbclid, int(seen * 1000), index)
    except ValueError:  # not a valid fbclid or time: Meta gets no fbc rather than a bad one
        return None


CLICK_IDS: Final = (FBCLID,)
COOKIES: Final = (
    CookieSpec(
        "_fbc",
        CookieKind.CLICK,
        90,
        validating(parse_fbc),
        click_id="fbclid",
        build=format_fbc,
        click_of=_fbclid_of,
        carried=True,
    ),
    CookieSpec(
        "_fbp", CookieKind.VISITOR, 90, validating(parse_fbp), create=_new_fbp, carried=True
    ),
)
CLICK_WINDOW: Final = ClickWindow("meta", ("fbclid",), 7.0, carried_as_fbc=fbc_for_click)
