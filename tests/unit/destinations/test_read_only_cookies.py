"""Vendor cookies we only read: Pinterest's `_epik`, Reddit's `_rdt_uuid` (never written)."""

from __future__ import annotations

import json

import httpx

from gateway.core.clickids import CookieKind, click_ids_from_cookies, plan_cookies
from gateway.core.event import Event, Source, User
from gateway.core.secret import Secret
from gateway.destinations import (
    CLICK_IDS,
    COOKIES,
    READ_COOKIES,
    TRACKING_COOKIES,
    VENDOR_COOKIES,
)
from gateway.destinations.reddit.destination import Reddit, RedditSettings

UUID = "1700000000123.8f3c0d6e-1b2a-4c5d-9e8f-0a1b2c3d4e5f"
EPIK = "dj0yJnU9bG9uZ2VyLWlkJm49MTIz"


def test_read_cookies_are_read_into_click_ids() -> None:
    assert {"_epik", "_rdt_uuid"} == READ_COOKIES
    assert {c.kind for c in COOKIES if c.name in READ_COOKIES} == {CookieKind.READ}
    found = click_ids_from_cookies({"_epik": EPIK, "_rdt_uuid": UUID}, COOKIES)
    assert found == {"epik": EPIK, "rdt_uuid": UUID}


def test_malformed_read_cookies_are_ignored() -> None:
    for bad in ("", "a b", "1700000000123", "1700000000123.not-a-uuid", UUID + ".x", "x" * 600):
        assert click_ids_from_cookies({"_rdt_uuid": bad}, COOKIES) == {}
    assert click_ids_from_cookies({"_epik": "a;b"}, COOKIES) == {}


def test_read_cookies_are_never_planned_managed_or_deleted() -> None:
    got = plan_cookies(
        click_ids={"epik": EPIK, "rdt_cid": "abc"},
        existing={"_epik": EPIK, "_rdt_uuid": UUID},
        profile_values={"_epik": EPIK, "_rdt_uuid": UUID},
        now_ms=1_790_000_000_123,
        random_bits=lambda k: 1,
        subdomain_index=1,
        specs=COOKIES,
        table=CLICK_IDS,
    )
    assert not READ_COOKIES & set(got)
    assert not READ_COOKIES & set(VENDOR_COOKIES)
    assert not READ_COOKIES & set(TRACKING_COOKIES)


def test_reddit_sends_the_rdt_uuid_plain_as_user_uuid() -> None:
    dest = Reddit(RedditSettings(pixel_id="a2_abc123", access_token=Secret("t")))
    user = User(ip="203.0.113.7", click_ids={"rdt_uuid": UUID, "rdt_cid": "cid-1"})
    event = Event(
        event="PageView", event_id="e-1", time=1_790_000_000, source=Source.WEBSITE, user=user
    )
    request: httpx.Request = dest.build_request([event])
    [sent] = json.loads(request.content)["data"]["events"]
    assert sent["user"]["uuid"] == UUID
    assert sent["click_id"] == "cid-1"
    without = Event(
        event="PageView",
        event_id="e-2",
        time=1_790_000_000,
        source=Source.WEBSITE,
        user=User(ip="203.0.113.7"),
    )
    [plain] = json.loads(dest.build_request([without]).content)["data"]["events"]
    assert "uuid" not in plain["user"]
