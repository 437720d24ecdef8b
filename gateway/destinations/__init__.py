"""Platform destinations: one package per platform, registered here by name (one line each).

`PLATFORMS` holds every platform's `Platform` (gateway/destinations/platform.py);
`DESTINATIONS` the registrations of those that have a server-API destination.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from gateway.core.clickids import (
    ClickIdTable,
    CookieKind,
    CookieSpec,
    carried_cookies,
    tracking_cookies,
)
from gateway.core.crossdevice import ClickWindow
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

__all__ = [
    "CARRIED_COOKIES",
    "CLICK_IDS",
    "CLICK_WINDOWS",
    "COOKIES",
    "DESTINATIONS",
    "PLATFORMS",
    "READ_COOKIES",
    "TRACKING_COOKIES",
    "VENDOR_COOKIES",
    "Platform",
    "Registration",
]

PLATFORMS: Final[Mapping[str, Platform]] = by_name(
    META,
    GOOGLE_ADS,
    TIKTOK,
    SNAP,
    PINTEREST,
    LINKEDIN,
    REDDIT,
    MICROSOFT,
    X,
    GA4,
)
"""Platform name → platform. The order is the order in which vendor cookies are planned and
read and click windows applied (Set-Cookie lines, ``click_ids`` keys): add a new platform at
the end so that what existing visitors get stays byte-equal."""

DESTINATIONS: Final[dict[str, Registration]] = dict(registrations(PLATFORMS.values()))
"""Destination name → registration (the platforms above that have a destination)."""

CLICK_IDS: Final = ClickIdTable(param for p in PLATFORMS.values() for param in p.click_ids)
"""Every platform's click-id query parameters, for ``core.clickids.capture``."""
COOKIES: Final[tuple[CookieSpec, ...]] = tuple(c for p in PLATFORMS.values() for c in p.cookies)
"""Every vendor cookie the gateway manages or reads, in plan order (``core.clickids``)."""
VENDOR_COOKIES: Final[Mapping[str, Callable[[str], str | None]]] = {
    spec.name: spec.validate for spec in COOKIES if spec.kind is not CookieKind.READ
}
"""Managed vendor cookie name → validator returning the value unchanged, or None if malformed."""
READ_COOKIES: Final = frozenset(spec.name for spec in COOKIES if spec.kind is CookieKind.READ)
"""Vendor cookies only read (into ``click_ids``), never written or deleted by the gateway."""
TRACKING_COOKIES: Final = tracking_cookies(COOKIES)
"""Every vendor cookie the gateway sets, in plan order: with the site's visitor cookie, what an
explicit consent denial deletes (``core.consent``; ``_sgc``, the consent state, is strictly
necessary and stays)."""
CARRIED_COOKIES: Final = carried_cookies(COOKIES)
"""Vendor cookies a known visitor normally carries (``CookieSpec.carried``): one missing sends
the collect hit to the visitor profile to restore it."""
CLICK_WINDOWS: Final[tuple[ClickWindow, ...]] = tuple(
    p.click_window for p in PLATFORMS.values() if p.click_window is not None
)
"""Every platform's click window, for ``core.crossdevice.enrich_across``."""
