"""Google Ads click ids (``gclid``, ``gbraid``, ``wbraid``) and the ``_gcl_aw`` cookie (pure).

platforms.md §4.3, §10.2 and §11 pitfall 21 (a modified gclid is refused); browser.md §2.1.
``_gcl_aw`` is ``GCL.<unix seconds>.<gclid>`` (9-11 digits parsed, 10 formatted), a CLICK
cookie of 90 days. ``_gcl_au`` is never written (its format is not ours to invent). A
conversion action's click-through window is at most 90 days and usually 30 (its default); a
click outside it fails with EXPIRED_EVENT.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from gateway.core.clickids import (
    SAFE_ID,
    ClickIdParam,
    CookieKind,
    CookieSpec,
    check_digits,
    validating,
)
from gateway.core.crossdevice import ClickWindow

__all__ = [
    "CLICK_IDS",
    "CLICK_WINDOW",
    "COOKIES",
    "GclAw",
    "format_gcl_aw",
    "parse_gcl_aw",
]

GCLID: Final = ClickIdParam("gclid", SAFE_ID)
_GCL_AW_RE: Final = re.compile(r"GCL\.([1-9]\d{8,10})\.([A-Za-z0-9._~-]{1,500})")


@dataclass(frozen=True, slots=True)
class GclAw:
    """A parsed ``_gcl_aw`` value; ``value`` is the exact original string."""

    created_s: int
    gclid: str
    value: str


def format_gcl_aw(gclid: str, created_s: int) -> str:
    """Return the ``_gcl_aw`` value ``GCL.<unix seconds>.<gclid>`` (gclid unchanged; 10 digits)."""
    check_digits("created_s", created_s, 10, 10)
    if GCLID.valid(gclid) is None:
        raise ValueError("gclid must be 1-500 URL-safe characters")
    return f"GCL.{created_s}.{gclid}"


def parse_gcl_aw(value: object) -> GclAw | None:
    """Return the parts of a ``_gcl_aw`` value, or None if malformed."""
    if not isinstance(value, str) or (m := _GCL_AW_RE.fullmatch(value)) is None:
        return None
    return GclAw(int(m[1]), m[2], value)


def _gclid_of(value: str) -> str | None:
    gcl = parse_gcl_aw(value)
    return None if gcl is None else gcl.gclid


def _build(gclid: str, now_ms: int, subdomain_index: int) -> str:
    return format_gcl_aw(gclid, now_ms // 1000)


CLICK_IDS: Final = (GCLID, ClickIdParam("gbraid", SAFE_ID), ClickIdParam("wbraid", SAFE_ID))
COOKIES: Final = (
    CookieSpec(
        "_gcl_aw",
        CookieKind.CLICK,
        90,
        validating(parse_gcl_aw),
        click_id="gclid",
        build=_build,
        click_of=_gclid_of,
        reads_as="gclid",
        read=_gclid_of,
    ),
)
CLICK_WINDOW: Final = ClickWindow("google_ads", ("gclid", "gbraid", "wbraid"), 30.0)
