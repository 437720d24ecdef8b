"""Google Analytics 4: the gtag.js /g/collect hits (its Measurement Protocol destination lands
separately).

Everything the platform owns lives in this package; `PLATFORM` describes it.
"""

from __future__ import annotations

from typing import Final

from gateway.destinations.platform import Platform

PLATFORM: Final = Platform("ga4", destination=None)
