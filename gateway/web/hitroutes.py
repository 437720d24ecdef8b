"""The pixel hit routes: which public paths proxy which platform's hits, and where they go.

Built from the platforms' `HitFormat`s (gateway/destinations/<name>/__init__.py: vendor
upstream path, methods, forwarded cookies, parser, mirror targets, digest rule set); only the
public paths under the site prefix are a web fact (`PUBLIC_PATHS`). gateway/web/hits.py serves
them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from gateway.destinations import PLATFORMS
from gateway.destinations.platform import HitFormat

__all__ = [
    "DIGEST_RULES",
    "HIT_FORMATS",
    "HIT_ROUTES",
    "OWN_DESTINATIONS",
    "PUBLIC_PATHS",
    "HitRoute",
]


@dataclass(frozen=True, slots=True, eq=False)
class HitRoute:
    """One public hit path → one vendor upstream path and the cookies that vendor may see.

    Compared and hashed by identity (the routes are the constants of HIT_ROUTES): a route is
    part of a memo key on every hit, and hashing its fields cost more than the look-up.
    """

    vendor: str
    """Config vendor name (`proxy.vendors`): meta, tiktok, snap, google."""
    path: str
    """Path under the site's prefix, or an absolute path when `root`."""
    upstream: str
    methods: tuple[str, ...]
    cookies: frozenset[str]
    cookie_pattern: re.Pattern[str] | None = None
    root: bool = False
    platform: str = ""
    """The platform (gateway.destinations.PLATFORMS) whose hits these are."""

    def keeps(self, name: str) -> bool:
        """Tell whether the cookie `name` is forwarded to this vendor."""
        pattern = self.cookie_pattern
        return name in self.cookies or (pattern is not None and pattern.fullmatch(name) is not None)


PUBLIC_PATHS: Final[Mapping[str, tuple[str, ...]]] = {
    "meta": ("m/tr", "m/tr/"),
    "tiktok": ("t/api/v2/pixel",),
    "snap": ("s/p",),
    "ga4": ("/g/collect",),
}
"""Platform → the public paths of its hits: under each site prefix, or at the root when the
path starts with '/' (gtag.js posts to `/g/collect` of its `server_container_url`)."""


def _routes() -> tuple[HitRoute, ...]:
    routes: list[HitRoute] = []
    for name, platform in PLATFORMS.items():
        fmt = platform.hits
        if fmt is None:
            continue
        for path in PUBLIC_PATHS[name]:  # a platform with hits but no path: a KeyError at import
            root = path.startswith("/")
            routes.append(
                HitRoute(
                    fmt.vendor,
                    path,
                    fmt.upstream_path,
                    fmt.methods,
                    fmt.cookies,
                    fmt.cookie_pattern,
                    root=root,
                    platform=name,
                )
            )
    return tuple(routes)


HIT_ROUTES: Final[tuple[HitRoute, ...]] = _routes()
"""Every proxied hit route, built from the platforms' `HitFormat`s."""
HIT_FORMATS: Final[Mapping[str, HitFormat]] = {
    fmt.vendor: fmt for p in PLATFORMS.values() if (fmt := p.hits) is not None
}
"""Config vendor name (`proxy.vendors`) → its platform's hit format."""


OWN_DESTINATIONS: Final[Mapping[str, frozenset[str]]] = {
    name: fmt.mirror_to for name, p in PLATFORMS.items() if (fmt := p.hits) is not None
}
"""Hit vendor (`Hit.vendor`, the platform) → the destinations that may receive its mirror
(unless `mirror_to_all`); a platform's `HitFormat.mirror_to`."""

DIGEST_RULES: Final[Mapping[str, str]] = {
    name: fmt.digest_rules for name, p in PLATFORMS.items() if (fmt := p.hits) is not None
}
"""Platform → the rule set its pixel's digests follow."""
