"""X (Twitter): the twclid click id (``clickids.py``); its destination lands separately.

Everything the platform owns lives in this package; `PLATFORM` describes it.
"""

from __future__ import annotations

from typing import Final

from gateway.destinations.platform import Platform
from gateway.destinations.x import clickids

PLATFORM: Final = Platform(
    "x",
    destination=None,
    click_ids=clickids.CLICK_IDS,
    click_window=clickids.CLICK_WINDOW,
)
