"""Dashboard sessions: signed expiring values, CSRF tokens, revocation, the login limiter."""

from __future__ import annotations

import pytest
from conftest import FakeClock

from gateway.web.dashboard.auth import (
    LoginLimiter,
    Sessions,
    cookie_header,
    session_key,
)

KEY = session_key(b"k" * 32, "admin-token-0123456789")


def test_an_issued_session_verifies_and_carries_no_token() -> None:
    clock = FakeClock()
    sessions = Sessions(KEY, clock)
    value, session = sessions.issue()
    assert "admin-token" not in value
    assert sessions.verify(value) == session
    assert session.expires == int(clock.now + sessions.lifetime)


@pytest.mark.parametrize("position", [3, 15, -1])
def test_a_tampered_session_is_refused(position: int) -> None:
    sessions = Sessions(KEY, FakeClock())
    value, _ = sessions.issue()
    chars = list(value)
    chars[position] = "A" if chars[position] != "A" else "B"
    assert sessions.verify("".join(chars)) is None


def test_garbage_is_refused() -> None:
    sessions = Sessions(KEY, FakeClock())
    for value in (
        None,
        "",
        "v1",
        "x" * 300,
        "v1.1.abc.def",
        "v2.1.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA",
    ):
        assert sessions.verify(value) is None


def test_a_session_expires() -> None:
    clock = FakeClock()
    sessions = Sessions(KEY, clock, lifetime=100)
    value, _ = sessions.issue()
    clock.advance(99)
    assert sessions.verify(value) is not None
    clock.advance(1)
    assert sessions.verify(value) is None


def test_a_new_admin_token_or_cookie_key_ends_every_session() -> None:
    clock = FakeClock()
    value, _ = Sessions(KEY, clock).issue()
    assert Sessions(session_key(b"k" * 32, "another-token"), clock).verify(value) is None
    assert Sessions(session_key(b"j" * 32, "admin-token-0123456789"), clock).verify(value) is None


def test_revoked_sessions_are_refused_and_others_kept() -> None:
    clock = FakeClock()
    sessions = Sessions(KEY, clock)
    one, first = sessions.issue()
    two, _ = sessions.issue()
    sessions.revoke(first)
    assert sessions.verify(one) is None
    assert sessions.verify(two) is not None


def test_csrf_tokens_are_per_session() -> None:
    sessions = Sessions(KEY, FakeClock())
    _, a = sessions.issue()
    _, b = sessions.issue()
    assert a.csrf != b.csrf
    assert sessions.check_csrf(a, a.csrf)
    assert not sessions.check_csrf(a, b.csrf)
    assert not sessions.check_csrf(a, None)
    assert not sessions.check_csrf(a, "")


def test_cookie_header_flags() -> None:
    plain = cookie_header("v1.1.abc", secure=False, max_age=60)
    assert plain == "sg_admin=v1.1.abc; Max-Age=60; HttpOnly; SameSite=Strict"
    assert cookie_header("x", secure=True, max_age=0).endswith("; Secure")
    with pytest.raises(ValueError, match="cookie-safe"):
        cookie_header("a;b", secure=False, max_age=1)


def test_the_limiter_blocks_after_five_failures_in_a_minute() -> None:
    clock = FakeClock()
    limiter = LoginLimiter(clock)
    for _ in range(4):
        limiter.failed("198.51.100.1")
        clock.advance(1)
    assert limiter.retry_after("198.51.100.1") is None
    limiter.failed("198.51.100.1")
    wait = limiter.retry_after("198.51.100.1")
    assert wait is not None
    assert 55 <= wait <= 61
    assert limiter.retry_after("198.51.100.2") is None  # per client
    clock.advance(57)  # the first failure leaves the window
    assert limiter.retry_after("198.51.100.1") is None


def test_a_success_forgets_the_failures() -> None:
    limiter = LoginLimiter(FakeClock())
    for _ in range(4):
        limiter.failed("a")
    limiter.succeeded("a")
    limiter.failed("a")
    assert limiter.retry_after("a") is None
