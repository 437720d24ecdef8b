"""TikTok: the Events API destination.

Everything the platform owns lives in this package; `PLATFORM` describes it.
"""

from __future__ import annotations

from typing import Final

from gateway.destinations.platform import Platform, Registration
from gateway.destinations.tiktok.destination import TikTok, TikTokSettings

PLATFORM: Final = Platform(
    "tiktok",
    destination=Registration(TikTokSettings, TikTok, TikTok.hash_rules),
)
