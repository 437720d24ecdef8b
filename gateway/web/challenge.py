"""ACME HTTP-01 answers: `GET /.well-known/acme-challenge/{token}` from an in-memory store.

The ACME client (gateway/autocert/) puts a token's key authorisation here while the CA
validates the order and removes it afterwards. Tokens and key authorisations are never logged.
"""

from __future__ import annotations

import re

from aiohttp import web

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
CHALLENGE_ROUTE = CHALLENGE_PREFIX + "{token}"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")  # base64url, as RFC 8555 section 8.3 defines it


class ChallengeStore:
    """Token → key authorisation of the HTTP-01 challenges in flight.

    Plain dict operations: safe from one event loop, and each is atomic under the GIL, so the
    ACME client may call put/remove from its worker thread while the loop serves get.
    """

    def __init__(self) -> None:
        self._answers: dict[str, str] = {}

    def put(self, token: str, key_authorization: str) -> None:
        """Serve `key_authorization` for `token` until it is removed."""
        if not _TOKEN.fullmatch(token):
            raise ValueError("an ACME token is base64url text")
        self._answers[token] = key_authorization

    def remove(self, token: str) -> None:
        """Stop serving `token` (no error if it is not there)."""
        self._answers.pop(token, None)

    def get(self, token: str) -> str | None:
        """Return the key authorisation of `token`, or None."""
        return self._answers.get(token)


CHALLENGES = web.AppKey("acme_challenges", ChallengeStore)


async def challenge_handler(request: web.Request) -> web.Response:
    """Answer an HTTP-01 validation request: the key authorisation as text, else 404."""
    store = request.app.get(CHALLENGES)
    answer = store.get(request.match_info.get("token", "")) if store is not None else None
    if answer is None:
        raise web.HTTPNotFound(text="no such challenge\n")
    return web.Response(text=answer, content_type="text/plain")


def install(app: web.Application, store: ChallengeStore | None = None) -> ChallengeStore:
    """Serve `store` (a new one by default) on `app` under /.well-known/acme-challenge/; return
    it. Another listener (the plain one in front of HTTPS) may serve the same store."""
    store = store if store is not None else ChallengeStore()
    app[CHALLENGES] = store
    app.router.add_get(CHALLENGE_ROUTE, challenge_handler)
    return store
