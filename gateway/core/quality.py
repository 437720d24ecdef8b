"""Signal-quality figures for the admin dashboard: pure functions over the live counters.

* `quantile`: a quantile of a cumulative histogram (the /metrics delivery-latency buckets),
  interpolated linearly inside the bucket that holds it, as Prometheus' ``histogram_quantile``.
* `coverage`: per identifier kind, the share of an event label's delivered events carrying it.
* `match_key_score`: an *estimate*, out of 10, of how well delivered events can be matched to
  platform users, from the coverage figures and the weights in `MATCH_KEY_WEIGHTS` (README
  "Admin dashboard" states them). Coverage is counted per kind, not per event, so a group of
  kinds counts the best-covered one (a lower bound of "any of them") and a pair counts the
  worse-covered one.
* `redact_sample`: an error message made safe to show: e-mail addresses, long digit runs
  (phone numbers, ids), long hex runs (digests) and bearer-like tokens are masked, and the text
  is cut short.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

Coverage = Mapping[str, float]


def quantile(q: float, buckets: Sequence[tuple[float, int]]) -> float | None:
    """Return the `q` quantile (0..1) of a cumulative histogram [(upper bound, count)], +Inf
    last; None when it is empty. A quantile in the +Inf bucket is the highest finite bound."""
    if not buckets or not 0.0 <= q <= 1.0:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0
    for bound, count in buckets:
        if count >= rank and count > lower_count:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count)
            return lower_bound + (bound - lower_bound) * share
        if bound != float("inf"):
            lower_bound = bound
        lower_count = count
    return lower_bound


def coverage(
    identifiers: Mapping[tuple[str, str], int], delivered: Mapping[str, int], label: str
) -> dict[str, float]:
    """Return identifier kind → share (0..1) of `label`'s delivered events that carried it."""
    sent = delivered.get(label, 0)
    if sent <= 0:
        return {}
    return {
        kind: min(1.0, n / sent)
        for (event, kind), n in sorted(identifiers.items())
        if event == label and n > 0
    }


@dataclass(frozen=True, slots=True)
class KeyWeight:
    """One term of the match-key score."""

    name: str
    weight: float
    kinds: tuple[str, ...]
    all_of: bool = False
    """True: every kind must be present (the worst-covered counts); False: any of them (the
    best-covered counts)."""


CLICK_KINDS: Final = (
    "fbc",
    "fbclid",
    "gclid",
    "gbraid",
    "wbraid",
    "ttclid",
    "sccid",
    "msclkid",
    "li_fat_id",
    "epik",
    "rdt_cid",
    "twclid",
)
BROWSER_KINDS: Final = ("fbp", "ga", "ttp", "scid", "rdt_uuid", "visitor_id")

MATCH_KEY_WEIGHTS: Final = (
    KeyWeight("e-mail", 3.0, ("em",)),
    KeyWeight("phone", 2.0, ("ph",)),
    KeyWeight("click id", 2.0, CLICK_KINDS),
    KeyWeight("IP + user agent", 1.0, ("ip", "user_agent"), all_of=True),
    KeyWeight("external id", 1.0, ("external_id",)),
    KeyWeight("browser id", 0.5, BROWSER_KINDS),
    KeyWeight("name + zip", 0.5, ("fn", "ln", "zp"), all_of=True),
)
"""The score's terms; their weights add up to 10 (README "Admin dashboard")."""


def match_key_terms(cov: Coverage) -> list[tuple[KeyWeight, float]]:
    """Return each term with the coverage (0..1) that counts for it."""
    out: list[tuple[KeyWeight, float]] = []
    for term in MATCH_KEY_WEIGHTS:
        shares = [cov.get(kind, 0.0) for kind in term.kinds]
        out.append((term, min(shares) if term.all_of else max(shares)))
    return out


def match_key_score(cov: Coverage) -> float:
    """Return the match-key score estimate, 0..10 (one decimal is meaningful at most)."""
    return round(sum(term.weight * share for term, share in match_key_terms(cov)), 2)


def share(part: int, whole: int) -> float | None:
    """Return part / whole, None when whole is 0."""
    return part / whole if whole > 0 else None


MAX_SAMPLE: Final = 160
_EMAIL: Final = re.compile(r"\S*@\S*")
_HEX: Final = re.compile(r"\b[0-9a-fA-F]{24,}\b")
_DIGITS: Final = re.compile(r"\+?\d[\d\s().-]{5,}\d")
_TOKEN: Final = re.compile(
    r"(?i)\b(bearer\s+|(?:password|\w*(?:token|secret|key))[\"']?\s*[=:]\s*[\"']?)[^\s,;\"'&]+"
)
_LONG_WORD: Final = re.compile(r"[A-Za-z0-9_\-]{40,}")


def redact_sample(text: str | None) -> str:
    """Return `text` with anything that may identify a person or carry a secret masked."""
    if not text:
        return ""
    out = text.replace("\r", " ").replace("\n", " ")
    out = _TOKEN.sub(lambda m: f"{m.group(1)}[redacted]", out)
    out = _EMAIL.sub("[email]", out)
    out = _HEX.sub("[hash]", out)
    out = _LONG_WORD.sub("[token]", out)
    out = _DIGITS.sub("[number]", out)
    out = " ".join(out.split())
    return out if len(out) <= MAX_SAMPLE else out[: MAX_SAMPLE - 1] + "…"
