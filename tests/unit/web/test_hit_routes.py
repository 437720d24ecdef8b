"""The hit routes and mirror targets are built from the platforms' `HitFormat`s."""

from __future__ import annotations

from gateway.config import PROXY_VENDORS
from gateway.destinations import PLATFORMS
from gateway.web.hitroutes import HIT_FORMATS, HIT_ROUTES, OWN_DESTINATIONS, PUBLIC_PATHS


def test_routes_are_the_same_as_the_former_fixed_table() -> None:
    got = {
        (r.vendor, r.path, r.upstream, r.methods, r.cookies, r.root, r.platform) for r in HIT_ROUTES
    }
    assert got == {
        ("meta", "m/tr", "/tr/", ("GET", "POST"), frozenset({"_fbp", "_fbc"}), False, "meta"),
        ("meta", "m/tr/", "/tr/", ("GET", "POST"), frozenset({"_fbp", "_fbc"}), False, "meta"),
        ("tiktok", "t/api/v2/pixel", "/api/v2/pixel", ("POST",), frozenset({"_ttp", "ttclid"}),
         False, "tiktok"),
        ("snap", "s/p", "/p", ("POST",), frozenset({"_scid"}), False, "snap"),
        ("google", "/g/collect", "/g/collect", ("GET", "POST"), frozenset({"_ga"}), True, "ga4"),
    }  # fmt: skip
    assert len(HIT_ROUTES) == len(got)
    assert HIT_ROUTES[0].path == "m/tr"


def test_cookies_forwarded_per_route() -> None:
    ga4 = next(r for r in HIT_ROUTES if r.platform == "ga4")
    assert [ga4.keeps(n) for n in ("_ga", "_ga_ABC123", "_ga_", "_gab", "_fbp")] == [
        True,
        True,
        False,
        False,
        False,
    ]
    meta = HIT_ROUTES[0]
    assert [meta.keeps(n) for n in ("_fbc", "_fbp", "_ga_ABC123", "_ttp")] == [
        True,
        True,
        False,
        False,
    ]


def test_every_platform_with_hits_has_a_public_path_and_a_proxy_vendor() -> None:
    with_hits = {name for name, p in PLATFORMS.items() if p.hits is not None}
    assert with_hits == set(PUBLIC_PATHS) == {"meta", "tiktok", "snap", "ga4"}
    assert set(HIT_FORMATS) <= set(PROXY_VENDORS)
    assert HIT_FORMATS["google"] is PLATFORMS["ga4"].hits


def test_a_hit_is_mirrored_to_its_own_platform_and_ga4_only_to_google_ads() -> None:
    # GA4's Measurement Protocol counts a mirrored copy as a second event (it does not
    # deduplicate against the tag's own hit): a GA4 hit goes to Google Ads, never to GA4.
    assert {
        "meta": frozenset({"meta"}),
        "tiktok": frozenset({"tiktok"}),
        "snap": frozenset({"snap"}),
        "ga4": frozenset({"google_ads"}),
    } == OWN_DESTINATIONS
