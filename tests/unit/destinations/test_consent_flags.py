"""Each platform's consent / limited-data-use flag is set in the built payload from the event's
consent state (platforms.md §10.5), and README's "Consent flags per platform" names them all."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_compliance import destination, event

from gateway.core.event import Consent, Event
from gateway.destinations import DESTINATIONS

ROOT = Path(__file__).resolve().parents[3]
LATER = {"ga4", "google_ads", "x"}
"""Platforms whose destinations land in parallel branches (their engineers add their cases)."""


def sample(name: str, **kw: Any) -> Event:
    return event(DESTINATIONS[name].hash_rules, **kw)


def body_of(name: str, one: Event, **settings: Any) -> dict[str, Any]:
    dest = destination(name, **settings)
    assert dest.validate(one) is None
    doc: dict[str, Any] = json.loads(dest.build_request([one]).content)
    return doc


def first(doc: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = doc["data"][0]
    return item


LDU = {"ldu": True}
NO_PERSONALISATION = {"consent": Consent(True, True, True, False)}
NO_AD_STORAGE = {"consent": Consent(ad_storage=False)}


def test_meta_sends_ldu_geolocated() -> None:
    assert first(body_of("meta", sample("meta", **LDU)))["data_processing_options"] == ["LDU"]
    item = first(body_of("meta", sample("meta", **LDU)))
    assert item["data_processing_options_country"] == 0
    assert item["data_processing_options_state"] == 0
    assert "data_processing_options" not in first(body_of("meta", sample("meta")))


def test_tiktok_sends_limited_data_use() -> None:
    assert first(body_of("tiktok", sample("tiktok", **LDU)))["limited_data_use"] is True
    assert "limited_data_use" not in first(body_of("tiktok", sample("tiktok")))


def test_snap_sends_ldu() -> None:
    assert first(body_of("snap", sample("snap", **LDU)))["data_processing_options"] == ["LDU"]
    assert "data_processing_options" not in first(body_of("snap", sample("snap")))


def test_pinterest_sends_ldp_and_opt_out() -> None:
    ldu = first(body_of("pinterest", sample("pinterest", **LDU)))
    assert ldu["custom_data"]["opt_out_type"] == "LDP"
    assert "opt_out" not in ldu
    opted_out = first(body_of("pinterest", sample("pinterest", **NO_PERSONALISATION)))
    assert opted_out["opt_out"] is True
    assert "opt_out_type" not in opted_out["custom_data"]
    plain = first(body_of("pinterest", sample("pinterest")))
    assert "opt_out" not in plain
    assert "opt_out_type" not in plain["custom_data"]


def test_reddit_sends_ldu_in_user() -> None:
    doc = body_of("reddit", sample("reddit", **LDU))
    assert doc["data"]["events"][0]["user"]["data_processing_options"] == {"modes": ["LDU"]}
    plain = body_of("reddit", sample("reddit"))
    assert "data_processing_options" not in plain["data"]["events"][0]["user"]


def test_microsoft_sends_ad_storage_consent() -> None:
    assert first(body_of("microsoft", sample("microsoft")))["adStorageConsent"] == "G"
    denied = sample("microsoft", **NO_AD_STORAGE)
    assert first(body_of("microsoft", denied))["adStorageConsent"] == "D"


def test_linkedin_has_no_flag_so_ldu_events_stay_home_unless_allowed() -> None:
    ldu = sample("linkedin", **LDU)
    problem = destination("linkedin").validate(ldu)
    assert problem is not None
    assert "limited data use" in problem
    allowed = body_of("linkedin", ldu, send_limited_data_use=True)
    plain = body_of("linkedin", replace(ldu, ldu=False))
    assert allowed == plain, "nothing in LinkedIn's payload says LDU"


def consent_table_platforms() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Consent flags per platform", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| [^|`]*`([a-z_]+)` \|", section, re.MULTILINE))


def test_readme_consent_table_names_every_platform() -> None:
    assert consent_table_platforms() >= set(DESTINATIONS) - LATER
    assert consent_table_platforms() <= set(DESTINATIONS) | LATER


@pytest.mark.parametrize("name", sorted(set(DESTINATIONS) - LATER))
def test_every_platform_has_a_flag_test_here(name: str) -> None:
    tests = [n for n in globals() if n.startswith(f"test_{name}_")]
    assert tests, f"add a test_{name}_… showing {name}'s consent flag in its payload"
