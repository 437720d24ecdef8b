"""`signalgate audit`: the checks signal-quality guides recommend, over a conversion gap.

Input: the answer of ``GET /v1/admin/gap`` (gateway/core/orders.py `gap_report` plus the
period). Each check says PASS, FAIL or N/A (nothing to judge, e.g. no orders) with its figure
and threshold:

    conversion_gap   per destination: missing / orders < 10 %
    email_coverage   orders carrying a hashed e-mail >= 80 %
    order_fields     orders carrying value, currency and event_id >= 95 % each
    dedup            per destination, when any order met a browser copy (the site sends the
                     pixel too): orders deduplicated with a browser copy >= 80 % of those sent;
                     N/A when none did (server-only sending: nothing to deduplicate)
    freshness        per destination: deliveries accepted within 1 h of the event >= 90 %

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

MAX_GAP: Final = 0.10
MIN_EMAIL: Final = 0.80
MIN_FIELDS: Final = 0.95
MIN_PAIRED: Final = 0.80
MIN_FRESH: Final = 0.90


class Verdict(StrEnum):
    """A check's outcome; N/A when there was nothing to judge."""

    PASS = "PASS"  # noqa: S105 - a verdict, not a password
    FAIL = "FAIL"
    NA = "N/A"


@dataclass(frozen=True, slots=True)
class Check:
    """One check's verdict with its figure."""

    name: str
    scope: str
    """The destination checked, or "site"."""
    verdict: Verdict
    figure: float | None
    threshold: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.name,
            "scope": self.scope,
            "verdict": self.verdict.value,
            "figure": self.figure,
            "threshold": self.threshold,
            "detail": self.detail,
        }


def _pct(share: float | None) -> str:
    return "n/a" if share is None else f"{share * 100:.1f}%"


def _at_least(share: float | None, low: float) -> Verdict:
    if share is None:
        return Verdict.NA
    return Verdict.PASS if share >= low else Verdict.FAIL


def checks(gap: Mapping[str, Any]) -> list[Check]:
    """Every check over one site's gap answer, site-wide checks first."""
    out: list[Check] = []
    orders = int(gap.get("orders", 0))
    coverage: Mapping[str, Any] = gap.get("coverage") or {}
    email = coverage.get("email")
    out.append(
        Check(
            "email_coverage",
            "site",
            _at_least(email, MIN_EMAIL),
            email,
            f">= {MIN_EMAIL:.0%}",
            f"{_pct(email)} of {orders} orders carry a hashed e-mail",
        )
    )
    fields = {name: coverage.get(name) for name in ("value", "currency", "event_id")}
    lowest = min((v for v in fields.values() if v is not None), default=None)
    out.append(
        Check(
            "order_fields",
            "site",
            _at_least(lowest, MIN_FIELDS),
            lowest,
            f">= {MIN_FIELDS:.0%} each",
            ", ".join(f"{name} {_pct(v)}" for name, v in fields.items()),
        )
    )
    destinations: Mapping[str, Any] = gap.get("destinations") or {}
    for name in sorted(destinations):
        out += _destination_checks(name, destinations[name])
    return out


def _destination_checks(name: str, d: Mapping[str, Any]) -> list[Check]:
    orders, missing = int(d.get("orders", 0)), int(d.get("missing", 0))
    share = d.get("gap")
    reasons: dict[str, int] = {}
    for order in d.get("missing_orders", ()):
        reason = str(order.get("reason", "unknown"))
        reasons[reason] = reasons.get(reason, 0) + 1
    why = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
    gap_check = Check(
        "conversion_gap",
        name,
        Verdict.NA if share is None else Verdict.PASS if share < MAX_GAP else Verdict.FAIL,
        share,
        f"< {MAX_GAP:.0%}",
        f"{missing} of {orders} orders missing ({_pct(share)})" + (f": {why}" if why else ""),
    )
    sent, paired = int(d.get("sent", 0)), int(d.get("paired", 0))
    paired_share = None if sent == 0 or paired == 0 else round(paired / sent, 4)
    dedup_check = Check(
        "dedup",
        name,
        _at_least(paired_share, MIN_PAIRED),
        paired_share,
        f">= {MIN_PAIRED:.0%} when the browser sends too",
        f"{paired} of {sent} orders sent met their browser copy"
        if paired
        else "no order met a browser copy (server-only sending: nothing to deduplicate)",
    )
    fresh = d.get("fresh_share")
    fresh_check = Check(
        "freshness",
        name,
        _at_least(fresh, MIN_FRESH),
        fresh,
        f">= {MIN_FRESH:.0%} within 1 h",
        f"{d.get('fresh', 0)} of {d.get('delivered', 0)} deliveries within 1 h ({_pct(fresh)})",
    )
    return [gap_check, dedup_check, fresh_check]


def exit_code(results: list[Check]) -> int:
    """0 when nothing failed, 1 when some check failed."""
    return 1 if any(c.verdict is Verdict.FAIL for c in results) else 0


def render(site: str, gap: Mapping[str, Any], results: list[Check]) -> str:
    """The human report: one line per check, then the missing orders with their reasons."""
    lines = [f"site {site}: {gap.get('orders', 0)} orders"]
    for c in results:
        lines.append(f"  {c.verdict.value:<4} {c.name:<15} {c.scope:<12} {c.detail}")
    destinations: Mapping[str, Any] = gap.get("destinations") or {}
    for name in sorted(destinations):
        for order in destinations[name].get("missing_orders", ()):
            extra = {k: v for k, v in order.items() if k not in ("order_id", "event_id", "reason")}
            more = " ".join(f"{k}={v}" for k, v in extra.items() if v not in (None, ""))
            lines.append(
                f"  missing {name}: order {order.get('order_id')} {order.get('reason')}"
                + (f" ({more})" if more else "")
            )
    if gap.get("truncated"):
        lines.append("  (truncated: more orders than one answer holds; narrow --since/--until)")
    return "\n".join(lines)
