"""Platform destinations: one module each, registered here by name (one line per platform)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from gateway.destinations import linkedin, meta, microsoft, pinterest, reddit, snap, tiktok
from gateway.destinations.base import Destination
from gateway.destinations.ga4 import destination as ga4
from gateway.destinations.google_ads import destination as google_ads
from gateway.destinations.x import destination as x


@dataclass(frozen=True, slots=True)
class Registration:
    """How config and the app find a destination: its settings class and constructor."""

    settings: type[Any]
    factory: Callable[[Any], Destination]
    hash_rules: str


DESTINATIONS: Final[dict[str, Registration]] = {
    "ga4": Registration(ga4.GA4Settings, ga4.GA4, ga4.GA4.hash_rules),
    "google_ads": Registration(
        google_ads.GoogleAdsSettings, google_ads.GoogleAds, google_ads.GoogleAds.hash_rules
    ),
    "linkedin": Registration(
        linkedin.LinkedInSettings, linkedin.LinkedIn, linkedin.LinkedIn.hash_rules
    ),
    "meta": Registration(meta.MetaSettings, meta.Meta, meta.Meta.hash_rules),
    "pinterest": Registration(pinterest.PinterestSettings, pinterest.Pinterest, "meta"),
    "microsoft": Registration(microsoft.MicrosoftSettings, microsoft.Microsoft, "meta"),
    "reddit": Registration(reddit.RedditSettings, reddit.Reddit, reddit.Reddit.hash_rules),
    "snap": Registration(snap.SnapSettings, snap.Snap, snap.Snap.hash_rules),
    "tiktok": Registration(tiktok.TikTokSettings, tiktok.TikTok, tiktok.TikTok.hash_rules),
    "x": Registration(x.XSettings, x.X, x.X.hash_rules),
}
"""Destination name → registration."""
