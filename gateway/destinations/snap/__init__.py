"""Snapchat: the Conversions API destination.

Everything the platform owns lives in this package; `PLATFORM` describes it.
"""

from __future__ import annotations

from typing import Final

from gateway.destinations.platform import Platform, Registration
from gateway.destinations.snap.destination import Snap, SnapSettings

PLATFORM: Final = Platform(
    "snap",
    destination=Registration(SnapSettings, Snap, Snap.hash_rules),
)
