"""Configuration: examples parse, every error names its key, README documents every key."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import (
    SECTIONS,
    ConfigError,
    ConsentConfig,
    ProxyConfig,
    SiteConfig,
    load,
    parse,
)
from gateway.core.routing import RouteRules
from gateway.destinations import DESTINATIONS

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    "SHOP_API_KEY": "k" * 24,
    "GA4_API_SECRET": "ga4-secret",
    "GOOGLE_ADS_DEVELOPER_TOKEN": "gads-dev",
    "GOOGLE_ADS_CLIENT_SECRET": "gads-secret",
    "GOOGLE_ADS_REFRESH_TOKEN": "gads-refresh",
    "LINKEDIN_ACCESS_TOKEN": "li-tok",
    "META_ACCESS_TOKEN": "tok",
    "PINTEREST_ACCESS_TOKEN": "pin-tok",
    "MICROSOFT_CAPI_TOKEN": "ms-tok",
    "REDDIT_ACCESS_TOKEN": "reddit-token",
    "SNAP_ACCESS_TOKEN": "snap-tok",
    "TIKTOK_ACCESS_TOKEN": "tok",
    "X_CONSUMER_KEY": "x-ck",
    "X_CONSUMER_SECRET": "x-cs",
    "X_ACCESS_TOKEN": "x-at",
    "X_ACCESS_TOKEN_SECRET": "x-ats",
    "SIGNALGATE_ADMIN_TOKEN": "adm",
    "SIGNALGATE_COOKIE_SECRET": "cookie-secret-0123456789",
    "SIGNALGATE_PG_DSN": "postgresql://signalgate@db.internal:5432/signalgate",
}


def errors_of(doc: dict[str, object], environ: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse(doc, environ or {}, Path("."))
    return dict(info.value.errors)


def site(**meta: object) -> dict[str, object]:
    return {
        "id": "shop",
        "api_keys": ["k" * 20],
        "destinations": {"meta": {"pixel_id": "123456", "access_token": "t", **meta}},
    }


class TestExamples:
    def test_minimal_parses(self) -> None:
        config = load(ROOT / "examples/minimal.toml", ENV)
        assert config.sites[0].destinations["meta"].pixel_id == "1234567890"
        assert config.server.port == 8080

    def test_full_parses(self, tmp_path: Path) -> None:
        shutil.copy(ROOT / "examples/full.toml", tmp_path / "full.toml")
        (tmp_path / "secrets").mkdir()
        (tmp_path / "secrets/shop_api_key_2").write_text("second-key-0123456789\n")
        config = load(tmp_path / "full.toml", ENV)
        assert config.sites[0].api_keys[1].value == "second-key-0123456789"
        assert config.server.admin_token is not None
        assert config.server.admin_token.value == "adm"
        assert len(config.proxy_networks) == 2


class TestErrors:
    def test_bad_pixel_id_names_the_key_and_form(self) -> None:
        errs = errors_of({"sites": [site(pixel_id="abc")]})
        assert errs == {"sites[0].destinations.meta.pixel_id": "expected digits"}

    def test_missing_env_secret_names_key_and_variable(self) -> None:
        errs = errors_of({"sites": [site(access_token="env:NOPE")]})
        assert errs["sites[0].destinations.meta.access_token"] == (
            "environment variable NOPE is not set"
        )

    def test_all_errors_are_collected(self) -> None:
        errs = errors_of(
            {
                "server": {"port": "80", "colour": 1},
                "storage": {"backend": "mysql"},
                "nope": {},
                "sites": [{"id": "Bad Id", "destinations": {"myspace": {}}}],
            }
        )
        assert set(errs) == {
            "server.port",
            "server.colour",
            "storage.backend",
            "nope",
            "sites[0].id",
            "sites[0].destinations.myspace",
        }

    def test_storage_cache_size_is_bounded(self) -> None:
        errs = errors_of({"storage": {"cache_mb": 0}, "sites": [site()]})
        assert list(errs) == ["storage.cache_mb"]
        assert "1" in errs["storage.cache_mb"]

    def test_required_destination_keys(self) -> None:
        doc = {"sites": [{"id": "s", "destinations": {"meta": {}}}]}
        assert errors_of(doc) == {
            "sites[0].destinations.meta.pixel_id": "required",
            "sites[0].destinations.meta.access_token": "required",
        }

    def test_short_or_duplicate_api_keys(self) -> None:
        errs = errors_of({"sites": [{"id": "a", "api_keys": ["short"]}]})
        assert errs == {"sites[0].api_keys[0]": "expected at least 16 characters"}
        dup = {"id": "b", "api_keys": ["k" * 20]}
        errs = errors_of({"sites": [{**dup, "id": "a"}, dup]})
        assert "sites[1].api_keys[0]" in errs

    def test_bad_cidr_and_number_ranges(self) -> None:
        errs = errors_of({"server": {"trusted_proxies": ["nope"], "port": 70000}})
        assert set(errs) == {"server.trusted_proxies[0]", "server.port"}


def test_env_overrides_scalar_keys() -> None:
    config = parse({}, {"SIGNALGATE__SERVER__PORT": "9000"}, Path("."))
    assert config.server.port == 9000


def test_secret_repr_hides_value() -> None:
    config = parse({"sites": [site(access_token="sekrit-token-value")]}, {}, Path("."))
    assert "sekrit-token-value" not in repr(config)
    assert "sekrit-token-value" not in str(config.sites[0].destinations["meta"])
    assert "k" * 20 not in repr(config)


class TestCheckConfigCommand:
    def test_ok(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
        for k, v in ENV.items():
            monkeypatch.setenv(k, v)
        assert main(["check-config", "--config", str(ROOT / "examples/minimal.toml")]) == 0
        assert capsys.readouterr().out.strip() == "OK"

    def test_errors_exit_1(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        bad = tmp_path / "bad.toml"
        bad.write_text('[[sites]]\nid = "s"\n[sites.destinations.meta]\npixel_id = "x"\n')
        assert main(["check-config", "--config", str(bad)]) == 1
        err = capsys.readouterr().err
        assert "sites[0].destinations.meta.pixel_id: expected digits" in err
        assert "sites[0].destinations.meta.access_token: required" in err

    def test_not_toml(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.toml"
        bad.write_text("[server\n")
        assert main(["check-config", "--config", str(bad)]) == 1


def documented_keys() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    return set(re.findall(r"^\| `([a-z_\[\]]+\.[a-z0-9_\[\]\.*]+)` \|", readme, re.MULTILINE))


def test_readme_table_lists_every_key() -> None:
    expected = {
        f"{name}.{f.name}" for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)
    }
    expected |= {
        f"sites[].{f.name}" for f in dataclasses.fields(SiteConfig) if not f.metadata.get("derived")
    }
    expected |= {f"sites[].destinations.*.{f.name}" for f in dataclasses.fields(RouteRules)}
    expected |= {f"sites[].consent.{f.name}" for f in dataclasses.fields(ConsentConfig)}
    expected |= {f"sites[].proxy.{f.name}" for f in dataclasses.fields(ProxyConfig)}
    for dest, reg in DESTINATIONS.items():
        expected |= {
            f"sites[].destinations.{dest}.{f.name}" for f in dataclasses.fields(reg.settings)
        }
    assert expected - documented_keys() == set()
    assert documented_keys() - expected == set()


def test_consent_table_is_validated() -> None:
    doc = {
        "sites": [
            {
                "id": "s",
                "consent": {
                    "default": "maybe",
                    "cmp_mapping": {"x": "all", "re:(": "full"},
                    "ldu_regions": ["California"],
                },
            }
        ]
    }
    assert set(errors_of(doc)) == {
        "sites[0].consent.default",
    }
    doc["sites"][0]["consent"]["default"] = "none"
    assert set(errors_of(doc)) == {
        "sites[0].consent.cmp_mapping.x",
        "sites[0].consent.cmp_mapping.re:(",
        "sites[0].consent.ldu_regions[0]",
    }
