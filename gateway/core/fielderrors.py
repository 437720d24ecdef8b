"""Field-path errors: one problem with one input field, and the collector a parser fills."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one input field, addressed by its JSON path."""

    path: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        """Return the JSON shape used in API answers."""
        return {"path": self.path, "reason": self.reason}


class _Errors:
    """Collects field errors under a path prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.items: list[FieldError] = []

    def add(self, path: str, reason: str) -> None:
        self.items.append(FieldError(f"{self.prefix}{path}" if path else self.prefix, reason))
