"""Set-Cookie lines built from a cached tail are the same lines, checked the same way."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.web.cookies import set_cookie_header


def test_cached_tail_gives_the_documented_line() -> None:
    for _ in range(2):  # built, then from the cache
        line = set_cookie_header(
            "_fbp", "fb.1.1.2", domain="shop.test", max_age=60, secure=True, http_only=True
        )
        assert (
            line
            == "_fbp=fb.1.1.2; Domain=shop.test; Path=/; Max-Age=60; SameSite=Lax; Secure; HttpOnly"
        )
    assert set_cookie_header("a", "", domain=None, max_age=0, secure=False, http_only=False) == (
        "a=; Path=/; Max-Age=0; SameSite=Lax"
    )


@pytest.mark.parametrize(
    ("name", "value", "domain", "max_age"),
    [
        ("a b", "v", "shop.test", 60),
        ("a", "v;x", "shop.test", 60),
        ("a", "v\r\nSet-Cookie: x=1", "shop.test", 60),
        ("a", "v", "Shop.test; x", 60),
        ("a", "v", "shop.test", True),
        ("a", "v", "shop.test", 60.0),
        ("a", "v", "shop.test", -1),
    ],
)
def test_every_part_is_still_checked_after_caching(
    name: str, value: str, domain: str, max_age: Any
) -> None:
    set_cookie_header("a", "v", domain="shop.test", max_age=60, secure=False, http_only=False)
    set_cookie_header("a", "v", domain="shop.test", max_age=1, secure=False, http_only=False)
    with pytest.raises(ValueError, match=r"must|exceed"):
        set_cookie_header(
            name,
            value,
            domain=domain,
            max_age=max_age,
            secure=False,
            http_only=False,
        )
