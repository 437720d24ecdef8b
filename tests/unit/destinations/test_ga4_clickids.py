"""GA4's `_ga` cookie: read into click_ids["ga"] (the client id), re-issued like `_fbp`."""

from __future__ import annotations

import pytest

from gateway.core.clickids import click_ids_from_cookies, plan_cookies
from gateway.core.eventparse import parse_event
from gateway.destinations import CLICK_IDS, COOKIES, PLATFORMS, VENDOR_COOKIES
from gateway.destinations.ga4.clickids import client_id, format_ga

NOW_MS = 1_790_000_000_123
KNOWN = "GA1.2.1234567890.1700000000"


def plan(existing: dict[str, str], profile: dict[str, str] | None = None) -> dict[str, str]:
    calls: list[int] = []

    def bits(k: int) -> int:
        calls.append(k)
        return (1 << k) - 1  # all ones: the largest value of each width

    got = plan_cookies(
        click_ids={},
        existing=existing,
        profile_values=profile or {},
        now_ms=NOW_MS,
        random_bits=bits,
        subdomain_index=1,
        specs=COOKIES,
        table=CLICK_IDS,
    )
    got["calls"] = ",".join(map(str, calls))
    return got


@pytest.mark.parametrize(
    ("value", "cid"),
    [
        ("GA1.1.123.456", "123.456"),
        (KNOWN, "1234567890.1700000000"),
        ("GA1.12.1.2", "1.2"),
    ],
)
def test_the_client_id_is_the_cookie_without_its_prefix(value: str, cid: str) -> None:
    assert client_id(value) == cid
    assert VENDOR_COOKIES["_ga"](value) == value


@pytest.mark.parametrize(
    "junk",
    ["", "GA1.1.123", "GA2.1.123.456", "GA1.0.1.2", "GA1.1.a.2", "GA1.1.1.2.3", " GA1.1.1.2", 5],
)
def test_a_malformed_ga_is_no_client_id(junk: object) -> None:
    assert client_id(junk) is None


def test_a_known_ga_is_kept_and_a_missing_one_created_from_31_random_bits() -> None:
    assert plan({"_ga": KNOWN})["_ga"] == KNOWN
    assert plan({}, {"_ga": KNOWN})["_ga"] == KNOWN  # restored from the visitor profile
    new = plan({"_ga": "garbage"})
    assert new["_ga"] == f"GA1.1.{(1 << 31) - 1}.{NOW_MS // 1000}"
    assert new["calls"] == "31,160,128,32"  # its own draw, after _fbp, _ttp and _scid
    assert client_id(new["_ga"]) == f"{(1 << 31) - 1}.{NOW_MS // 1000}"


def test_format_ga_refuses_what_it_cannot_format() -> None:
    assert format_ga(7, 1_790_000_000) == "GA1.1.7.1790000000"
    for bad in ((0, 1_790_000_000), (7, 179_000_000), (-1, 1_790_000_000)):
        with pytest.raises(ValueError, match=r"random_int|created_s"):
            format_ga(*bad)


def test_the_ga_cookie_fills_click_ids_ga_last_and_parse_event_accepts_it() -> None:
    cookies = {"_ga": KNOWN, "_ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH", "_gcl_aw": "GCL.1641466031.g"}
    found = click_ids_from_cookies(cookies, COOKIES)
    assert list(found) == ["gclid", "ttp", "ga"]
    assert found["ga"] == "1234567890.1700000000"
    assert click_ids_from_cookies({"_ga": "GA1.1.x.y"}, COOKIES) == {}
    event = parse_event(
        {"event": "PageView", "time": 1_790_000_000, "user": {"click_ids": found}},
        now=1_790_000_000.0,
        new_id=lambda: "id",
    )
    assert not isinstance(event, list), event
    assert event.user.click_ids["ga"] == "1234567890.1700000000"


def test_ga_belongs_to_ga4_and_is_forwarded_to_its_hit_route() -> None:
    ga4 = PLATFORMS["ga4"]
    assert [c.name for c in ga4.cookies] == ["_ga"]
    assert ga4.hits is not None
    assert "_ga" in ga4.hits.cookies
    assert [c.name for c in COOKIES][-1] == "_ga"  # after every former cookie: bytes kept
