"""Microsoft Advertising's click id ``msclkid`` and the UET cookie ``_uetmsclkid`` (pure).

platforms.md §8, §10.2 and §11 pitfall 28. msclkid is 32 hex digits. ``_uetmsclkid`` is
``_uet`` + the msclkid (the prefix is stripped before sending), a CARRIER cookie of 90 days.
The click window is not documented for us: the conservative default.
"""

from __future__ import annotations

import re
from typing import Final

from gateway.core.clickids import ClickIdParam, CookieKind, CookieSpec, validating
from gateway.core.crossdevice import DEFAULT_WINDOW_DAYS, ClickWindow

__all__ = [
    "CLICK_IDS",
    "CLICK_WINDOW",
    "COOKIES",
    "MSCLKID",
    "format_uetmsclkid",
    "parse_uetmsclkid",
]

MSCLKID: Final = ClickIdParam("msclkid", re.compile(r"[0-9A-Fa-f]{32}"))
_UETMSCLKID_RE: Final = re.compile(r"_uet([0-9A-Fa-f]{32})")


def format_uetmsclkid(msclkid: str) -> str:
    """Return the ``_uetmsclkid`` value ``_uet<msclkid>``."""
    if MSCLKID.valid(msclkid) is None:
        raise ValueError("msclkid must be 32 hex digits")
    return "_uet" + msclkid


def parse_uetmsclkid(value: object) -> str | None:
    """Return the msclkid inside a ``_uetmsclkid`` value (prefix stripped), or None."""
    if not isinstance(value, str) or (m := _UETMSCLKID_RE.fullmatch(value)) is None:
        return None
    return m[1]


def _build(msclkid: str, now_ms: int, subdomain_index: int) -> str:
    return format_uetmsclkid(msclkid)


CLICK_IDS: Final = (MSCLKID,)
COOKIES: Final = (
    CookieSpec(
        "_uetmsclkid",
        CookieKind.CARRIER,
        90,
        validating(parse_uetmsclkid),
        click_id="msclkid",
        build=_build,
        reads_as="msclkid",
        read=parse_uetmsclkid,
    ),
)
CLICK_WINDOW: Final = ClickWindow("microsoft", ("msclkid",), DEFAULT_WINDOW_DAYS)
