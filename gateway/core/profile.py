"""Visitor profiles: what the gateway remembers about a browser, merging and enrichment rules.

A profile is keyed by (site, visitor id). It keeps click ids with the time they were first
seen, the vendor browser ids (`_fbp`, `_fbc`, `_ttp`, `_scid`, …), the last IP and user agent,
the last consent tier and hashed identifiers (never raw PII). `merge` folds one hit into a
profile; `enrich` fills a later event (e.g. a backend Purchase) from the profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from gateway.core.event import Event, User

Hashed = Mapping[str, Mapping[str, tuple[str, ...]]]

LOOKUP_KEYS: Final = ("em", "external_id", "ph")
"""Hashed identifiers indexed for cross-device lookup (with the "meta" rule set)."""
LOOKUP_RULES: Final = "meta"
MAX_LINKED_VISITORS: Final = 20
"""Visitors a store keeps per lookup key (for cross-device enrichment): the most recently seen
with it. A profile's links expire and are erased with the profile."""
MAX_HASHES: Final = 5
"""Digests kept per identifier key: the newest win."""


@dataclass(frozen=True, slots=True)
class VisitorProfile:
    """What the gateway remembers about one visitor of one site."""

    site: str
    visitor_id: str
    first_seen: float
    last_seen: float
    click_ids: Mapping[str, tuple[str, float]] = field(default_factory=dict)
    """Click id name → (value, unix seconds first seen)."""
    browser_ids: Mapping[str, str] = field(default_factory=dict)
    """Vendor cookie name → value (`_fbp`, `_fbc`, `_ttp`, `_scid`, `_gcl_aw`, …)."""
    ip: str | None = None
    user_agent: str | None = None
    consent: str | None = None
    hashed: Hashed = field(default_factory=dict)

    def lookup_keys(self) -> list[str]:
        """Return the index keys ("em:<digest>", …) under which this profile can be found."""
        return lookup_keys(self.hashed)


@dataclass(frozen=True, slots=True)
class ProfileUpdate:
    """What one hit or event tells about a visitor."""

    click_ids: Mapping[str, str] = field(default_factory=dict)
    browser_ids: Mapping[str, str] = field(default_factory=dict)
    ip: str | None = None
    user_agent: str | None = None
    consent: str | None = None
    hashed: Hashed = field(default_factory=dict)


def lookup_keys(hashed: Hashed) -> list[str]:
    """Return "<key>:<digest>" index keys for the identifiers used in cross-device lookup."""
    ids = hashed.get(LOOKUP_RULES, {})
    return [f"{key}:{digest}" for key in LOOKUP_KEYS for digest in ids.get(key, ())]


def merge(
    profile: VisitorProfile | None, site: str, visitor_id: str, update: ProfileUpdate, now: float
) -> VisitorProfile:
    """Return the profile after one hit: newer values replace older, hashes accumulate.

    A click id keeps its first-seen time while its value is unchanged (so `_fbc` keeps its
    creation time), and takes `now` when a new value arrives.
    """
    if profile is None:
        profile = VisitorProfile(site=site, visitor_id=visitor_id, first_seen=now, last_seen=now)
    clicks = dict(profile.click_ids)
    for name, value in update.click_ids.items():
        old = clicks.get(name)
        if old is None or old[0] != value:
            clicks[name] = (value, now)
    return replace(
        profile,
        last_seen=max(profile.last_seen, now),
        click_ids=clicks,
        browser_ids={**profile.browser_ids, **update.browser_ids},
        ip=update.ip or profile.ip,
        user_agent=update.user_agent or profile.user_agent,
        consent=update.consent or profile.consent,
        hashed=union_hashed(profile.hashed, update.hashed),
    )


def union_hashed(old: Hashed, new: Hashed) -> dict[str, dict[str, tuple[str, ...]]]:
    """Return the union of two identifier sets, newest first, at most MAX_HASHES per key."""
    out: dict[str, dict[str, tuple[str, ...]]] = {r: dict(ids) for r, ids in old.items()}
    for rules, ids in new.items():
        target = out.setdefault(rules, {})
        for key, digests in ids.items():
            merged = list(dict.fromkeys([*digests, *target.get(key, ())]))
            target[key] = tuple(merged[:MAX_HASHES])
    return out


def enrich(event: Event, profile: VisitorProfile | None) -> Event:
    """Return the event with gaps filled from the profile; the event's own values always win."""
    if profile is None:
        return event
    u = event.user
    clicks = {name: value for name, (value, _) in profile.click_ids.items()}
    clicks.update(u.click_ids)
    ids = profile.browser_ids
    user = User(
        pii=u.pii,
        hashed=union_hashed(profile.hashed, u.hashed) if profile.hashed else u.hashed,
        ip=u.ip or profile.ip,
        user_agent=u.user_agent or profile.user_agent,
        visitor_id=u.visitor_id or profile.visitor_id,
        fbc=u.fbc or ids.get("_fbc"),
        fbp=u.fbp or ids.get("_fbp"),
        click_ids=clicks,
    )
    return replace(event, user=user)


def to_json(profile: VisitorProfile) -> dict[str, Any]:
    """Return the stored form of a profile (it holds no raw PII by construction)."""
    return {
        "c": {k: [v, t] for k, (v, t) in profile.click_ids.items()},
        "b": dict(profile.browser_ids),
        "ip": profile.ip,
        "ua": profile.user_agent,
        "cs": profile.consent,
        "h": {r: {k: list(v) for k, v in ids.items()} for r, ids in profile.hashed.items()},
    }


def from_json(
    site: str, visitor_id: str, first_seen: float, last_seen: float, doc: Mapping[str, Any]
) -> VisitorProfile:
    """Rebuild a profile from its stored form."""
    return VisitorProfile(
        site=site,
        visitor_id=visitor_id,
        first_seen=first_seen,
        last_seen=last_seen,
        click_ids={k: (v, float(t)) for k, (v, t) in doc.get("c", {}).items()},
        browser_ids=dict(doc.get("b", {})),
        ip=doc.get("ip"),
        user_agent=doc.get("ua"),
        consent=doc.get("cs"),
        hashed={r: {k: tuple(v) for k, v in ids.items()} for r, ids in doc.get("h", {}).items()},
    )
