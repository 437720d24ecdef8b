"""What one ad platform owns, in one value: `Platform` (pure data, no I/O).

Every platform is a package ``gateway/destinations/<name>/`` whose ``__init__.py`` holds its
``PLATFORM``; ``gateway.destinations`` lists the packages (one line each) and derives from them
``PLATFORMS`` (name → Platform) and ``DESTINATIONS`` (name → Registration, for the platforms
that have a server-API destination).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.destinations.base import Destination

__all__ = ["Platform", "Registration", "by_name"]


@dataclass(frozen=True, slots=True)
class Registration:
    """How config and the app find a destination: its settings class and constructor."""

    settings: type[Any]
    factory: Callable[[Any], Destination]
    hash_rules: str


@dataclass(frozen=True, slots=True)
class Platform:
    """One ad platform: its destination and the browser-side facts it owns."""

    name: str
    """The platform's name: its package, its `[sites.destinations.<name>]` table."""
    destination: Registration | None = None
    """Its server-API destination, or None while it has none (its hits or click ids may still
    be handled)."""


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
