"""The admin dashboard at `/admin` (README "Admin dashboard"): a login form that sets a signed,
expiring session cookie, then server-rendered pages with inline SVG charts and no script or
external resource. `install` adds its routes to the gateway's app."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from aiohttp import web

from gateway.core.secret import Secret
from gateway.web.dashboard import deadpage, pages, seams
from gateway.web.dashboard.handlers import Dashboard
from gateway.web.dashboard.providers import Live, Providers
from gateway.web.middleware import Network

__all__ = ["DASHBOARD", "Dashboard", "Live", "Providers", "install"]

DASHBOARD: Final = web.AppKey("dashboard", Dashboard)


def install(
    app: web.Application,
    live: Live,
    token: Secret | None,
    cookie_key: bytes,
    trusted: Sequence[Network] = (),
    providers: Providers | None = None,
) -> Dashboard:
    """Add /admin/* to `app` (pages need an admin session; without `server.admin_token` they
    answer 403). `app[DASHBOARD].providers` may be replaced before the app starts."""
    board = Dashboard(live, providers or Providers(), token, cookie_key, trusted)
    app[DASHBOARD] = board
    router = app.router
    router.add_get("/admin", _to_slash)
    router.add_get("/admin/login", board.login_form)
    router.add_post("/admin/login", board.login)
    router.add_post("/admin/logout", board.logout)
    for path, render in (
        ("/admin/", pages.overview),
        ("/admin/dead", deadpage.dead_letters),
        ("/admin/signal", pages.signal),
        ("/admin/consent", pages.consent),
        ("/admin/errors", pages.errors),
        ("/admin/gap", seams.gap),
        ("/admin/events", seams.events),
    ):
        router.add_get(path, board.page(render))
    router.add_post("/admin/replay", board.action(deadpage.replay))
    router.add_post("/admin/resume", board.action(deadpage.resume))
    return board


async def _to_slash(request: web.Request) -> web.StreamResponse:
    """/admin → /admin/ (relative, so a path prefix in front is kept)."""
    raise web.HTTPMovedPermanently("admin/")
