"""The default event-name table across platforms, generated from each destination's own table.

Each platform module keeps its own canonical name → platform name table (`EVENT_NAMES`; LinkedIn's
`RULE_TYPES` names the conversion rule type instead; Meta has none: the canonical names are
Meta's). `markdown` renders them side by side for README.md ("Default event names"), which a test
keeps equal to this output; regenerate it with `python -m gateway.destinations.names`.

A site overrides any cell per destination with `event_names` (gateway/core/routing.py); the
platform's own mapping then applies to the overridden name.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Final

from gateway.core.event import STANDARD_EVENT_ORDER, STANDARD_EVENTS
from gateway.destinations import DESTINATIONS

CANONICAL_ORDER: Final = STANDARD_EVENT_ORDER
"""Rows of the table: every standard event (core.event STANDARD_EVENTS), funnel order."""

CUSTOM_ROW: Final = "my_event"
"""The example custom name of the table's last row."""

TABLES: Final = ("EVENT_NAMES", "RULE_TYPES")
"""Module attributes read as a platform's table, first found wins."""

_Cell = Callable[[str], str]


def _same(name: str) -> str:
    return f"`{name}`"


def _custom(name: str) -> str:
    return f"`{name}` (custom)"


FALLBACK: Final[Mapping[str, _Cell]] = {
    "meta": lambda name: _same(name) if name in STANDARD_EVENTS else _custom(name),
    "tiktok": _custom,
    "snap": lambda name: "— (refused unless mapped)",
    "pinterest": lambda name: "`custom`",
    "reddit": lambda name: f"`CUSTOM` `{name}`",
    "linkedin": lambda name: "— (needs its own rule)",
    "microsoft": lambda name: "`pageLoad` (type)" if name == "PageView" else _same(name),
    "google_ads": lambda name: (
        "`purchase_action`" if name == "Purchase" else "`conversion_actions` entry, else not sent"
    ),
    "x": lambda name: (
        "`purchase_event_id`" if name == "Purchase" else "`event_ids` entry, else not sent"
    ),
}
"""What each platform does with a name outside its table (its module's documented rule);
a platform not listed sends the name unchanged."""

MAPPED: Final[Mapping[str, _Cell]] = {
    "linkedin": lambda kind: f"`{kind}` rule",
}
"""How a table entry reads when it is not the sent name itself (LinkedIn: a rule type)."""


def platform_table(platform: str) -> Mapping[str, str]:
    """Return the platform's own canonical → platform name table (empty if it has none)."""
    home = DESTINATIONS[platform].settings.__module__
    package = home.rpartition(".")[0]
    modules = [importlib.import_module(home)]
    if package != "gateway.destinations":  # a platform package: its mapping module, if any
        with contextlib.suppress(ModuleNotFoundError):
            modules.append(importlib.import_module(f"{package}.mapping"))
    for module in modules:
        for attr in TABLES:
            found = getattr(module, attr, None)
            if isinstance(found, Mapping):
                return found
    return {}


def columns() -> list[str]:
    """Meta first (the canonical names are its names), then the others alphabetically."""
    return sorted(DESTINATIONS, key=lambda name: (name != "meta", name))


def cell(platform: str, name: str) -> str:
    """Return what `platform` receives for the canonical event `name` by default."""
    mapped = platform_table(platform).get(name)
    if mapped is not None:
        return MAPPED.get(platform, _same)(mapped)
    return FALLBACK.get(platform, _same)(name)


def markdown() -> str:
    """Return the README table: canonical name by platform (no trailing newline)."""
    names = columns()
    lines = [
        "| canonical | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for name in (*CANONICAL_ORDER, CUSTOM_ROW):
        label = f"`{name}`" if name != CUSTOM_ROW else f"`{name}` (any custom name)"
        lines.append(f"| {label} | " + " | ".join(cell(p, name) for p in names) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - a developer's regeneration aid
    sys.stdout.write(markdown() + "\n")
