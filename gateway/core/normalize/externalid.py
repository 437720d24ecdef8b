"""The external_id rules: the shop's own customer id, folded (Meta) or only trimmed (Reddit)."""

from __future__ import annotations

from typing import Final

from gateway.core.normalize.rule import Dropped

MAX_EXTERNAL_ID: Final = 256


def _external_id(value: str, _default: str | None) -> str | Dropped:
    """Lowercase with all whitespace removed (Meta param builder)."""
    text = "".join(c for c in value.lower() if not c.isspace())
    if len(text) > MAX_EXTERNAL_ID:
        return Dropped(f"external_id longer than {MAX_EXTERNAL_ID} characters")
    return text


def _external_id_trimmed(value: str, _default: str | None) -> str | Dropped:
    """Trimmed only (Reddit, platforms.md §7): the id as the shop knows it, case kept."""
    if len(value) > MAX_EXTERNAL_ID:
        return Dropped(f"external_id longer than {MAX_EXTERNAL_ID} characters")
    return value
