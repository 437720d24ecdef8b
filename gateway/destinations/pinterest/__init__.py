"""Pinterest: the Conversions API destination (``destination.py``), the epik click id and the
``_epik`` cookie, read only (``clickids.py``).

Everything the platform owns lives in this package; `PLATFORM` describes it.
"""

from __future__ import annotations

from typing import Final

from gateway.destinations.pinterest import clickids
from gateway.destinations.pinterest.destination import Pinterest, PinterestSettings
from gateway.destinations.platform import Platform, Registration

PLATFORM: Final = Platform(
    "pinterest",
    destination=Registration(PinterestSettings, Pinterest, Pinterest.hash_rules),
    click_ids=clickids.CLICK_IDS,
    cookies=clickids.COOKIES,
    click_window=clickids.CLICK_WINDOW,
)
