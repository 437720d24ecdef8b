"""Pinterest's click id ``epik`` (pure).

platforms.md §10.2. Captured from the landing URL only: the ``_epik`` cookie is
never written (its format is undocumented or unverified, and we never invent values for
formats we do not control, browser.md §2.2). The click window is not documented for us: the
conservative default.
"""

from __future__ import annotations

from typing import Final

from gateway.core.clickids import SAFE_ID, ClickIdParam, CookieKind, CookieSpec, matching
from gateway.core.crossdevice import DEFAULT_WINDOW_DAYS, ClickWindow

__all__ = ["CLICK_IDS", "CLICK_WINDOW", "COOKIES"]

CLICK_IDS: Final = (ClickIdParam("epik", SAFE_ID),)
CLICK_WINDOW: Final = ClickWindow("pinterest", ("epik",), DEFAULT_WINDOW_DAYS)

# platforms.md §10.2 / the Pinterest table: `click_id` is the plain value of the `_epik`
# first-party cookie, which Pinterest's tag sets from ?epik=. Read (a URL epik wins), never
# written: its format is the tag's.
_valid_epik: Final = matching(SAFE_ID)
COOKIES: Final = (
    CookieSpec("_epik", CookieKind.READ, 0, _valid_epik, reads_as="epik", read=_valid_epik),
)
