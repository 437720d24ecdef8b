"""TikTok's click id ``ttclid`` and its cookies ``ttclid`` and ``_ttp`` (pure).

platforms.md §2, §10.2; browser.md §2.1. ``ttclid`` (the cookie) is the raw ttclid, a CARRIER
cookie. ``_ttp`` is opaque: pixels have written 27 base64url characters
(``2F7h37YkS1j57AYSKTI7IHhJPYH``) and, lately, a ULID plus ``_.tt.1``; accepted: 16-64
base64url characters, then up to three ``.<token>`` parts; created by us as base64url of 160
random bits (27 characters). Both live ~13 months (395 days). A ttclid is documented valid for
7 days (platforms.md marks it unverified).
"""

from __future__ import annotations

import base64
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
from gateway.core.crossdevice import ClickWindow

__all__ = ["CLICK_IDS", "CLICK_WINDOW", "COOKIES", "TTCLID", "format_ttp"]

TTCLID: Final = ClickIdParam("ttclid", SAFE_ID)
_TTP_RE: Final = re.compile(r"[A-Za-z0-9_-]{16,64}(?:\.[A-Za-z0-9_-]{1,16}){0,3}")


def format_ttp(random_160: int) -> str:
    """Return a new ``_ttp`` value: 160 random bits as 27 base64url characters."""
    check_bits("random_160", random_160, 160)
    return base64.urlsafe_b64encode(random_160.to_bytes(20, "big")).decode("ascii").rstrip("=")


def _raw(click_id: str, now_ms: int, subdomain_index: int) -> str:
    return click_id


def _new_ttp(now_ms: int, random_bits: Callable[[int], int], subdomain_index: int) -> str:
    return format_ttp(random_bits(160))


_valid_ttclid: Final = matching(SAFE_ID)
_valid_ttp: Final = matching(_TTP_RE)

CLICK_IDS: Final = (TTCLID,)
COOKIES: Final = (
    CookieSpec(
        "ttclid",
        CookieKind.CARRIER,
        395,
        _valid_ttclid,
        click_id="ttclid",
        build=_raw,
        reads_as="ttclid",
        read=_valid_ttclid,
    ),
    CookieSpec(
        "_ttp",
        CookieKind.VISITOR,
        395,
        _valid_ttp,
        create=_new_ttp,
        carried=True,
        reads_as="ttp",
        read=_valid_ttp,
    ),
)
CLICK_WINDOW: Final = ClickWindow("tiktok", ("ttclid",), 7.0)
