"""Consent values: "granted"/"denied" (or true/false), never numbers (found by schemathesis)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.event import Consent
from gateway.core.eventparse import parse_event
from gateway.core.fielderrors import FieldError

NOW = 1_790_000_000.0


def consent_of(value: Any) -> Consent | list[FieldError]:
    obj = {"event": "Lead", "consent": {"ad_personalization": value}}
    parsed = parse_event(obj, now=NOW, new_id=lambda: "id")
    if isinstance(parsed, list):
        return parsed
    assert parsed.consent is not None
    return parsed.consent


@pytest.mark.parametrize(("value", "expected"), [("granted", True), (True, True),
                                                 ("denied", False), (False, False)])  # fmt: skip
def test_words_and_booleans_are_read(value: Any, expected: bool) -> None:
    assert consent_of(value) == Consent(ad_personalization=expected)


@pytest.mark.parametrize("value", [0, 1, 0.0, 1.0, "yes", ""])
def test_numbers_and_other_words_are_refused(value: Any) -> None:
    assert consent_of(value) == [
        FieldError(".consent.ad_personalization", 'expected "granted" or "denied"')
    ]
