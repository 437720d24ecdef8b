"""ACME HTTP-01 challenges: `GET /.well-known/acme-challenge/{token}` answered from memory.

An ACME client (the `[acme]` section) `put`s token → key authorisation while an order is being
validated and `remove`s it afterwards; the gateway serves the store on every listener (the
HTTPS one and the plain `tls.http_port` one, which redirects everything else to https). The
handler finds the store in the app under `CHALLENGES`. Unknown tokens are 404.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

CHALLENGE_PREFIX: Final = "/.well-known/acme-challenge/"
"""Path prefix of HTTP-01 challenges (RFC 8555 §8.3)."""
CHALLENGE_ROUTE: Final = CHALLENGE_PREFIX + "{token}"


class ChallengeStore:
    """Token → key authorisation of the HTTP-01 challenges being validated now."""

    def __init__(self) -> None:
        self._answers: dict[str, str] = {}

    def put(self, token: str, key_authorization: str) -> None:
        """Serve `key_authorization` for `token` until it is removed."""
        self._answers[token] = key_authorization

    def remove(self, token: str) -> None:
        """Stop serving `token` (no error when it is unknown)."""
        self._answers.pop(token, None)

    def get(self, token: str) -> str | None:
        """Return the key authorisation of `token`, or None."""
        return self._answers.get(token)


CHALLENGES = web.AppKey("acme_challenges", ChallengeStore)


async def challenge_handler(request: web.Request) -> web.Response:
    """Answer one HTTP-01 challenge: the key authorisation as text/plain, else 404."""
    store = request.app.get(CHALLENGES)
    answer = store.get(request.match_info["token"]) if store is not None else None
    if answer is None:
        return web.Response(status=404, text="unknown challenge token\n")
    return web.Response(text=answer, content_type="text/plain")


def install(app: web.Application, store: ChallengeStore | None = None) -> ChallengeStore:
    """Add the challenge route to `app` with `store` (a new one by default); return the store."""
    store = store if store is not None else ChallengeStore()
    app[CHALLENGES] = store
    app.router.add_get(CHALLENGE_ROUTE, challenge_handler)
    return store
