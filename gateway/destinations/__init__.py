"""Platform destinations: one package per platform, registered here by name (one line each).

`PLATFORMS` holds every platform's `Platform` (gateway/destinations/platform.py);
`DESTINATIONS` the registrations of those that have a server-API destination.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from gateway.destinations.ga4 import PLATFORM as GA4
from gateway.destinations.google_ads import PLATFORM as GOOGLE_ADS
from gateway.destinations.linkedin import PLATFORM as LINKEDIN
from gateway.destinations.meta import PLATFORM as META
from gateway.destinations.microsoft import PLATFORM as MICROSOFT
from gateway.destinations.pinterest import PLATFORM as PINTEREST
from gateway.destinations.platform import Platform, Registration, by_name, registrations
from gateway.destinations.reddit import PLATFORM as REDDIT
from gateway.destinations.snap import PLATFORM as SNAP
from gateway.destinations.tiktok import PLATFORM as TIKTOK
from gateway.destinations.x import PLATFORM as X

__all__ = ["DESTINATIONS", "PLATFORMS", "Platform", "Registration"]

PLATFORMS: Final[Mapping[str, Platform]] = by_name(
    LINKEDIN,
    META,
    PINTEREST,
    MICROSOFT,
    REDDIT,
    SNAP,
    TIKTOK,
    GA4,
    GOOGLE_ADS,
    X,
)
"""Platform name → platform (this order is the order of the configuration tables)."""

DESTINATIONS: Final[dict[str, Registration]] = dict(registrations(PLATFORMS.values()))
"""Destination name → registration (the platforms above that have a destination)."""
