"""Which rule sets may use an identifier a vendor's pixel had already hashed (pure).

A pixel hit can carry SHA-256 digests made by the vendor's own script: TikTok's pixel hashes a
phone as E.164 *with* '+', Meta's pixel the digits without it (platforms.md §2.3, §10.4, pitfall
12). The gateway cannot re-normalise a digest, and `PiiHasher` passes a digest through unchanged
into every rule set, so without this step a TikTok phone digest would be sent to Meta as if it
were Meta's — a silent non-match. `scope_hit_digests` keeps a digest given by the hit only in the
rule sets that normalise that field the way the vendor's pixel does; values the hit gave in
clear were hashed per rule set by the pipeline and are not touched.

Normal forms per field (from platforms.md §10.4 and pitfalls 12, 13): e-mail is trimmed and
lower-cased by Meta, TikTok and Snap, while Google also removes gmail dots; the phone is digits
only for Meta and Snap and E.164 with '+' for TikTok and Google. Every other field uses the same
rule in every rule set (gateway.core.normalize), so its digests stay everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from gateway.core.event import PII_FIELDS

__all__ = ["given_digests", "scope_hit_digests"]

_FORMS: Final[Mapping[str, Mapping[str, str]]] = {
    "em": {"meta": "trim-lower", "tiktok": "trim-lower", "snap": "trim-lower", "google": "gmail"},
    "ph": {"meta": "digits", "snap": "digits", "tiktok": "e164-plus", "google": "e164-plus"},
}
"""Identifier key → rule set → the normal form hashed; a rule set not listed shares nothing."""

_DIGEST: Final = re.compile(r"[0-9A-Fa-f]{64}")

Hashed = Mapping[str, Mapping[str, tuple[str, ...]]]


def given_digests(user: object) -> dict[str, frozenset[str]]:
    """Return identifier key → the SHA-256 digests (lower-case) a hit's `user` object gave."""
    if not isinstance(user, Mapping):
        return {}
    out: dict[str, frozenset[str]] = {}
    for name, key in PII_FIELDS.items():
        if key not in _FORMS:
            continue
        raw: Any = user.get(name)
        values = raw if isinstance(raw, list | tuple) else [raw]
        digests = frozenset(
            v.strip().lower() for v in values if isinstance(v, str) and _DIGEST.fullmatch(v.strip())
        )
        if digests:
            out[key] = digests
    return out


def _shares_form(key: str, vendor_rules: str, rules: str) -> bool:
    forms = _FORMS.get(key)
    if forms is None:
        return True
    own = forms.get(vendor_rules)
    return own is not None and forms.get(rules) == own


def scope_hit_digests(
    hashed: Hashed, vendor_rules: str, given: Mapping[str, frozenset[str]]
) -> dict[str, dict[str, tuple[str, ...]]] | None:
    """Return `hashed` without the `given` digests in rule sets whose form differs from
    `vendor_rules`' (the rule set the vendor's pixel follows: its platform's
    ``HitFormat.digest_rules``), or None when nothing had to be removed (the caller keeps its
    event as it is).

    Rule sets not listed for a field share no digest of it with `vendor_rules`.
    """
    if not given:
        return None
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    changed = False
    for rules, ids in hashed.items():
        kept: dict[str, tuple[str, ...]] = {}
        for key, values in ids.items():
            foreign = given.get(key)
            if foreign is None or rules == vendor_rules or _shares_form(key, vendor_rules, rules):
                kept[key] = values
                continue
            left = tuple(v for v in values if v not in foreign)
            changed = changed or len(left) != len(values)
            if left:
                kept[key] = left
        out[rules] = kept
    return out if changed else None
