"""The conversion gap for operators (admin token; README "Conversion gap and audit").

``GET /v1/admin/gap?site=&since=&until=``: for the site's orders timed in [since, until) (unix
seconds or ISO 8601; default the last 7 days), per destination: orders, delivered, missing and
the gap (missing / orders), with every missing order's id, event id and why it is missing
(consent_denied, routed_away, dead_letter with the dead reason, queued with attempts and the
next try, or unknown when its delivery row is gone); plus the figures `signalgate audit` checks
(gateway/core/orders.py computes all of it from the store's order ledger).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Final, Protocol

from aiohttp import web

from gateway.core.orders import FRESH_SECONDS, OrderRow, gap_report
from gateway.core.secret import Secret
from gateway.web.admin import admin_denied
from gateway.web.middleware import error_response

DEFAULT_PERIOD: Final = 7 * 86400.0
"""Seconds before `until` that `since` defaults to."""
MAX_ROWS: Final = 200_000
"""Ledger rows one answer reads at most (the answer says ``truncated`` beyond)."""

Errors = list[dict[str, str]]


class OrderRows(Protocol):
    """What the handler needs of the store (`gateway.store.base.OrderStore.order_rows`)."""

    async def order_rows(
        self, site: str, since: float, until: float, limit: int
    ) -> list[OrderRow]: ...


class Gap:
    """Handler of /v1/admin/gap."""

    def __init__(
        self,
        store: OrderRows,
        token: Secret | None,
        sites: Mapping[str, Sequence[str]],
        clock: Callable[[], float],
        max_rows: int = MAX_ROWS,
    ) -> None:
        self.store = store
        self.token = token
        self.sites = sites
        """Site id → its routes ("<site>:<destination>")."""
        self.clock = clock
        self.max_rows = max_rows

    async def gap(self, request: web.Request) -> web.Response:
        """Return the site's conversion gap for the period."""
        denied = admin_denied(request, self.token)
        if denied is not None:
            return denied
        site, since, until, errors = parse_gap_query(request.query, self.clock())
        if errors:
            return error_response(400, "bad_request", "invalid gap query", errors)
        routes = self.sites.get(site)
        if routes is None:
            return error_response(
                404,
                "not_found",
                "no such site",
                [{"path": "site", "reason": "not a configured site id"}],
            )
        rows = await self.store.order_rows(site, since, until, self.max_rows + 1)
        truncated = len(rows) > self.max_rows
        report = gap_report(rows[: self.max_rows], routes)
        return web.json_response(
            {
                "site": site,
                "since": since,
                "until": until,
                "truncated": truncated,
                "fresh_seconds": FRESH_SECONDS,
                **report,
            }
        )


def parse_gap_query(params: Mapping[str, str], now: float) -> tuple[str, float, float, Errors]:
    """Return (site, since, until) from URL parameters, and what is wrong with them."""
    errors: Errors = []
    unknown = sorted(set(params) - {"site", "since", "until"})
    errors += [{"path": name, "reason": "unknown parameter"} for name in unknown]
    site = params.get("site", "")
    if not site:
        errors.append({"path": "site", "reason": "required"})
    until = now
    if "until" in params:
        parsed = parse_time(params["until"])
        if parsed is None:
            errors.append({"path": "until", "reason": "expected unix seconds or ISO 8601"})
        else:
            until = parsed
    since = until - DEFAULT_PERIOD
    if "since" in params:
        parsed = parse_time(params["since"])
        if parsed is None:
            errors.append({"path": "since", "reason": "expected unix seconds or ISO 8601"})
        else:
            since = parsed
    if not errors and since >= until:
        errors.append({"path": "since", "reason": "must be before until"})
    return site, since, until, errors


def parse_time(raw: str) -> float | None:
    """Unix seconds, or an ISO 8601 date-time (UTC when it names no offset); None if neither."""
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = datetime.fromisoformat(raw)
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        try:
            return when.timestamp()
        except (OverflowError, ValueError):
            return None  # beyond what a timestamp holds (e.g. year 9999 with an offset)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
