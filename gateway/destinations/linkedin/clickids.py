"""LinkedIn's click id ``li_fat_id`` (pure).

platforms.md §10.2. Captured from the landing URL only: the ``li_fat_id`` cookie is
never written (its format is undocumented or unverified, and we never invent values for
formats we do not control, browser.md §2.2). The click window is not documented for us: the
conservative default.
"""

from __future__ import annotations

from typing import Final

from gateway.core.clickids import SAFE_ID, ClickIdParam
from gateway.core.crossdevice import DEFAULT_WINDOW_DAYS, ClickWindow

__all__ = ["CLICK_IDS", "CLICK_WINDOW"]

CLICK_IDS: Final = (ClickIdParam("li_fat_id", SAFE_ID),)
CLICK_WINDOW: Final = ClickWindow("linkedin", ("li_fat_id",), DEFAULT_WINDOW_DAYS)
