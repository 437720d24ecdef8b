"""The conversion gap from ledger rows (gateway/core/orders.py), and the audit's checks."""

from __future__ import annotations

from typing import Any

from gateway.core.audit import Verdict, checks, exit_code, render
from gateway.core.orders import (
    Fate,
    OrderFacts,
    OrderRow,
    entry,
    gap_report,
    order_facts,
)

T = 1_790_000_000.0
ROUTES = ("shop:meta", "shop:tiktok")
ORDERS = frozenset({"Purchase"})


def row(
    order_id: str,
    route: str = "shop:meta",
    fate: Fate = Fate.SENT,
    state: str | None = "done",
    *,
    event_id: str | None = None,
    reason: str | None = None,
    attempts: int = 0,
    not_before: float = 0.0,
    updated: float = T + 60,
    email: bool = True,
    paired: bool = False,
) -> OrderRow:
    return OrderRow(
        order_id,
        event_id or order_id,
        route,
        fate.value,
        T,
        email,
        True,
        True,
        paired,
        state if fate is Fate.SENT else None,
        attempts,
        not_before,
        reason,
        updated,
    )


def test_only_backend_events_of_the_order_names_with_an_order_id_are_orders() -> None:
    hashed = {"meta": {"em": ("a" * 64,)}}
    assert order_facts("Purchase", "api", "o1", hashed, 5.0, "EUR", ORDERS) == OrderFacts(
        "o1", True, True, True
    )
    assert order_facts("Purchase", "api", "o1", {}, None, None, ORDERS) == OrderFacts(
        "o1", False, False, False
    )
    assert order_facts("Purchase", "loader", "o1", hashed, 5.0, "EUR", ORDERS) is None
    assert order_facts("Purchase", "api", None, hashed, 5.0, "EUR", ORDERS) is None
    assert order_facts("Lead", "api", "o1", hashed, 5.0, "EUR", ORDERS) is None


def test_an_entry_names_every_route_of_the_site_and_only_the_unsent_ones() -> None:
    facts = OrderFacts("o1", True, True, False)
    routes = (*ROUTES, "shop:snap")
    got = entry("shop", facts, "Purchase", "e1", T, routes, ["shop:meta"], ["shop:tiktok"])
    assert got.fates() == [
        ("shop:meta", Fate.SENT),
        ("shop:tiktok", Fate.ROUTED_AWAY),
        ("shop:snap", Fate.CONSENT_DENIED),
    ]
    assert (got.denied, got.away) == (("shop:snap",), ("shop:tiktok",))
    assert (got.order_id, got.event_id, got.has_currency) == ("o1", "e1", False)
    every = entry("shop", facts, "Purchase", "e1", T, routes, routes)
    assert (every.denied, every.away, every.routes) == ((), (), routes)
    assert {f for _, f in every.fates()} == {Fate.SENT}
    same = entry("shop", facts, "Purchase", "e1", T, routes, list(reversed(routes)))
    assert (same.denied, same.away) == ((), ())


def test_the_report_names_each_missing_order_with_its_reason() -> None:
    rows = [
        row("o1"),
        row("o1", "shop:tiktok", state="retry", attempts=2, not_before=T + 900, reason="HTTP 503"),
        row("o2", state="dead", reason="invalid_field: HTTP 400, code 100: bad"),
        row("o2", "shop:tiktok", state="pending"),
        row("o3", fate=Fate.CONSENT_DENIED, email=False),
        row("o3", "shop:tiktok", fate=Fate.CONSENT_DENIED, email=False),
        row("o4", fate=Fate.ROUTED_AWAY),
        row("o4", "shop:tiktok", updated=T + 7200),
        row("o5", state=None),  # its delivery row is gone
        row("o5", "shop:tiktok"),
    ]
    report = gap_report(rows, ROUTES)
    assert report["orders"] == 5
    assert report["coverage"]["email"] == 0.8
    meta = report["destinations"]["meta"]
    assert (meta["orders"], meta["delivered"], meta["missing"], meta["gap"]) == (5, 1, 4, 0.8)
    assert meta["missing_orders"] == [
        {
            "order_id": "o2",
            "event_id": "o2",
            "reason": "dead_letter",
            "dead_reason": "invalid_field",
            "detail": "HTTP 400, code 100: bad",
        },
        {"order_id": "o3", "event_id": "o3", "reason": "consent_denied"},
        {"order_id": "o4", "event_id": "o4", "reason": "routed_away"},
        {
            "order_id": "o5",
            "event_id": "o5",
            "reason": "unknown",
            "detail": "no delivery row (compacted or erased)",
        },
    ]
    tiktok = report["destinations"]["tiktok"]
    assert (tiktok["delivered"], tiktok["fresh"], tiktok["fresh_share"]) == (2, 1, 0.5)
    assert tiktok["missing_orders"] == [
        {
            "order_id": "o1",
            "event_id": "o1",
            "reason": "queued",
            "state": "retry",
            "attempts": 2,
            "next_try": T + 900,
            "last_error": "HTTP 503",
        },
        {"order_id": "o2", "event_id": "o2", "reason": "queued", "state": "pending", "attempts": 0},
        {"order_id": "o3", "event_id": "o3", "reason": "consent_denied"},
    ]


def test_an_order_is_delivered_when_any_of_its_events_was() -> None:
    rows = [
        row("o1", event_id="first", state="dead", reason="platform_rejected"),
        row("o1", event_id="second"),
        row("o2", event_id="a", fate=Fate.CONSENT_DENIED),
        row("o2", event_id="b", state="retry", attempts=1),
    ]
    meta = gap_report(rows, ("shop:meta",))["destinations"]["meta"]
    assert (meta["orders"], meta["delivered"]) == (2, 1)
    assert [(m["order_id"], m["event_id"], m["reason"]) for m in meta["missing_orders"]] == [
        ("o2", "b", "queued")  # queued outranks consent: it may still arrive
    ]


def test_no_orders_is_no_gap_rather_than_a_zero_division() -> None:
    report = gap_report([], ROUTES)
    assert report["orders"] == 0
    assert report["coverage"]["email"] is None
    assert report["destinations"]["meta"]["gap"] is None
    results = checks(report)
    assert {c.verdict for c in results} == {Verdict.NA}
    assert exit_code(results) == 0


def _by(results: list[Any]) -> dict[tuple[str, str], Any]:
    return {(c.name, c.scope): c for c in results}


def test_the_audit_judges_each_figure_against_its_threshold() -> None:
    rows = [row(f"o{i}", paired=i < 9, email=i < 8) for i in range(10)]
    rows += [
        row(f"o{i}", "shop:tiktok", updated=T + 4000 if i < 2 else T + 10, email=i < 8)
        for i in range(9)
    ]
    rows.append(row("o9", "shop:tiktok", state="dead", reason="auth: token refused", email=False))
    results = checks(gap_report(rows, ROUTES))
    got = _by(results)
    assert got["email_coverage", "site"].verdict is Verdict.PASS  # 80% is enough
    assert got["email_coverage", "site"].figure == 0.8
    assert got["order_fields", "site"].verdict is Verdict.PASS
    assert got["conversion_gap", "meta"].verdict is Verdict.PASS
    assert got["conversion_gap", "tiktok"].verdict is Verdict.FAIL  # 10% is not < 10%
    assert "1 dead_letter" in got["conversion_gap", "tiktok"].detail
    assert got["dedup", "meta"].verdict is Verdict.PASS  # 9 of 10 paired
    assert got["dedup", "tiktok"].verdict is Verdict.NA  # server-only sending
    assert got["freshness", "meta"].verdict is Verdict.PASS
    assert got["freshness", "tiktok"].verdict is Verdict.FAIL  # 7 of 9 within the hour
    assert got["freshness", "tiktok"].figure == round(7 / 9, 4)
    assert exit_code(results) == 1
    text = render("shop", gap_report(rows, ROUTES), results)
    assert "FAIL conversion_gap  tiktok" in text
    assert "missing tiktok: order o9 dead_letter (dead_reason=auth detail=token refused)" in text


def test_a_few_paired_orders_fail_the_dedup_check() -> None:
    rows = [row(f"o{i}", paired=i == 0) for i in range(4)]
    dedup = _by(checks(gap_report(rows, ("shop:meta",))))["dedup", "meta"]
    assert (dedup.verdict, dedup.figure) == (Verdict.FAIL, 0.25)
    low_email = [row(f"o{i}", email=i < 7) for i in range(10)]
    email = _by(checks(gap_report(low_email, ("shop:meta",))))["email_coverage", "site"]
    assert (email.verdict, email.figure) == (Verdict.FAIL, 0.7)
