"""The Set-Cookie lines an explicit denial answers with (collect endpoint and pixel hits)."""

from __future__ import annotations

from gateway.destinations import TRACKING_COOKIES, VENDOR_COOKIES
from gateway.web.collectvisitor import deletions
from gateway.web.hits import HitAnswer

ALL = {name: "x" for name in (*TRACKING_COOKIES, "_sgv", "_sgc", "euconsent-v2", "other")}


def test_every_vendor_cookie_the_gateway_sets_is_a_tracking_cookie() -> None:
    assert set(VENDOR_COOKIES) == set(TRACKING_COOKIES)
    assert {"_fbp", "_ttp", "_scid", "_scclid", "_gcl_aw", "ttclid", "_uetmsclkid", "_fbc"} <= set(
        TRACKING_COOKIES
    )


def test_deletion_lines_repeat_domain_and_path_with_max_age_zero() -> None:
    lines = deletions(ALL, "_sgv", "shop.co.uk", True)
    assert lines == [
        f"{name}=; Domain=shop.co.uk; Path=/; Max-Age=0; SameSite=Lax; Secure"
        for name in (*TRACKING_COOKIES, "_sgv")
    ]


def test_deletion_lines_only_for_cookies_the_request_carries_host_only_without_domain() -> None:
    lines = deletions({"_fbp": "x", "_sgv": "y", "_sgc": "dddd"}, "_sgv", None, False)
    assert lines == [
        "_fbp=; Path=/; Max-Age=0; SameSite=Lax",
        "_sgv=; Path=/; Max-Age=0; SameSite=Lax",
    ]
    assert deletions({"_sgc": "dddd", "other": "1"}, "_sgv", "shop.test", False) == []


def test_a_hit_answer_carries_its_deletions_on_both_roads() -> None:
    lines = tuple(deletions({"_fbp": "x", "_ttp": "y"}, "_sgv", "shop.test", False))
    answer = HitAnswer(200, {"Content-Type": "image/gif"}, b"GIF89a", lines)
    head, body = answer.encode()
    assert body == b"GIF89a"
    text = head.decode("ascii")
    assert text.count("Set-Cookie: ") == 2
    assert "Set-Cookie: _fbp=; Domain=shop.test; Path=/; Max-Age=0; SameSite=Lax\r\n" in text
    plain_head, _ = HitAnswer(200, {"Content-Type": "image/gif"}, b"GIF89a").encode()
    assert "Set-Cookie" not in plain_head.decode("ascii"), "the memoised head stays clean"
    assert answer.response().headers.getall("Set-Cookie") == list(lines)
