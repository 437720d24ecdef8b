"""`[delivery]` probe keys: defaults, bounds and their order."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, DeliveryConfig, parse

SITE = {
    "id": "shop",
    "api_keys": ["k" * 20],
    "destinations": {"meta": {"pixel_id": "123456", "access_token": "t"}},
}


def errors_of(delivery: dict[str, object]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse({"delivery": delivery, "sites": [SITE]}, {}, Path("."))
    return dict(info.value.errors)


def test_defaults_probe_within_the_recovery_budget() -> None:
    config = parse({"sites": [SITE]}, {}, Path("."))
    assert config.delivery == DeliveryConfig()
    assert config.delivery.probe_interval_min_seconds == 5.0
    assert config.delivery.probe_interval_max_seconds == 20.0
    assert config.delivery.probe_batch == 10


def test_max_below_min_names_the_key() -> None:
    errors = errors_of({"probe_interval_min_seconds": 10.0, "probe_interval_max_seconds": 5.0})
    assert errors == {
        "delivery.probe_interval_max_seconds": "must be >= delivery.probe_interval_min_seconds"
    }


def test_probe_batch_must_be_positive() -> None:
    assert "delivery.probe_batch" in errors_of({"probe_batch": 0})
    assert "delivery.probe_interval_min_seconds" in errors_of({"probe_interval_min_seconds": -1})
