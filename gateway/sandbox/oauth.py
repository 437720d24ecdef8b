"""A local OAuth2 token endpoint: the refresh-token grant (RFC 6749 §6) with fault knobs.

A platform emulator whose API wants short-lived access tokens (Google Ads) owns one and serves
`handle` at its token path. A form POST with `grant_type=refresh_token`, the known client id and
secret and the accepted refresh token gets `{"access_token", "expires_in", "scope",
"token_type": "Bearer"}`; a wrong client gets 401 `invalid_client`, a wrong refresh token — or
any while the `refuse_refresh` knob is set — 400 `invalid_grant`, another grant type 400
`unsupported_grant_type`. The `errors` knob answers that many requests with 503 first. Tokens
live `lifetime` seconds on the emulator's clock; `check` tells the API side whether a bearer
token is valid, expired or unknown, and `expire_all` ends every token issued so far.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Literal
from urllib.parse import parse_qs

from aiohttp import web

__all__ = ["RefreshTokenEndpoint", "TokenState"]

TokenState = Literal["valid", "expired", "unknown"]

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


class RefreshTokenEndpoint:
    """The token endpoint's state: credentials, issued tokens and knobs."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        scope: str,
        lifetime: float,
        clock: Callable[[], float],
        token_prefix: str = "",
        seed: int = 0,
    ) -> None:
        """Keep the accepted client and refresh token, the scope and lifetime of tokens."""
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self.scope = scope
        self.lifetime = lifetime
        self.clock = clock
        self.token_prefix = token_prefix
        self.refuse_refresh = False
        """Knob: refuse every refresh token (400 invalid_grant), e.g. a revoked consent."""
        self.errors = 0
        """Knob: answer this many requests with 503 before working again."""
        self.tokens: dict[str, float] = {}
        """Issued access token → its expiry on the clock."""
        self.requests = 0
        self._rng = random.Random(f"oauth-{seed}")

    def reset(self) -> None:
        """Forget issued tokens and counts; knobs back to their defaults."""
        self.refuse_refresh = False
        self.errors = 0
        self.tokens.clear()
        self.requests = 0

    def check(self, token: str) -> TokenState:
        """Return whether `token` was issued here and has not expired."""
        expiry = self.tokens.get(token)
        if expiry is None:
            return "unknown"
        return "valid" if self.clock() < expiry else "expired"

    def expire_all(self) -> None:
        """End every token issued so far (the next refresh gets a working one)."""
        now = self.clock()
        self.tokens = {token: min(expiry, now - 1) for token, expiry in self.tokens.items()}

    async def handle(self, request: web.Request) -> web.Response:
        """Answer one token request."""
        self.requests += 1
        if self.errors > 0:
            self.errors -= 1
            return web.json_response({"error": "internal_failure"}, status=503)
        if request.content_type != "application/x-www-form-urlencoded":
            return _error(400, "invalid_request", "A form body is expected.")
        try:
            form = parse_qs((await request.read()).decode())
        except UnicodeDecodeError:
            return _error(400, "invalid_request", "A form body is expected.")
        values = {key: v[0] for key, v in form.items() if len(v) == 1}
        if values.get("grant_type") != "refresh_token":
            return _error(400, "unsupported_grant_type", "Only refresh_token is emulated.")
        if (
            values.get("client_id") != self.client_id
            or values.get("client_secret") != self.client_secret
        ):
            return _error(401, "invalid_client", "The OAuth client was not found.")
        if self.refuse_refresh or values.get("refresh_token") != self.refresh_token:
            return _error(400, "invalid_grant", "Token has been expired or revoked.")
        token = self.token_prefix + "".join(self._rng.choice(_ALPHABET) for _ in range(40))
        self.tokens[token] = self.clock() + self.lifetime
        return web.json_response(
            {
                "access_token": token,
                "expires_in": int(self.lifetime),
                "scope": self.scope,
                "token_type": "Bearer",
            }
        )


def _error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)
