"""Admin dashboard sessions: login, signed expiring session cookies, CSRF tokens, rate limit.

* The session cookie ``sg_admin`` holds ``v1.<expires>.<nonce>.<sig>``: an expiry (Unix seconds),
  a random nonce and HMAC-SHA256 over both, truncated to 128 bits (base64url). The MAC key is
  derived from the gateway's cookie key *and* a digest of the admin token, so a new admin token
  ends every session, and the cookie never carries the token or anything derived from it alone.
* The cookie is ``HttpOnly; SameSite=Strict`` and ``Secure`` when the request came over HTTPS
  (directly or through a trusted proxy's ``X-Forwarded-Proto``). It names no Path: the browser
  scopes it to the login form's directory, ``/admin`` (or ``/t/admin`` behind a path prefix).
* Every form that changes state carries the session's CSRF token (an HMAC of the nonce under the
  same key); a POST without the right one is refused with 403.
* Logging out revokes the nonce until its expiry (kept in memory, bounded).
* Failed logins are limited per client IP: `MAX_FAILURES` within `FAILURE_WINDOW` seconds, then
  429 with ``Retry-After`` until the oldest failure leaves the window.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

COOKIE: Final = "sg_admin"
SESSION_SECONDS: Final = 8 * 3600
"""How long a session lasts after login."""
MAX_FAILURES: Final = 5
FAILURE_WINDOW: Final = 60.0
MAX_TRACKED: Final = 10_000
"""Most client addresses (and revoked sessions) remembered; the oldest are forgotten first."""

_CONTEXT: Final = b"signalgate-admin-session-v1:"
_VALUE: Final = re.compile(r"v1\.(\d{1,12})\.([A-Za-z0-9_-]{16,64})\.([A-Za-z0-9_-]{22})")

Clock = Callable[[], float]


def _mac(key: bytes, message: str) -> str:
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def session_key(cookie_key: bytes, admin_token: str) -> bytes:
    """Return the MAC key of admin sessions (changes when either input changes)."""
    token_digest = hashlib.sha256(admin_token.encode()).digest()
    return hmac.new(cookie_key, _CONTEXT + token_digest, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Session:
    """A verified session."""

    nonce: str
    expires: float
    csrf: str


class Sessions:
    """Issues and verifies session cookie values; remembers revoked ones until they expire."""

    def __init__(
        self,
        key: bytes,
        clock: Clock,
        *,
        lifetime: float = SESSION_SECONDS,
        new_nonce: Callable[[], str] = lambda: secrets.token_urlsafe(16),
    ) -> None:
        self._key = key
        self._clock = clock
        self.lifetime = lifetime
        self._new_nonce = new_nonce
        self._revoked: OrderedDict[str, float] = OrderedDict()

    def issue(self) -> tuple[str, Session]:
        """Return a new cookie value and its session."""
        nonce = self._new_nonce()
        expires = int(self._clock() + self.lifetime)
        value = f"v1.{expires}.{nonce}.{_mac(self._key, f'session:{expires}.{nonce}')}"
        return value, Session(nonce, float(expires), self.csrf_of(nonce))

    def verify(self, value: str | None) -> Session | None:
        """Return the session of a cookie value, None if it is forged, expired or revoked."""
        if not value or len(value) > 200:
            return None
        found = _VALUE.fullmatch(value)
        if found is None:
            return None
        expires, nonce, sig = found.groups()
        if not hmac.compare_digest(sig, _mac(self._key, f"session:{expires}.{nonce}")):
            return None
        if float(expires) <= self._clock() or nonce in self._revoked:
            return None
        return Session(nonce, float(expires), self.csrf_of(nonce))

    def csrf_of(self, nonce: str) -> str:
        """Return the CSRF token of the session with this nonce."""
        return _mac(self._key, f"csrf:{nonce}")

    def check_csrf(self, session: Session, given: str | None) -> bool:
        """Return whether `given` is the session's CSRF token (constant time)."""
        return given is not None and hmac.compare_digest(given.encode(), session.csrf.encode())

    def revoke(self, session: Session) -> None:
        """End a session before its expiry (logout)."""
        now = self._clock()
        for nonce, expires in list(self._revoked.items()):
            if expires <= now:
                del self._revoked[nonce]
        self._revoked[session.nonce] = session.expires
        while len(self._revoked) > MAX_TRACKED:
            self._revoked.popitem(last=False)


def cookie_header(value: str, *, secure: bool, max_age: int) -> str:
    """Return the Set-Cookie value of the session cookie (`max_age` 0 deletes it)."""
    if not re.fullmatch(r"[A-Za-z0-9._-]*", value):
        raise ValueError("session cookie value is not cookie-safe")
    flags = "; Secure" if secure else ""
    return f"{COOKIE}={value}; Max-Age={max_age}; HttpOnly; SameSite=Strict{flags}"


class LoginLimiter:
    """Failed logins per client address within a sliding window."""

    def __init__(
        self, clock: Clock, *, limit: int = MAX_FAILURES, window: float = FAILURE_WINDOW
    ) -> None:
        self._clock = clock
        self.limit = limit
        self.window = window
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, client: str) -> int | None:
        """Return the seconds a blocked client must wait, None when it may try now."""
        times = self._recent(client)
        if times is None or len(times) < self.limit:
            return None
        return max(1, int(times[0] + self.window - self._clock()) + 1)

    def failed(self, client: str) -> None:
        """Count a failed login of `client`."""
        times = self._recent(client)
        if times is None:
            times = deque(maxlen=self.limit)
            self._failures[client] = times
        times.append(self._clock())
        self._failures.move_to_end(client)
        while len(self._failures) > MAX_TRACKED:
            self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        """Forget a client's failures (it logged in)."""
        self._failures.pop(client, None)

    def _recent(self, client: str) -> deque[float] | None:
        times = self._failures.get(client)
        if times is None:
            return None
        cutoff = self._clock() - self.window
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        return times
