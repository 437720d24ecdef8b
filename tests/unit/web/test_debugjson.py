"""web.debugjson: events shown hashed, payloads rebuilt, secrets cut out of everything."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.config import parse
from gateway.core.event import Event, Source, User
from gateway.core.secret import Secret
from gateway.destinations.meta.destination import Meta, MetaSettings
from gateway.web.debugjson import REMOVED, event_json, payload_json, scrub, secrets_of


def test_scrub_replaces_secret_keys_and_configured_values() -> None:
    doc = {
        "access_token": "anything",
        "Developer-Token": "x",
        "nested": [{"api_secret": 1}, {"note": "token=verysecret123 inside"}],
        "ok": "plain",
        "n": 3,
    }
    out = scrub(doc, ("verysecret123",))
    assert out == {
        "access_token": REMOVED,
        "Developer-Token": REMOVED,
        "nested": [{"api_secret": REMOVED}, {"note": f"token={REMOVED} inside"}],
        "ok": "plain",
        "n": 3,
    }


def test_secrets_of_walks_the_config(tmp_path: Path) -> None:
    config = parse(
        {
            "server": {"admin_token": "admin-token-xyz"},
            "storage": {"path": str(tmp_path / "o.db")},
            "sites": [
                {
                    "id": "shop",
                    "api_keys": ["site-key-0123456789abcdef"],
                    "destinations": {
                        "meta": {"pixel_id": "1234567", "access_token": "meta-token-abcdef"},
                        "ga4": {"measurement_id": "G-ABC1234567", "api_secret": "ga4-secret-999"},
                    },
                }
            ],
        },
        {},
        tmp_path,
    )
    found = set(secrets_of(config))
    wanted = {"admin-token-xyz", "site-key-0123456789abcdef", "meta-token-abcdef", "ga4-secret-999"}
    assert wanted <= found
    assert "1234567" not in found
    assert secrets_of(Secret("abc")) == ()  # too short to search for


def test_event_json_and_payload() -> None:
    digest = "a" * 64
    event = Event(
        "Purchase",
        "o-1",
        1_790_000_000,
        Source.WEBSITE,
        url="https://shop.example/t",
        test_code="TEST1",
        user=User(hashed={"meta": {"em": (digest,)}}, ip="203.0.113.7", user_agent="UA"),
    )
    shown = event_json(event)
    assert shown["user"]["hashed"] == {"meta": {"em": [digest]}}
    assert shown["test_code"] == "TEST1"
    assert shown["source"] == "website"
    json.dumps(shown)  # JSON as it is
    meta = Meta(MetaSettings(pixel_id="123456", access_token=Secret("meta-token-abcdef")))
    payload = payload_json(meta, event)
    assert payload["test_event_code"] == "TEST1"
    assert payload["data"][0]["user_data"]["em"] == digest
    assert "meta-token-abcdef" not in json.dumps(payload)
