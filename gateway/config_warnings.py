"""Advice about a valid configuration: what `check-config` warns about without failing.

Secrets belong in the environment (`env:NAME`) or in a file (`file:PATH`), never in the config
file itself, which tends to end up in backups, repositories and support tickets. A literal is
still accepted (local trials, tests), so this only names each one by its key path.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterator, Mapping
from typing import Any

from gateway.config import Config
from gateway.core.secret import Secret

LITERAL_SECRET = "plain-text secret in the config file; write env:NAME or file:PATH"  # noqa: S105


def warnings(config: Config) -> list[tuple[str, str]]:
    """Return (key path, reason) for everything worth fixing in a valid config."""
    found = [(path, LITERAL_SECRET) for path in literal_secrets(config)]
    if config.metrics.port and not _private(config.metrics.host):
        found.append(("metrics.host", OPEN_METRICS))
    return found


OPEN_METRICS = (
    "the metrics listener asks no token; bind it to a loopback or private address"
    " (or scrape /metrics on the main listener with the admin token)"
)


def _private(host: str) -> bool:
    """Whether `host` is a loopback or private address (a name is given the benefit)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return True  # a host name: what it resolves to is the operator's knowledge
    return (address.is_private or address.is_loopback) and not address.is_unspecified


def literal_secrets(config: Config) -> list[str]:
    """Key paths of secrets written as literals (`sites[0].destinations.meta.access_token`)."""
    return list(_literals(config, ""))


def _literals(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, Secret):
        if value.source == "literal":
            yield path
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for fld in dataclasses.fields(value):
            name = f"{path}.{fld.name}" if path else fld.name
            yield from _literals(getattr(value, fld.name), name)
    elif isinstance(value, tuple):
        for i, item in enumerate(value):
            yield from _literals(item, f"{path}[{i}]")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _literals(item, f"{path}.{key}")
