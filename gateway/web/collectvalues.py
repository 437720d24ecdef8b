"""The values a collect hit travels as (gateway/web/collect.py): the request from either road
(aiohttp or the fast lane) as plain inputs, and the endpoint's counters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.core.consent import Decision


@dataclass
class CollectStats:
    """Counters of the collect endpoint (aggregates only, never identifiers)."""

    hits: int = 0
    accepted: int = 0
    rejected: int = 0
    control: int = 0
    by_tier: dict[str, int] = field(default_factory=dict)
    consent_reasons: dict[str, int] = field(default_factory=dict)
    site_tiers: dict[tuple[str, str], int] = field(default_factory=dict)
    """(site, tier) → hits: `by_tier` per site, for the per-minute rollups."""
    site_reasons: dict[tuple[str, str], int] = field(default_factory=dict)
    """(site, reason) → hits: `consent_reasons` per site."""

    def totals(self) -> dict[str, object]:
        """The counters as a JSON-ready dict (`/v1/debug/recent`), without the per-site ones."""
        return {
            "hits": self.hits,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "control": self.control,
            "by_tier": dict(self.by_tier),
            "consent_reasons": dict(self.consent_reasons),
        }

    def count_consent(self, site: str, decision: Decision) -> None:
        """Count a hit's tier and reasons, in total and per site."""
        tier = decision.tier.value
        self.by_tier[tier] = self.by_tier.get(tier, 0) + 1
        key = (site, tier)
        self.site_tiers[key] = self.site_tiers.get(key, 0) + 1
        for reason in decision.reasons:
            self.consent_reasons[reason] = self.consent_reasons.get(reason, 0) + 1
            key = (site, reason)
            self.site_reasons[key] = self.site_reasons.get(key, 0) + 1


@dataclass(frozen=True, slots=True)
class CollectRequest:
    """One hit as plain inputs, whichever road it came by.

    `headers` answers lower-case names (aiohttp's case-insensitive headers, or the lane's
    lower-cased dict); `forwarded` holds every X-Forwarded-For value.
    """

    host: str
    headers: Mapping[str, str]
    peer: str | None
    forwarded: tuple[str, ...]
    body: bytes
    secure: bool
