"""Plain-text secrets are accepted but named by check-config (README: Configuration)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import parse
from gateway.config_warnings import LITERAL_SECRET, literal_secrets, warnings

TOKEN = "literal-meta-token-0123456789"
KEY = "literal-api-key-0123456789"


def doc() -> dict[str, object]:
    return {
        "server": {"admin_token": "literal-admin-token", "cookie_secret": "env:COOKIE"},
        "sites": [
            {
                "id": "shop",
                "api_keys": ["env:SHOP_KEY", KEY],
                "destinations": {"meta": {"pixel_id": "123456", "access_token": TOKEN}},
            }
        ],
    }


ENV = {"COOKIE": "cookie-secret-0123456789", "SHOP_KEY": "k" * 24}


def test_every_literal_secret_is_named_by_its_key_path() -> None:
    config = parse(doc(), ENV, Path("."))
    assert literal_secrets(config) == [
        "server.admin_token",
        "sites[0].api_keys[1]",
        "sites[0].destinations.meta.access_token",
    ]
    assert all(reason == LITERAL_SECRET for _, reason in warnings(config))


def test_env_and_file_secrets_are_not_warned(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("file-token\n")
    clean = doc()
    clean["server"] = {"admin_token": "file:token"}
    clean["sites"][0]["api_keys"] = ["env:SHOP_KEY"]  # type: ignore[index]
    clean["sites"][0]["destinations"]["meta"]["access_token"] = "env:SHOP_KEY"  # type: ignore[index]
    assert warnings(parse(clean, ENV, tmp_path)) == []


def test_check_config_warns_but_passes_and_never_prints_the_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f'[[sites]]\nid = "shop"\napi_keys = ["{KEY}"]\n'
        f'[sites.destinations.meta]\npixel_id = "123456"\naccess_token = "{TOKEN}"\n'
    )
    assert main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == "OK"
    assert out.err.splitlines() == [
        f"warning: sites[0].api_keys[0]: {LITERAL_SECRET}",
        f"warning: sites[0].destinations.meta.access_token: {LITERAL_SECRET}",
    ]
    assert TOKEN not in out.out + out.err
    assert KEY not in out.out + out.err
