"""The tracking-cookie lists come from the platform registrations (one place per platform):
what an explicit denial deletes and what a known visitor is expected to carry."""

from __future__ import annotations

from gateway.core.clickids import CookieKind, carried_cookies, tracking_cookies
from gateway.destinations import (
    CARRIED_COOKIES,
    COOKIES,
    PLATFORMS,
    READ_COOKIES,
    TRACKING_COOKIES,
)
from gateway.web.collectvisitor import deletions

HAND_KEPT = ("_fbc", "_fbp", "_gcl_aw", "ttclid", "_ttp", "_scid", "_scclid", "_uetmsclkid", "_ga")
"""The list gateway/core/consent.py kept by hand before it was derived."""


def test_every_registered_platforms_managed_cookies_are_tracking_cookies() -> None:
    for name, platform in PLATFORMS.items():
        for spec in platform.cookies:
            if spec.kind is CookieKind.READ:
                assert spec.name not in TRACKING_COOKIES, name
            else:
                assert spec.name in TRACKING_COOKIES, (name, spec.name)
    assert len(TRACKING_COOKIES) == len(set(TRACKING_COOKIES))
    assert not READ_COOKIES & set(TRACKING_COOKIES)


def test_the_derived_list_holds_the_hand_kept_one_and_deletes_the_same_lines() -> None:
    assert set(TRACKING_COOKIES) == set(HAND_KEPT)
    jar = {name: "x" for name in (*HAND_KEPT, "_sgv", "_sgc", "euconsent-v2", "_epik", "other")}
    for domain, secure in ((None, False), ("shop.co.uk", True)):
        lines = deletions(jar, "_sgv", domain, secure)
        attrs = (f"; Domain={domain}" if domain else "") + "; Path=/; Max-Age=0; SameSite=Lax"
        attrs += "; Secure" if secure else ""
        expected = [f"{name}=; {attrs[2:]}" for name in (*HAND_KEPT, "_sgv")]
        # The same lines; their order follows the registry (Snap's _scclid before _scid).
        assert sorted(lines) == sorted(expected)
        assert lines == [f"{name}=; {attrs[2:]}" for name in (*TRACKING_COOKIES, "_sgv")]


def test_every_visitor_cookie_is_carried_and_click_cookies_are_not_but_fbc() -> None:
    for spec in COOKIES:
        if spec.kind is CookieKind.VISITOR:
            assert spec.carried, spec.name
        elif spec.kind is not CookieKind.CLICK or spec.name != "_fbc":
            assert not spec.carried, spec.name
    # The hand-kept _fbp, _ttp, _scid, _fbc, plus GA4's _ga (a browser id added after it).
    assert set(CARRIED_COOKIES) == {"_fbc", "_fbp", "_ttp", "_scid", "_ga"}


def test_the_derivations_are_pure_functions_of_the_specs() -> None:
    assert tracking_cookies(()) == ()
    assert carried_cookies(()) == ()
    assert tracking_cookies(COOKIES) == TRACKING_COOKIES
    assert carried_cookies(reversed(COOKIES)) == tuple(reversed(CARRIED_COOKIES))
