"""examples/full.toml holds every key of the Config dataclasses and passes check-config."""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import pytest

from gateway.cli import main
from gateway.config import SECTIONS, Config, SiteConfig
from gateway.core.routing import RouteRules
from gateway.core.secret import Secret
from gateway.destinations import DESTINATIONS

ROOT = Path(__file__).resolve().parents[2]
FULL = ROOT / "examples" / "full.toml"
ENV = {
    "SHOP_API_KEY": "k" * 24,
    "GA4_API_SECRET": "ga4-api-secret",
    "GOOGLE_ADS_DEVELOPER_TOKEN": "google-ads-developer-token",
    "GOOGLE_ADS_CLIENT_SECRET": "google-ads-client-secret",
    "GOOGLE_ADS_REFRESH_TOKEN": "google-ads-refresh-token",
    "LINKEDIN_ACCESS_TOKEN": "linkedin-token",
    "META_ACCESS_TOKEN": "meta-token",
    "PINTEREST_ACCESS_TOKEN": "pinterest-token",
    "MICROSOFT_CAPI_TOKEN": "microsoft-token",
    "REDDIT_ACCESS_TOKEN": "reddit-token",
    "SNAP_ACCESS_TOKEN": "snap-token",
    "TIKTOK_ACCESS_TOKEN": "tiktok-token",
    "X_CONSUMER_KEY": "x-consumer-key",
    "X_CONSUMER_SECRET": "x-consumer-secret",
    "X_ACCESS_TOKEN": "x-access-token",
    "X_ACCESS_TOKEN_SECRET": "x-access-token-secret",
    "SIGNALGATE_ADMIN_TOKEN": "admin-token-0123456789",
    "SIGNALGATE_COOKIE_SECRET": "cookie-secret-0123456789",
    "SIGNALGATE_PG_DSN": "postgresql://signalgate@db.internal:5432/signalgate",
}
_COMMENTED_KEY = re.compile(r"^#\s*([A-Za-z_][A-Za-z0-9_]*\s*=.*)$", re.MULTILINE)


def _table_type(tp: Any) -> type[Any] | None:
    """The dataclass a field's value is written as (a table or an array of tables), if any."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return _table_type(inner[0]) if len(inner) == 1 else None
    if origin is tuple:
        args = get_args(tp)
        return _table_type(args[0]) if args else None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp) and tp is not Secret:
        return tp
    return None


def key_paths(cls: type[Any], prefix: str) -> Iterator[str]:
    """Every key path a config dataclass accepts (`sites[].destinations.meta.pixel_id`)."""
    hints = get_type_hints(cls)
    for fld in dataclasses.fields(cls):
        path = f"{prefix}.{fld.name}" if prefix else fld.name
        tp = hints[fld.name]
        if cls is SiteConfig and fld.name == "destinations":
            for name, reg in DESTINATIONS.items():
                yield from key_paths(reg.settings, f"{path}.{name}")
            yield from key_paths(RouteRules, f"{path}.*")  # any destination's routing keys
            continue
        if fld.metadata.get("derived"):
            continue
        sub = _table_type(tp)
        if sub is not None:
            is_array = get_origin(tp) is tuple
            yield from key_paths(sub, f"{path}[]" if is_array else path)
        else:
            yield path  # a value, a list of values or a free-form table (cmp_mapping)


def all_key_paths() -> set[str]:
    """Key paths of the whole Config: its fields and every registered section."""
    paths = set(key_paths(Config, ""))
    for name, cls in SECTIONS.items():
        paths |= set(key_paths(cls, name))
    return paths


def present(doc: Any, path: str) -> bool:
    """Whether `path` (with `[]` for arrays of tables) is set in the parsed document."""
    node: Any = doc
    parts = path.split(".")
    for at, part in enumerate(parts):
        if part == "*":  # some child table holds the rest of the path
            rest = ".".join(parts[at + 1 :])
            return isinstance(node, dict) and any(present(child, rest) for child in node.values())
        is_array = part.endswith("[]")
        name = part[:-2] if is_array else part
        if not isinstance(node, dict) or name not in node:
            return False
        node = node[name]
        if is_array:
            if not isinstance(node, list) or not node:
                return False
            node = node[0]
    return True


def full_doc() -> dict[str, Any]:
    """full.toml parsed with `# key = value` lines counted (optional keys shown commented)."""
    return tomllib.loads(_COMMENTED_KEY.sub(r"\1", FULL.read_text()))


def test_walk_finds_the_known_keys() -> None:
    paths = all_key_paths()
    for expected in (
        "server.port",
        "storage.writer",
        "delivery.merge_seconds",
        "sites[].rate_limit_per_second",
        "sites[].consent.cmp_mapping",
        "sites[].proxy.meta_upstream",
        "sites[].destinations.meta.pixel_id",
    ):
        assert expected in paths
    assert "sites[].destinations" not in paths


def test_present_reports_a_missing_key() -> None:
    doc = {"server": {"port": 1}, "sites": [{"id": "s", "proxy": {}}]}
    assert present(doc, "server.port")
    assert not present(doc, "server.host")
    assert present(doc, "sites[].id")
    assert not present(doc, "sites[].proxy.prefix")
    assert not present({"sites": []}, "sites[].id")


def test_full_example_holds_every_key() -> None:
    doc = full_doc()
    missing = sorted(p for p in all_key_paths() if not present(doc, p))
    assert missing == [], "examples/full.toml lacks: " + ", ".join(missing)


@pytest.mark.parametrize("uncomment", [False, True], ids=["as-shipped", "optional-keys-on"])
def test_full_example_passes_check_config(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    uncomment: bool,
) -> None:
    text = FULL.read_text()
    config = tmp_path / "full.toml"
    config.write_text(_COMMENTED_KEY.sub(r"\1", text) if uncomment else text)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "shop_api_key_2").write_text("second-key-0123456789\n")
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    assert main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == "OK", out.err
    assert out.err == ""  # no warnings either: every secret is env: or file:
