"""`signalgate audit` helpers: ages become absolute times; the gateway's refusals are one line."""

from __future__ import annotations

import json

from gateway.audit_cli import _message, when

NOW = 1_790_000_000.0


def test_ages_become_unix_seconds_and_absolute_times_pass_through() -> None:
    assert when("7d", NOW) == repr(NOW - 7 * 86400)
    assert when("24h", NOW) == repr(NOW - 86400)
    assert when("90m", NOW) == repr(NOW - 5400)
    assert when("1.5w", NOW) == repr(NOW - 1.5 * 604800)
    assert when("100000w", NOW) == "0.0"  # never before the epoch
    assert when("1700000000", NOW) == "1700000000"
    assert when(" 2026-05-01T00:00:00Z ", NOW) == "2026-05-01T00:00:00Z"
    assert when("  ", NOW) is None


def test_a_refusal_names_its_fields() -> None:
    body = {
        "error": "bad_request",
        "message": "invalid gap query",
        "errors": [{"path": "since", "reason": "must be before until"}],
    }
    assert _message(json.dumps(body).encode()) == "invalid gap query (since: must be before until)"
    assert _message(b"<html>") == "no JSON answer"
    assert _message(b"[1]") == "no JSON answer"
