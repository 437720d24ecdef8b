"""Operator surfaces behind the admin token: recent deliveries, dead letters, route health."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping

from aiohttp import web

from gateway.core.secret import Secret
from gateway.store.base import DeliveryInfo, Store
from gateway.web.bearer import bearer_token
from gateway.web.middleware import error_response


class Admin:
    """Handlers for /v1/debug/*; every one requires `Authorization: Bearer <admin_token>`."""

    def __init__(
        self,
        store: Store,
        token: Secret | None,
        routes: Callable[[], Mapping[str, Mapping[str, object]]],
        browser: Callable[[], Mapping[str, object]] = dict,
        consent_denied: Mapping[str, int] | None = None,
        routed_away: Mapping[str, int] | None = None,
    ) -> None:
        self.store = store
        self.token = token
        self.routes = routes
        self.browser = browser
        self.consent_denied = consent_denied if consent_denied is not None else {}
        """Route → events consent kept from it (the pipeline's live counter)."""
        self.routed_away = routed_away if routed_away is not None else {}
        """Route → events its `events` / `exclude_events` turned away (live counter)."""

    def _denied(self, request: web.Request) -> web.Response | None:
        return admin_denied(request, self.token)

    async def recent(self, request: web.Request) -> web.Response:
        """Return the most recently updated deliveries and per-route state."""
        denied = self._denied(request)
        if denied is not None:
            return denied
        limit = _limit(request)
        if isinstance(limit, web.Response):
            return limit
        rows = await self.store.recent(limit, request.query.get("route") or None)
        counts = await self.store.counts()
        duplicates: dict[str, dict[str, int]] = {}
        for (route, pair), n in (await self.store.dedup_counts()).items():
            duplicates.setdefault(route, {})[pair] = n
        totals: dict[str, dict[str, int]] = {}
        for (route, state), n in counts.items():
            totals.setdefault(route, {})[state.value] = n
        return web.json_response(
            {
                "deliveries": [_info(r) for r in rows],
                "totals": totals,
                "deduplicated": duplicates,
                "consent_denied": dict(self.consent_denied),
                "routed_away": dict(self.routed_away),
                "routes": self.routes(),
                "browser": self.browser(),
            }
        )

    async def dead(self, request: web.Request) -> web.Response:
        """Return dead letters of one route (?route=site:destination)."""
        denied = self._denied(request)
        if denied is not None:
            return denied
        route = request.query.get("route", "")
        if not route:
            return error_response(
                400,
                "bad_request",
                "query parameter route is required",
                [{"path": "route", "reason": "required"}],
            )
        limit = _limit(request)
        if isinstance(limit, web.Response):
            return limit
        rows = await self.store.dead_letters(route, limit)
        return web.json_response({"dead": [_info(r) for r in rows]})


def admin_denied(request: web.Request, token: Secret | None) -> web.Response | None:
    """Return the 403 (no admin token configured) or 401 (wrong or missing Bearer token)
    answer for an admin request, or None when it carries the admin token."""
    if token is None:
        return error_response(403, "forbidden", "admin surfaces are off: set server.admin_token")
    given = bearer_token(request.headers.get("Authorization")) or b""
    if not hmac.compare_digest(given, token.value.encode()):
        return error_response(401, "unauthorized", "admin token required")
    return None


def _limit(request: web.Request) -> int | web.Response:
    """The `limit` query parameter (1-500, default 50), or the 400 naming it."""
    raw = request.query.get("limit", "50")
    if raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 500:
        return int(raw)
    return error_response(
        400,
        "bad_request",
        "invalid query parameter limit",
        [{"path": "limit", "reason": "expected an integer from 1 to 500"}],
    )


def _info(row: DeliveryInfo) -> dict[str, object]:
    return {
        "id": row.id,
        "route": row.route,
        "event": row.event_name,
        "event_id": row.event_id,
        "state": row.state.value,
        "attempts": row.attempts,
        "reason": row.reason,
        "updated_at": row.updated_at,
    }
