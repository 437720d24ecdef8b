"""The default event-name table (README "Default event names") is generated from each
destination's own table, matches what each destination really sends, and a site's
`event_names` override reaches the built payload of every platform."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_compliance import destination, event

from gateway.core.event import STANDARD_EVENTS
from gateway.core.routing import renamed
from gateway.destinations import DESTINATIONS
from gateway.destinations.base import Destination
from gateway.destinations.names import CANONICAL_ORDER, columns, markdown, platform_table

ROOT = Path(__file__).resolve().parents[3]
LATER = {"google_ads", "x"}
"""Platforms that send no event name: Google Ads a conversion action per name, X an event id
per name (both from their settings; their own tests cover the tables)."""

LINKEDIN_RULES = {kind: str(100 + i) for i, kind in enumerate(platform_table("linkedin").values())}
LINKEDIN_KIND = {rule: kind for kind, rule in LINKEDIN_RULES.items()}


def _linkedin_kind(body: dict[str, Any]) -> str:
    urn = body["elements"][0]["conversion"]
    return LINKEDIN_KIND.get(urn.rsplit(":", 1)[-1], "(no rule)")


SENT_NAME: dict[str, Callable[[dict[str, Any]], str]] = {
    "meta": lambda body: body["data"][0]["event_name"],
    "tiktok": lambda body: body["data"][0]["event"],
    "snap": lambda body: body["data"][0]["event_name"],
    "pinterest": lambda body: body["data"][0]["event_name"],
    "reddit": lambda body: body["data"]["events"][0]["type"]["tracking_type"],
    "microsoft": lambda body: body["data"][0]["eventName"],
    "linkedin": _linkedin_kind,
    "ga4": lambda body: body["events"][0]["name"],
}
"""Where each platform's request carries the event's name (LinkedIn: the rule's type)."""


def built(name: str, dest: Destination, event_name: str) -> dict[str, Any]:
    one = event(DESTINATIONS[name].hash_rules, event=event_name)
    body: dict[str, Any] = json.loads(dest.build_request([one]).content)
    return body


def platform(name: str) -> Destination:
    if name == "linkedin":
        rules = {kind: rule for kind, rule in LINKEDIN_RULES.items() if kind != "PURCHASE"}
        return destination(name, purchase_rule=LINKEDIN_RULES["PURCHASE"], conversion_rules=rules)
    return destination(name)


def readme_table() -> str:
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- event-names:begin -->\n(.*?)\n<!-- event-names:end -->", readme, re.S)
    assert found is not None, "README.md lacks the event-names markers"
    return found.group(1)


def test_readme_table_is_the_generated_one() -> None:
    assert readme_table() == markdown(), (
        "README's default event-name table differs from the destinations' tables: paste the"
        " output of `python -m gateway.destinations.names` between the event-names markers"
    )


def test_rows_are_every_standard_event_once() -> None:
    assert sorted(CANONICAL_ORDER) == sorted(STANDARD_EVENTS)


def test_every_platform_is_a_column_and_its_table_speaks_canonical_names() -> None:
    assert columns()[0] == "meta"
    assert set(columns()) == set(DESTINATIONS)
    for name in DESTINATIONS:
        assert set(platform_table(name)) <= STANDARD_EVENTS, name


def test_every_platform_has_its_name_extractor() -> None:
    assert set(SENT_NAME) >= set(DESTINATIONS) - LATER


@pytest.mark.parametrize("name", sorted(SENT_NAME))
def test_the_table_is_what_the_platform_sends(name: str) -> None:
    dest = platform(name)
    table = platform_table(name) or {n: n for n in STANDARD_EVENTS}  # Meta: canonical = its own
    assert table
    for canonical, expected in table.items():
        assert SENT_NAME[name](built(name, dest, canonical)) == expected, canonical


@pytest.mark.parametrize("name", sorted(SENT_NAME))
def test_an_event_names_override_reaches_the_built_payload(name: str) -> None:
    dest = platform(name)
    custom = event(DESTINATIONS[name].hash_rules, event="order_paid")
    as_purchase = renamed(custom, {"order_paid": "Purchase"})
    sent = SENT_NAME[name](json.loads(dest.build_request([as_purchase]).content))
    assert sent == (platform_table(name).get("Purchase") or "Purchase")
    untouched = SENT_NAME[name](json.loads(dest.build_request([custom]).content))
    assert untouched != sent, "without the override the custom name is not the purchase"
