"""Snap's click id ``ScCid`` and its cookies ``_scclid`` and ``_scid`` (pure).

platforms.md §3.3, §10.2; browser.md §2.1. The ScCid parameter name is matched
case-insensitively, as Snap's own tag does (key ``sccid``). ``_scclid`` is the raw ScCid, a
CARRIER cookie of one year (Snap's tag). ``_scid`` is a UUID (older pixels) or 32 base64url
characters (newer pixels), accepted as 16-64 base64url characters, created by us as a lower-case
UUID v4 string; ~13 months (395 days). Snap's click window is not documented for us: the
conservative default.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from gateway.core.clickids import (
    SAFE_ID,
    ClickIdParam,
    CookieKind,
    CookieSpec,
    check_bits,
    matching,
)
from gateway.core.crossdevice import DEFAULT_WINDOW_DAYS, ClickWindow

__all__ = ["CLICK_IDS", "CLICK_WINDOW", "COOKIES", "SCCID", "format_scid"]

SCCID: Final = ClickIdParam("sccid", SAFE_ID, any_case=True)
_SCID_RE: Final = re.compile(r"[A-Za-z0-9_-]{16,64}")


def format_scid(random_128: int) -> str:
    """Return a new ``_scid`` value: a lower-case UUID v4 made from 128 random bits."""
    check_bits("random_128", random_128, 128)
    bits = (random_128 & ~(0xF << 76) & ~(0x3 << 62)) | (0x4 << 76) | (0x2 << 62)
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _raw(click_id: str, now_ms: int, subdomain_index: int) -> str:
    return click_id


def _new_scid(now_ms: int, random_bits: Callable[[int], int], subdomain_index: int) -> str:
    return format_scid(random_bits(128))


_valid_scclid: Final = matching(SAFE_ID)
_valid_scid: Final = matching(_SCID_RE)

CLICK_IDS: Final = (SCCID,)
COOKIES: Final = (
    CookieSpec(
        "_scclid",
        CookieKind.CARRIER,
        365,
        _valid_scclid,
        click_id="sccid",
        build=_raw,
        reads_as="sccid",
        read=_valid_scclid,
    ),
    CookieSpec(
        "_scid",
        CookieKind.VISITOR,
        395,
        _valid_scid,
        create=_new_scid,
        carried=True,
        reads_as="scid",
        read=_valid_scid,
    ),
)
CLICK_WINDOW: Final = ClickWindow("snap", ("sccid",), DEFAULT_WINDOW_DAYS)
