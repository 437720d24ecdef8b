"""Adapters from the gateway's own data to the dashboard's provider seams (providers.py).

`gap_provider` reads the order ledger (issue #12 item 4, gateway/core/orders.py) the way
`GET /v1/admin/gap` does and hands the dashboard its `GapReport`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.core.orders import gap_report
from gateway.web.admin_gap import MAX_ROWS, OrderRows
from gateway.web.dashboard.providers import GapLine, GapProvider, GapReport, MissingOrder

_NAMED: frozenset[str] = frozenset({"order_id", "event_id", "reason"})


def _detail(missing: Mapping[str, Any]) -> str:
    """The rest of a missing order's entry (dead reason, attempts, next try…), as text."""
    return ", ".join(f"{k}={v}" for k, v in missing.items() if k not in _NAMED and v is not None)


def gap_provider(
    store: OrderRows, sites: Mapping[str, Sequence[str]], max_rows: int = MAX_ROWS
) -> GapProvider:
    """The dashboard's gap seam over the ledger: `sites` maps a site id to its routes."""

    async def provide(site: str, since: float, until: float) -> GapReport:
        rows = await store.order_rows(site, since, until, max_rows)
        report = gap_report(rows, sites.get(site, ()))
        lines = tuple(
            GapLine(
                destination,
                int(line["orders"]),
                int(line["delivered"]),
                tuple(
                    MissingOrder(m["order_id"], m["event_id"], m["reason"], _detail(m))
                    for m in line["missing_orders"]
                ),
            )
            for destination, line in report["destinations"].items()
        )
        return GapReport(site, since, until, lines)

    return provide
