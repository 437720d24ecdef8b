"""Access tokens for destinations whose API wants a short-lived OAuth2 token (Google Ads).

Destinations stay pure: they never send. A destination that needs an access token implements
`TokenUser`; before each delivery request the worker asks it for a token request
(`token_request(now)`, None while the cached token is good), sends that request with the
route's client and hands the answer back (`token_answer`). The destination keeps the token and
its expiry itself — the clock is passed in, never read.

`RefreshTokenGrant` is the pure state of the OAuth2 refresh-token grant (RFC 6749 §6) a
destination holds: it builds the form POST to the token endpoint, reads the answer, and caches
the access token until shortly before it expires. The access token, the client secret and the
refresh token only ever appear in request bodies and the `Authorization` header, never in a
reason or a log line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable
from urllib.parse import urlencode

import httpx

from gateway.destinations.base import Outcome, Paused, Retry, parse_retry_after
from gateway.destinations.common import json_object

REFRESH_MARGIN: Final = 300.0
"""Refresh this many seconds before the token expires: a request in flight must not outlive it."""
DEFAULT_LIFETIME: Final = 3600.0
"""Lifetime assumed when the token endpoint sends no `expires_in` (Google's tokens last 1 h)."""
MIN_LIFETIME: Final = 60.0
"""An `expires_in` below this is read as this: a token is used at least once before refreshing."""
REFUSED_ERRORS: Final = frozenset(
    {"invalid_grant", "invalid_client", "unauthorized_client", "unsupported_grant_type"}
)
"""RFC 6749 §5.2 errors that mean the configured credentials are wrong or revoked."""


@runtime_checkable
class TokenUser(Protocol):
    """A destination that needs a fresh access token before each delivery request."""

    def token_request(self, now: float) -> httpx.Request | None:
        """Return the request for a new access token, or None while the cached one is good."""

    def token_answer(self, response: httpx.Response, now: float) -> Outcome | None:
        """Keep the token from the token endpoint's answer (None), or say why not (an outcome
        for the whole batch: Retry for a passing failure, Paused for refused credentials)."""


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    expires_at: float


class RefreshTokenGrant:
    """The cached access token of one route and how to refresh it (pure: no I/O, no clock)."""

    def __init__(self, url: str, client_id: str, client_secret: str, refresh_token: str) -> None:
        self.url = url
        self._form = {
            "grant_type": "refresh_token",
            "client_id": client_id,
            "client_secret": client_secret,
            "refresh_token": refresh_token,
        }
        self._token: _Token | None = None
        self.refreshes = 0
        """How many tokens were obtained (for tests and the route's counters)."""

    def __repr__(self) -> str:
        state = "valid" if self._token is not None else "none"
        return f"RefreshTokenGrant(url={self.url!r}, token={state})"

    def needs_refresh(self, now: float) -> bool:
        """Return whether no token is cached or it expires within `REFRESH_MARGIN`."""
        return self._token is None or now >= self._token.expires_at - REFRESH_MARGIN

    def request(self, now: float) -> httpx.Request | None:
        """Return the form POST of the refresh-token grant, or None while the token is good."""
        if not self.needs_refresh(now):
            return None
        return httpx.Request(
            "POST",
            self.url,
            content=urlencode(self._form).encode(),
            headers={
                "content-type": "application/x-www-form-urlencoded",
                "accept": "application/json",
            },
        )

    def answer(self, response: httpx.Response, now: float) -> Outcome | None:
        """Cache the token of a 2xx answer; else return Retry (5xx, 429, 408, unreadable) or
        Paused (the endpoint refused the client or the refresh token)."""
        status = response.status_code
        body = json_object(response)
        error = body.get("error") if body is not None else None
        error = error if isinstance(error, str) else ""
        if 200 <= status < 300:
            token = body.get("access_token") if body is not None else None
            if not isinstance(token, str) or not token:
                return Retry(f"token endpoint: HTTP {status} without an access_token")
            expires_in = body.get("expires_in") if body is not None else None
            lifetime = DEFAULT_LIFETIME
            if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
                lifetime = max(MIN_LIFETIME + REFRESH_MARGIN, float(expires_in))
            self._token = _Token(token, now + lifetime)
            self.refreshes += 1
            return None
        self._token = None
        where = f"token endpoint: HTTP {status}" + (f", {error}" if error else "")
        if status in (408, 429) or status >= 500:
            return Retry(where, parse_retry_after(response.headers.get("retry-after"), now))
        if error in REFUSED_ERRORS or status in (400, 401, 403):
            hint = (
                "the refresh token was refused (expired or revoked): create a new one"
                if error == "invalid_grant"
                else "client_id / client_secret refused"
                if error in ("invalid_client", "unauthorized_client")
                else "credentials refused"
            )
            return Paused(f"{where} ({hint})")
        return Paused(f"{where} (check token_url)")

    def bearer(self) -> dict[str, str]:
        """Return the Authorization header of the cached token ({} when there is none)."""
        if self._token is None:
            return {}
        return {"authorization": f"Bearer {self._token.value}"}

    def drop(self) -> None:
        """Forget the cached token (the API said it has expired): the next request refreshes."""
        self._token = None
