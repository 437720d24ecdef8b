"""The dashboard's aiohttp handlers: login, logout, the session gate of every page and action.

A page is an async `Render` (pages.py, deadpage.py, seams.py) given a `View`; `Dashboard.page`
wraps it: no valid session → 303 to the login form (a non-GET request: 401), else the HTML with
the security headers. Actions (POST) also need the session's CSRF token and, when the browser
sends an Origin, the dashboard's own.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Final
from urllib.parse import quote, urlsplit

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from gateway.core.secret import Secret
from gateway.web.dashboard.auth import (
    COOKIE,
    LoginLimiter,
    Session,
    Sessions,
    cookie_header,
    session_key,
)
from gateway.web.dashboard.layout import SECURITY_HEADERS, page
from gateway.web.dashboard.providers import Live, Providers
from gateway.web.middleware import Network, client_ip, error_response, proxied_https

log = logging.getLogger("signalgate.dashboard")

MAX_FORM: Final = 65_536
_PAGE: Final = re.compile(r"[a-z]{0,20}")


@dataclass(frozen=True, slots=True)
class View:
    """What a page renderer gets: the live sources, the seams, the request's query, the
    session's CSRF token (for its forms) and the time."""

    live: Live
    providers: Providers
    query: Mapping[str, str]
    csrf: str
    now: float


Render = Callable[[View], Awaitable[tuple[str, str]]]
"""Returns (title, body HTML)."""
Action = Callable[[View, MultiDictProxy[str]], Awaitable[str]]
"""Performs a POST; returns where to go next (a page link relative to /admin/)."""


class Dashboard:
    """The dashboard's state: sessions, the login limiter, its data sources."""

    def __init__(
        self,
        live: Live,
        providers: Providers,
        token: Secret | None,
        cookie_key: bytes,
        trusted: Sequence[Network],
    ) -> None:
        self.live = live
        self.providers = providers
        self.token = token
        self.trusted = trusted
        key = session_key(cookie_key, token.value if token is not None else "")
        self.sessions = Sessions(key, live.clock)
        self.limiter = LoginLimiter(live.clock)

    # --- helpers ---
    def _secure(self, request: web.Request) -> bool:
        return request.secure or proxied_https(
            request.remote, request.headers.get("X-Forwarded-Proto"), self.trusted
        )

    def session(self, request: web.Request) -> Session | None:
        """The request's valid session, if any."""
        return self.sessions.verify(request.cookies.get(COOKIE))

    def _off(self) -> web.Response | None:
        if self.token is None:
            return error_response(
                403, "forbidden", "admin surfaces are off: set server.admin_token"
            )
        return None

    @staticmethod
    def html(
        body: str, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        return web.Response(
            text=body,
            status=status,
            content_type="text/html",
            charset="utf-8",
            headers={**SECURITY_HEADERS, **(headers or {})},
        )

    def _login_page(
        self,
        message: str = "",
        next_path: str = "./",
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        note = f'<p class="bad" role="alert">{escape(message)}</p>' if message else ""
        body = (
            '<div class="login"><form method="post" action="login">'
            f"{note}"
            '<label for="token">Admin token</label>'
            '<input id="token" name="token" type="password" autocomplete="current-password"'
            " required autofocus>"
            f'<input type="hidden" name="next" value="{escape(next_path)}">'
            '<button type="submit">Log in</button></form></div>'
        )
        return self.html(page("Log in", "login", body), status, headers)

    # --- login / logout ---
    async def login_form(self, request: web.Request) -> web.StreamResponse:
        """GET /admin/login."""
        off = self._off()
        if off is not None:
            return off
        if self.session(request) is not None:
            raise web.HTTPSeeOther(safe_next(request.query.get("next")))
        return self._login_page(next_path=safe_next(request.query.get("next")))

    async def login(self, request: web.Request) -> web.StreamResponse:
        """POST /admin/login: the admin token in a form; sets the session cookie."""
        off = self._off()
        if off is not None:
            return off
        assert self.token is not None
        client = client_ip(request, self.trusted) or "unknown"
        wait = self.limiter.retry_after(client)
        if wait is not None:
            log.info("Admin login rate-limited.", extra={"retry_after": wait})
            return self._login_page(
                f"Too many failed attempts: try again in {wait} s.",
                status=429,
                headers={"Retry-After": str(wait)},
            )
        form = await _form(request)
        if form is None:
            return error_response(413, "payload_too_large", "form too large")
        given = form.get("token", "")
        next_path = safe_next(form.get("next"))
        if not _same(given, self.token.value):
            self.limiter.failed(client)
            log.info("Admin login failed.")
            return self._login_page("Wrong token.", next_path, status=401)
        self.limiter.succeeded(client)
        value, _ = self.sessions.issue()
        response = _see_other(next_path)
        max_age = int(self.sessions.lifetime)
        response.headers.add(
            "Set-Cookie", cookie_header(value, secure=self._secure(request), max_age=max_age)
        )
        log.info("Admin logged in.")
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        """POST /admin/logout (CSRF token required): revoke the session, delete the cookie."""
        session = self.session(request)
        if session is None:
            return error_response(401, "unauthorized", "admin session required")
        form = await _form(request)
        if form is None or not self.sessions.check_csrf(session, form.get("csrf")):
            return error_response(403, "forbidden", "missing or wrong CSRF token")
        self.sessions.revoke(session)
        response = _see_other("login")
        response.headers.add(
            "Set-Cookie", cookie_header("", secure=self._secure(request), max_age=0)
        )
        return response

    # --- gates ---
    def page(self, render: Render) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """A GET handler showing `render`'s page to a signed-in operator."""

        async def handler(request: web.Request) -> web.StreamResponse:
            off = self._off()
            if off is not None:
                return off
            session = self.session(request)
            if session is None:
                if request.method not in ("GET", "HEAD"):
                    return error_response(401, "unauthorized", "admin session required")
                target = _here(request) + (
                    f"?{request.query_string}" if request.query_string else ""
                )
                raise web.HTTPSeeOther("login?next=" + quote(target, safe=""))
            view = View(self.live, self.providers, request.query, session.csrf, self.live.clock())
            title, body = await render(view)
            return self.html(page(title, _here(request) or "./", body, csrf=session.csrf))

        return handler

    def action(self, act: Action) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """A POST handler running `act` for a signed-in operator whose form carries the CSRF
        token; answers 303 to the page `act` names."""

        async def handler(request: web.Request) -> web.StreamResponse:
            off = self._off()
            if off is not None:
                return off
            session = self.session(request)
            if session is None:
                return error_response(401, "unauthorized", "admin session required")
            if not _same_origin(request):
                return error_response(403, "forbidden", "cross-origin form refused")
            form = await _form(request)
            if form is None:
                return error_response(413, "payload_too_large", "form too large")
            if not self.sessions.check_csrf(session, form.get("csrf")):
                return error_response(403, "forbidden", "missing or wrong CSRF token")
            view = View(self.live, self.providers, request.query, session.csrf, self.live.clock())
            raise web.HTTPSeeOther(await act(view, form))

        return handler


def _see_other(location: str) -> web.Response:
    """A 303 answer (returned, not raised: it carries a Set-Cookie)."""
    return web.Response(status=303, headers={**SECURITY_HEADERS, "Location": location})


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _here(request: web.Request) -> str:
    """The page's link relative to /admin/ ("" for the overview)."""
    return request.path.rpartition("/")[2]


def safe_next(raw: str | None) -> str:
    """Where to go after login or an action: a dashboard page link relative to /admin/ (a page
    name and a query, never a path or another site)."""
    page_name, mark, query = (raw or "").partition("?")
    if not _PAGE.fullmatch(page_name):
        return "./"
    return (page_name or "./") + (f"?{query}" if mark and query else "")


def _same_origin(request: web.Request) -> bool:
    """A browser's Origin (when sent) must be the dashboard's own host."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == request.host.lower()


async def _form(request: web.Request) -> MultiDictProxy[str] | None:
    """The urlencoded form of a POST (None when it is too large); files are ignored."""
    if request.content_length is not None and request.content_length > MAX_FORM:
        return None
    try:
        data = await request.post()
    except web.HTTPRequestEntityTooLarge:
        return None
    return MultiDictProxy(MultiDict((k, v) for k, v in data.items() if isinstance(v, str)))
