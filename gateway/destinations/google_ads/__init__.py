"""Google Ads: its click ids (its destination lands separately).

Everything the platform owns lives in this package; `PLATFORM` describes it.
"""

from __future__ import annotations

from typing import Final

from gateway.destinations.platform import Platform

PLATFORM: Final = Platform("google_ads", destination=None)
