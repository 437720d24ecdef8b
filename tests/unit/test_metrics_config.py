"""[metrics]: defaults, validation, and the check-config warning for an open metrics listener."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import base_doc

from gateway.config import ConfigError, parse
from gateway.config_warnings import OPEN_METRICS, warnings


def config(tmp_path: Path, **metrics: object):  # type: ignore[no-untyped-def]
    doc = base_doc(tmp_path)
    doc["metrics"] = metrics
    doc["server"]["admin_token"] = "env:ADMIN"
    doc["sites"][0]["api_keys"] = ["env:KEY"]
    doc["sites"][0]["destinations"]["meta"]["access_token"] = "env:TOKEN"
    return parse(doc, {"ADMIN": "a" * 20, "KEY": "k" * 20, "TOKEN": "t" * 20}, tmp_path)


def test_defaults_are_off_and_local(tmp_path: Path) -> None:
    metrics = config(tmp_path).metrics
    assert (metrics.host, metrics.port, metrics.backlog_limit) == ("127.0.0.1", 0, 100_000)


def test_bad_values_name_their_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config(tmp_path, port=70_000, backlog_limit=0, extra=1)
    assert set(caught.value.errors) == {
        ("metrics.port", "expected <= 65535"),
        ("metrics.backlog_limit", "expected >= 1"),
        ("metrics.extra", "unknown key"),
    }


@pytest.mark.parametrize(
    ("host", "warned"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("192.168.0.9", False),
        ("::1", False),
        ("localhost", False),
        ("metrics.internal", False),
        ("0.0.0.0", True),
        ("::", True),
        ("93.184.216.34", True),  # a global address
    ],
)
def test_an_open_metrics_listener_on_a_public_address_is_warned(
    tmp_path: Path, host: str, warned: bool
) -> None:
    found = warnings(config(tmp_path, host=host, port=9102))
    assert (("metrics.host", OPEN_METRICS) in found) is warned
    assert warnings(config(tmp_path, host=host)) == [], "no listener, no warning"
