"""What one ad platform owns, in one value: `Platform` (pure data, no I/O).

Every platform is a package ``gateway/destinations/<name>/`` whose ``__init__.py`` holds its
``PLATFORM``; ``gateway.destinations`` lists the packages (one line each) and derives from them
``PLATFORMS`` (name → Platform) and ``DESTINATIONS`` (name → Registration, for the platforms
that have a server-API destination).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.core.clickids import ClickIdParam, CookieSpec
from gateway.core.crossdevice import ClickWindow
from gateway.core.hits import HitParser
from gateway.destinations.base import Destination

__all__ = ["HitFormat", "Platform", "Registration", "by_name", "registrations"]


@dataclass(frozen=True, slots=True)
class Registration:
    """How config and the app find a destination: its settings class and constructor."""

    settings: type[Any]
    factory: Callable[[Any], Destination]
    hash_rules: str
    sources: tuple[str, ...] | None = None
    """The event sources (core.routing.SOURCES) it takes unless a site's `sources` says
    otherwise; None: all. GA4 takes "backend" only: it counts a server copy of a browser event
    as a second event."""


@dataclass(frozen=True, slots=True)
class HitFormat:
    """How the platform's browser pixel hits are proxied (gateway.web.hits) and mirrored."""

    vendor: str
    """Its name in `proxy.vendors` and `proxy.<vendor>_hits_upstream` (GA4's is "google")."""
    upstream_path: str
    """The path its hits are forwarded to on the vendor's collection host."""
    methods: tuple[str, ...]
    cookies: frozenset[str]
    """Its first-party cookies, the only ones forwarded with its hits."""
    parse: HitParser
    """Its hit parser (``<name>/hits.py``); each event it returns is mirrored."""
    mirror_to: frozenset[str]
    """The destinations that may receive a mirror of its hits (unless `mirror_to_all`): those
    that deduplicate it against the pixel's own copy."""
    digest_rules: str
    """The normalisation rule set (core.normalize) its pixel's SHA-256 digests follow."""
    cookie_pattern: re.Pattern[str] | None = None
    """More of its cookies, by name pattern (GA4's ``_ga_<container>``)."""


@dataclass(frozen=True, slots=True)
class Platform:
    """One ad platform: its destination and the browser-side facts it owns."""

    name: str
    """The platform's name: its package, its `[sites.destinations.<name>]` table."""
    destination: Registration | None = None
    """Its server-API destination, or None while it has none (its hits or click ids may still
    be handled)."""
    hits: HitFormat | None = None
    """Its proxied pixel hits, if the gateway proxies them."""
    click_ids: tuple[ClickIdParam, ...] = ()
    """Its click-id query parameters (``<name>/clickids.py``), captured from landing URLs."""
    cookies: tuple[CookieSpec, ...] = ()
    """Its first-party cookies the gateway (re)issues server-side, in the order they are planned
    and read."""
    click_window: ClickWindow | None = None
    """How long after a click it attributes a conversion (cross-device enrichment)."""


def by_name(*platforms: Platform) -> dict[str, Platform]:
    """Return name → platform in the given order; a name given twice is a programming error."""
    out: dict[str, Platform] = {}
    for platform in platforms:
        if platform.name in out:
            raise ValueError(f"platform {platform.name!r} registered twice")
        out[platform.name] = platform
    return out


def registrations(platforms: Iterable[Platform]) -> Mapping[str, Registration]:
    """Return name → registration of the platforms that have a destination."""
    return {p.name: p.destination for p in platforms if p.destination is not None}
