"""A secret value whose repr never shows it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Secret:
    """A credential resolved from `env:NAME`, `file:PATH` or a literal; hidden in repr/str."""

    value: str = field(repr=False)
    source: str = "literal"

    def __str__(self) -> str:
        return f"Secret({self.source})"

    def __repr__(self) -> str:
        return f"Secret({self.source})"
