"""Every platform is one package with a PLATFORM; the registries are derived from them."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import gateway.destinations as destinations
from gateway.destinations import DESTINATIONS, PLATFORMS
from gateway.destinations.platform import Platform, by_name


def test_every_platform_package_is_registered_under_its_own_name() -> None:
    packages = {m.name for m in pkgutil.iter_modules(destinations.__path__) if m.ispkg}
    assert packages == set(PLATFORMS)
    for name in packages:
        module = importlib.import_module(f"gateway.destinations.{name}")
        assert module.PLATFORM is PLATFORMS[name]
        assert module.PLATFORM.name == name


def test_destinations_are_the_platforms_with_a_destination_in_registration_order() -> None:
    expected = [name for name, p in PLATFORMS.items() if p.destination is not None]
    assert list(DESTINATIONS) == expected
    assert all(DESTINATIONS[name] is PLATFORMS[name].destination for name in expected)
    assert {"ga4", "google_ads", "x"} <= set(PLATFORMS)
    assert {"meta", "tiktok", "snap", "pinterest", "reddit", "linkedin", "microsoft"} <= set(
        DESTINATIONS
    )


def test_each_destination_class_names_its_platform() -> None:
    for name, registration in DESTINATIONS.items():
        factory = registration.factory
        assert getattr(factory, "name", None) == name
        assert registration.hash_rules == getattr(factory, "hash_rules", None)


def test_a_platform_registered_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="'meta' registered twice"):
        by_name(Platform("meta"), Platform("meta"))
