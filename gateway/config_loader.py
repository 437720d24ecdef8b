"""Reading TOML tables into the config's frozen dataclasses: each value checked against its
field's type and metadata (bounds, patterns, choices, URLs, networks), secrets resolved from
`env:NAME` / `file:PATH`, each destination table read by its platform's settings class with the
routing keys taken out first, and every error collected under its key path.

`gateway.config.parse` drives it over the sections (gateway/config.py, which declares them).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import ipaddress
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from gateway.core.routing import ROUTING_KEYS, RouteRules, check_rules
from gateway.core.secret import Secret
from gateway.destinations import DESTINATIONS


class Loader:
    """Builds frozen dataclasses from TOML tables, collecting every error as (key path, reason)
    in `errors` instead of stopping at the first. `sites` is the dataclass whose `destinations`
    table is read per platform (`destinations`), its routing keys going to its `routing`."""

    def __init__(self, environ: Mapping[str, str], base_dir: Path, *, sites: type[Any]) -> None:
        self.environ = environ
        self.sites = sites
        self.base_dir = base_dir
        self.errors: list[tuple[str, str]] = []

    def err(self, path: str, reason: str) -> None:
        self.errors.append((path, reason))

    def secret(self, raw: Any, path: str) -> Secret | None:
        if not isinstance(raw, str) or not raw:
            self.err(path, "expected a secret: env:NAME, file:PATH or a string")
            return None
        if raw.startswith("env:"):
            name = raw[4:]
            value = self.environ.get(name)
            if not value:
                self.err(path, f"environment variable {name} is not set")
                return None
            return Secret(value, raw)
        if raw.startswith("file:"):
            file = Path(raw[5:])
            file = file if file.is_absolute() else self.base_dir / file
            try:
                value = file.read_text().strip()
            except OSError as exc:
                self.err(path, f"cannot read secret file: {exc.strerror}")
                return None
            if not value:
                self.err(path, "secret file is empty")
                return None
            return Secret(value, raw)
        return Secret(raw, "literal")

    def value(self, tp: Any, raw: Any, path: str, meta: Mapping[str, Any]) -> Any:
        origin = get_origin(tp)
        if origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if raw is None:
                return None
            return self.value(args[0], raw, path, meta)
        if tp is Secret:
            return self.secret(raw, path)
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            return self.build(tp, raw, path)
        if origin in (collections.abc.Mapping, dict) and get_args(tp) == (str, str):
            if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
                self.err(path, "expected a table of strings")
                return {}
            if "value_pattern" in meta:
                for key, item in raw.items():
                    if not re.fullmatch(meta["value_pattern"], item):
                        self.err(f"{path}.{key}", f"expected {meta.get('expected', 'a value')}")
            return dict(raw)
        if origin is tuple:
            (inner,) = get_args(tp)[:1]
            if not isinstance(raw, list):
                self.err(path, "expected a list")
                return ()
            return tuple(self.value(inner, v, f"{path}[{i}]", meta) for i, v in enumerate(raw))
        if tp is bool:
            if not isinstance(raw, bool):
                self.err(path, "expected true or false")
            return raw
        if tp in (int, float):
            ok = isinstance(raw, int) if tp is int else isinstance(raw, int | float)
            if not ok or isinstance(raw, bool):
                self.err(path, "expected an integer" if tp is int else "expected a number")
                return raw
            if "min" in meta and raw < meta["min"]:
                self.err(path, f"expected >= {meta['min']}")
            if "max" in meta and raw > meta["max"]:
                self.err(path, f"expected <= {meta['max']}")
            return tp(raw)
        if tp is str:
            if not isinstance(raw, str):
                self.err(path, "expected a string")
                return raw
            if "pattern" in meta and not re.fullmatch(meta["pattern"], raw):
                self.err(path, f"expected {meta.get('expected', meta['pattern'])}")
            if "choices" in meta and raw not in meta["choices"]:
                self.err(path, "expected one of " + ", ".join(meta["choices"]))
            if meta.get("url") and not re.match(r"^https?://[^/\s]+", raw):
                self.err(path, "expected an http(s) URL")
            if meta.get("cidr"):
                try:
                    ipaddress.ip_network(raw, strict=False)
                except ValueError:
                    self.err(path, "expected an IP network such as 10.0.0.0/8")
            return raw
        raise TypeError(f"unsupported config type {tp!r}")  # pragma: no cover - programming error

    def build(self, cls: type[Any], raw: Any, path: str) -> Any:
        if not isinstance(raw, dict):
            self.err(path, "expected a table")
            return None
        before = len(self.errors)
        hints = get_type_hints(cls)
        known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("derived")}
        for key in raw:
            if key not in known:
                self.err(f"{path}.{key}", "unknown key")
        kwargs: dict[str, Any] = {}
        for name, fld in known.items():
            sub = f"{path}.{name}" if path else name
            if name not in raw:
                no_default = (
                    fld.default is dataclasses.MISSING
                    and fld.default_factory is dataclasses.MISSING
                )
                if no_default:
                    self.err(sub, "required")
                continue
            if name == "destinations" and cls is self.sites:
                kwargs[name], kwargs["routing"] = self.destinations(raw[name], sub)
                continue
            kwargs[name] = self.value(hints[name], raw[name], sub, fld.metadata)
        if len(self.errors) > before:
            return None
        return cls(**kwargs)

    def destinations(self, raw: Any, path: str) -> tuple[dict[str, Any], dict[str, RouteRules]]:
        """Each destination's settings, and its routing keys (`ROUTING_KEYS`, any platform)."""
        if not isinstance(raw, dict):
            self.err(path, "expected a table")
            return {}, {}
        out: dict[str, Any] = {}
        routing: dict[str, RouteRules] = {}
        for name, table in raw.items():
            if name not in DESTINATIONS:
                self.err(f"{path}.{name}", "unknown destination; known: " + ", ".join(DESTINATIONS))
                continue
            settings_cls = DESTINATIONS[name].settings
            own = table
            if isinstance(table, dict) and any(k in table for k in ROUTING_KEYS):
                own = {k: v for k, v in table.items() if k not in ROUTING_KEYS}
                keys = {k: table[k] for k in ROUTING_KEYS if k in table}
                rules = self.build(RouteRules, keys, f"{path}.{name}")
                if rules is not None:
                    routing[name] = rules
                    for key, reason in check_rules(rules):
                        self.err(f"{path}.{name}.{key}", reason)
            built = self.build(settings_cls, own, f"{path}.{name}")
            if built is not None:
                out[name] = built
        return out, routing
