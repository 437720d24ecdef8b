"""Routing keys in `[sites.destinations.<name>]`: parsed for every destination, errors keyed,
documented in README equal to their help metadata."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, SiteConfig, parse
from gateway.core.routing import ROUTING_KEYS, RouteRules
from gateway.destinations import DESTINATIONS

ROOT = Path(__file__).resolve().parents[2]
SETTINGS: dict[str, dict[str, Any]] = {
    "meta": {"pixel_id": "123456", "access_token": "t"},
    "tiktok": {"pixel_code": "CABCDEFGHIJ1234567KL", "access_token": "t"},
    "snap": {"pixel_id": "5bf81ee1-15b1-4dc1-b636-d7dae49b950e", "access_token": "t"},
    "pinterest": {"ad_account_id": "549755885175", "access_token": "t"},
    "reddit": {"pixel_id": "a2_abcdef123456", "access_token": "t"},
    "microsoft": {"tag_id": "343012345", "access_token": "t"},
    "linkedin": {"purchase_rule": "104012", "access_token": "t"},
}


def doc(**destinations: dict[str, Any]) -> dict[str, Any]:
    return {"sites": [{"id": "shop", "api_keys": ["k" * 20], "destinations": destinations}]}


def site_of(**destinations: dict[str, Any]) -> SiteConfig:
    return parse(doc(**destinations), {}, Path(".")).sites[0]


def errors_of(**destinations: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse(doc(**destinations), {}, Path("."))
    return dict(info.value.errors)


def test_every_registered_destination_has_settings_here() -> None:
    assert set(SETTINGS) >= set(DESTINATIONS) - {"ga4", "google_ads", "x"}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_every_destination_takes_the_routing_keys(name: str) -> None:
    routing = {
        "events": ["Purchase", "order_paid"],
        "exclude_events": ["PageView"],
        "event_names": {"order_paid": "Purchase"},
    }
    site = site_of(**{name: SETTINGS[name] | routing})
    assert site.routing[name] == RouteRules(
        events=("Purchase", "order_paid"),
        exclude_events=("PageView",),
        event_names={"order_paid": "Purchase"},
    )
    settings = site.destinations[name]
    assert type(settings) is DESTINATIONS[name].settings, "its own settings, keys stripped"
    for key in ROUTING_KEYS:
        assert not hasattr(settings, key)


def test_a_destination_without_routing_keys_has_no_rules_entry() -> None:
    site = site_of(meta=SETTINGS["meta"])
    assert site.routing == {}


def test_the_routing_field_is_not_a_key_of_the_site_table() -> None:
    bad = doc(meta=SETTINGS["meta"])
    bad["sites"][0]["routing"] = {"meta": {"events": ["Purchase"]}}
    with pytest.raises(ConfigError) as info:
        parse(bad, {}, Path("."))
    assert dict(info.value.errors) == {"sites[0].routing": "unknown key"}


def test_the_original_document_is_not_changed() -> None:
    raw = doc(meta=SETTINGS["meta"] | {"events": ["Purchase"]})
    parse(raw, {}, Path("."))
    assert raw["sites"][0]["destinations"]["meta"]["events"] == ["Purchase"]


def test_wrong_types_name_their_key_path() -> None:
    errors = errors_of(
        meta=SETTINGS["meta"] | {"events": "Purchase", "event_names": {"a": 1}},
        tiktok=SETTINGS["tiktok"] | {"exclude_events": ["Lead", 7]},
    )
    assert errors == {
        "sites[0].destinations.meta.events": "expected a list",
        "sites[0].destinations.meta.event_names": "expected a table of strings",
        "sites[0].destinations.tiktok.exclude_events[1]": "expected a string",
    }


def test_empty_bad_and_conflicting_names_name_their_key_path() -> None:
    errors = errors_of(
        meta=SETTINGS["meta"] | {"events": ["Purchase", ""], "exclude_events": ["Purchase"]},
        snap=SETTINGS["snap"] | {"events": []},
        reddit=SETTINGS["reddit"] | {"exclude_events": ["Lead"], "event_names": {"Lead": "x"}},
    )
    assert errors == {
        "sites[0].destinations.meta.events[1]": "expected an event name (letters, digits, '_',"
        " ' ', '.', ':', '-'; at most 100)",
        "sites[0].destinations.meta.exclude_events[0]": "'Purchase' is also in events: list it"
        " in one of the two",
        "sites[0].destinations.snap.events": "empty: leave the key out to send every event",
        "sites[0].destinations.reddit.event_names.Lead": "'Lead' never reaches this destination"
        " (events lists)",
    }


def test_routing_errors_come_with_the_platforms_own_errors() -> None:
    errors = errors_of(meta={"access_token": "t", "exclude_events": ["a", "a"]})
    assert errors == {
        "sites[0].destinations.meta.pixel_id": "required",
        "sites[0].destinations.meta.exclude_events[1]": "'a' is listed twice",
    }


def test_an_unknown_key_is_still_refused_beside_routing_keys() -> None:
    errors = errors_of(meta=SETTINGS["meta"] | {"events": ["Purchase"], "event": ["x"]})
    assert errors == {"sites[0].destinations.meta.event": "unknown key"}


def test_readme_rows_equal_the_help_metadata() -> None:
    readme = (ROOT / "README.md").read_text()
    for fld in dataclasses.fields(RouteRules):
        row = re.search(
            rf"^\| `sites\[\]\.destinations\.\*\.{fld.name}` \|[^|]*\|[^|]*\| (.*) \|$",
            readme,
            re.MULTILINE,
        )
        assert row is not None, fld.name
        assert row.group(1) == fld.metadata["help"]
