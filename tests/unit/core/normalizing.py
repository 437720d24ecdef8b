"""Helpers shared by the normaliser's tests (tests/unit/core/test_normalize*.py)."""

from __future__ import annotations

from gateway.core.normalize import check
from gateway.core.normalize.rule import Dropped


def dropped(field: str, value: str, platform: str = "meta", default: str | None = None) -> str:
    """Return the reason `value` was dropped, failing if it was not."""
    result = check(field, value, platform, default_country=default)
    assert isinstance(result, Dropped), f"{field}={value!r} unexpectedly gave {result!r}"
    return result.reason


def fullwidth(text: str) -> str:
    """Return `text` with ASCII letters, digits and symbols in their fullwidth forms."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
