"""What a field rule is: its signature, its refusal (`Dropped`) and the input bound it relies on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

MAX_INPUT: Final = 1024
"""Longer raw values are refused outright; no real identifier is that long."""


@dataclass(frozen=True, slots=True)
class Dropped:
    """A value that cannot be normalised, with a short human reason."""

    reason: str


_Rule: TypeAlias = Callable[[str, str | None], str | Dropped]
"""A field rule: (stripped non-empty value, default country alpha-2 or None) → result."""
