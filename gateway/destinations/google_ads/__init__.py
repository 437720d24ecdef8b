"""Google Ads: gclid, gbraid, wbraid and the ``_gcl_aw`` cookie (``clickids.py``); its destination
lands separately.

Everything the platform owns lives in this package; `PLATFORM` describes it.
"""

from __future__ import annotations

from typing import Final

from gateway.destinations.google_ads import clickids
from gateway.destinations.platform import Platform

PLATFORM: Final = Platform(
    "google_ads",
    destination=None,
    click_ids=clickids.CLICK_IDS,
    cookies=clickids.COOKIES,
    click_window=clickids.CLICK_WINDOW,
)
