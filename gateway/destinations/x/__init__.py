"""X (Twitter): its click id (its destination lands separately).

Everything the platform owns lives in this package; `PLATFORM` describes it.
"""

from __future__ import annotations

from typing import Final

from gateway.destinations.platform import Platform

PLATFORM: Final = Platform("x", destination=None)
