"""Tests for gateway.web.cookies: cookie domain, Set-Cookie building, parsing, visitor ids."""

from __future__ import annotations

import base64
import socket
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.web import cookies
from gateway.web.cookies import (
    MAX_COOKIE_HEADER,
    delete_cookie_header,
    normalize_host,
    parse_cookie_header,
    registrable_domain,
    set_cookie_header,
    sign_visitor_id,
    subdomain_index,
    verify_visitor_id,
)

PROPERTY = settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
KEY = b"k" * 32
COOKIE_OCTETS = "".join(
    chr(c) for c in range(0x21, 0x7F) if chr(c) not in '",;\\'
)  # RFC 6265 cookie-octet


class TestRegistrableDomain:
    @pytest.mark.parametrize(
        ("host", "expected"),
        [
            ("www.shop.example", "shop.example"),
            ("shop.example", "shop.example"),
            ("a.b.shop.co.uk", "shop.co.uk"),
            ("co.uk", None),
            ("uk", None),
            ("myshop.github.io", "myshop.github.io"),
            ("a.myshop.github.io", "myshop.github.io"),
            ("github.io", None),
            ("a.b.myshop.myshopify.com", "myshop.myshopify.com"),
            ("127.0.0.1", None),
            ("127.0.0.1:8080", None),
            ("[::1]:8443", None),
            ("[::1]", None),
            ("::1", None),
            ("127.1", None),
            ("www.0x7f", None),
            ("track.shop.test:8080", "shop.test"),
            ("www.bücher.example", "xn--bcher-kva.example"),
            ("www.xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("www.shop.example.", "shop.example"),
            ("WWW.Shop.EXAMPLE", "shop.example"),
            ("Track.Shop.Example.:443", "shop.example"),
            ("localhost", None),
            ("localhost:8080", None),
            ("", None),
            (".", None),
            ("a..b.example", None),
            ("shop.example:", None),
            ("shop.example:port", None),
            ("sh op.example", None),
            ("shop.example\r\nSet-Cookie: x=y", None),
            ("shop.example;x", None),
            ("x" * 64 + ".example", None),
            ("a." * 200 + "example", None),
        ],
    )
    def test_host_to_cookie_domain(self, host: str, expected: str | None) -> None:
        assert registrable_domain(host) == expected

    def test_normalize_host(self) -> None:
        assert normalize_host("WWW.Bücher.Example.:8080") == "www.xn--bcher-kva.example"
        assert normalize_host("[2001:db8::1]:443") is None

    def test_list_is_loaded_once_and_offline(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def no_network(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("the Public Suffix List must not touch the network")

        monkeypatch.setattr(socket, "socket", no_network)
        monkeypatch.setattr(socket, "create_connection", no_network)
        monkeypatch.setattr(socket, "getaddrinfo", no_network)
        cookies._psl.cache_clear()
        try:
            assert registrable_domain("a.b.shop.co.uk") == "shop.co.uk"
            assert cookies._psl() is cookies._psl()
        finally:
            cookies._psl.cache_clear()

    @pytest.mark.parametrize(
        ("domain", "index"),
        [("shop.example", 1), ("shop.co.uk", 2), ("myshop.github.io", 2), (None, 0), ("", 0)],
    )
    def test_subdomain_index_is_labels_minus_one(self, domain: str | None, index: int) -> None:
        assert subdomain_index(domain) == index

    @PROPERTY
    @given(st.text(max_size=80))
    def test_never_raises(self, host: str) -> None:
        domain = registrable_domain(host)
        assert domain is None or set(domain) <= set("abcdefghijklmnopqrstuvwxyz0123456789.-_")


class TestSetCookieHeader:
    def test_vendor_cookie_on_the_registrable_domain(self) -> None:
        header = set_cookie_header(
            "_fbc",
            "fb.1.1554763741205.IwAR-x_y",
            domain="shop.example",
            max_age=7_776_000,
            secure=True,
            http_only=False,
        )
        assert header == (
            "_fbc=fb.1.1554763741205.IwAR-x_y; Domain=shop.example; Path=/; Max-Age=7776000; "
            "SameSite=Lax; Secure"
        )

    def test_private_cookie_is_http_only(self) -> None:
        header = set_cookie_header(
            "sg_vid", "abc.def", domain="shop.example", max_age=1, secure=True, http_only=True
        )
        assert header.endswith("; SameSite=Lax; Secure; HttpOnly")

    def test_without_domain_secure_or_http_only(self) -> None:
        header = set_cookie_header(
            "a", "b/c=d+e", domain=None, max_age=0, secure=False, http_only=False
        )
        assert header == "a=b/c=d+e; Path=/; Max-Age=0; SameSite=Lax"
        assert "Partitioned" not in header
        assert "Expires" not in header

    def test_delete_repeats_domain_and_path(self) -> None:
        assert delete_cookie_header("_fbc", "shop.example") == (
            "_fbc=; Domain=shop.example; Path=/; Max-Age=0; SameSite=Lax; Secure"
        )
        assert delete_cookie_header("_fbc", None, secure=False) == (
            "_fbc=; Path=/; Max-Age=0; SameSite=Lax"
        )

    @pytest.mark.parametrize(
        "value",
        [
            "a\r\nSet-Cookie: evil=1",
            "a\nb",
            "a;Domain=evil.example",
            "a,b",
            "a b",
            '"quoted"',
            "a\\b",
            "a\x00b",
            "a\x7fb",
            "a\tb",
            "café",
            "x" * 4100,
        ],
    )
    def test_unsafe_values_raise(self, value: str) -> None:
        with pytest.raises(ValueError, match="cookie"):
            set_cookie_header("n", value, domain=None, max_age=1, secure=True, http_only=False)

    @pytest.mark.parametrize(
        "name", ["", "a b", "a=b", "a;b", "a\r\nb", "a,b", 'a"', "a\\b", "a(b)", "é"]
    )
    def test_unsafe_names_raise(self, name: str) -> None:
        with pytest.raises(ValueError, match="name"):
            set_cookie_header(name, "v", domain=None, max_age=1, secure=True, http_only=False)

    @pytest.mark.parametrize(
        "domain", ["shop.example; HttpOnly", "shop.example\r\nX: y", "Shop.Example", ".shop.x", ""]
    )
    def test_unsafe_domains_raise(self, domain: str) -> None:
        with pytest.raises(ValueError, match="domain"):
            set_cookie_header("n", "v", domain=domain, max_age=1, secure=True, http_only=False)

    @pytest.mark.parametrize("max_age", [-1, True])
    def test_bad_max_age_raises(self, max_age: int) -> None:
        with pytest.raises(ValueError, match="max_age"):
            set_cookie_header("n", "v", domain=None, max_age=max_age, secure=True, http_only=False)

    @PROPERTY
    @given(st.text(max_size=30), st.text(max_size=30))
    def test_built_headers_never_carry_separators_or_controls(self, name: str, value: str) -> None:
        try:
            header = set_cookie_header(
                name, value, domain="shop.example", max_age=1, secure=True, http_only=True
            )
        except ValueError:
            return
        first = header.split("; ")[0]
        assert first == f"{name}={value}"
        assert not any(c in header for c in '\r\n\x00,"\\')
        assert header.isascii()

    async def test_aiohttp_sends_the_raw_header_verbatim(self, aiohttp_client: Any) -> None:
        raw = [
            set_cookie_header(
                "_scid", "a/b=c+d", domain="shop.test", max_age=60, secure=False, http_only=False
            ),
            set_cookie_header(
                "sg_vid",
                sign_visitor_id("v1-abc", KEY),
                domain=None,
                max_age=60,
                secure=True,
                http_only=True,
            ),
        ]

        async def handler(request: web.Request) -> web.Response:
            response = web.Response(status=204)
            for header in raw:
                response.headers.add("Set-Cookie", header)
            return response

        app = web.Application()
        app.router.add_get("/", handler)
        client = await aiohttp_client(app)
        response = await client.get("/")
        assert response.status == 204
        assert response.headers.getall("Set-Cookie") == raw
        assert '"' not in "".join(response.headers.getall("Set-Cookie"))


class TestParseCookieHeader:
    def test_returns_only_wanted_names(self) -> None:
        header = "_ga=GA1.2.3.4; _fbp=fb.1.1596403881668.1116446470; other=x"
        assert parse_cookie_header(header, {"_fbp", "_fbc"}) == {
            "_fbp": "fb.1.1596403881668.1116446470"
        }

    def test_spaces_and_tabs_around_pairs_are_ignored(self) -> None:
        assert parse_cookie_header("  a = 1 ;\tb=2;c=3  ", ["a", "b", "c"]) == {
            "a": "1",
            "b": "2",
            "c": "3",
        }

    def test_wrapping_quotes_are_removed_once(self) -> None:
        got = parse_cookie_header('a="x=y"; b=""; c="\\"x\\""; d="', "abcd")
        assert got == {"a": "x=y", "b": ""}

    def test_first_well_formed_occurrence_wins(self) -> None:
        assert parse_cookie_header("a=first; a=second", ["a"]) == {"a": "first"}
        assert parse_cookie_header("a=bad value; a=good", ["a"]) == {"a": "good"}

    def test_junk_is_skipped(self) -> None:
        header = "junk; =nameless; ;;; a=1; b=x,y; c=é; d=ok=also; e"
        assert parse_cookie_header(header, ["a", "b", "c", "d", "e", ""]) == {
            "a": "1",
            "d": "ok=also",
        }

    def test_names_are_case_sensitive(self) -> None:
        assert parse_cookie_header("_FBP=x; _fbp=y", ["_fbp"]) == {"_fbp": "y"}

    def test_oversize_or_missing_header_gives_nothing(self) -> None:
        big = "a=1; " + "p=" + "x" * MAX_COOKIE_HEADER
        assert parse_cookie_header(big, ["a"]) == {}
        assert parse_cookie_header(None, ["a"]) == {}
        assert parse_cookie_header("", ["a"]) == {}
        just_fits = "a=1; p=" + "x" * (MAX_COOKIE_HEADER - 7)
        assert parse_cookie_header(just_fits, ["a"]) == {"a": "1"}

    @PROPERTY
    @given(st.text(max_size=200), st.sets(st.text(max_size=5), max_size=4))
    def test_never_raises_on_arbitrary_text(self, header: str, wanted: set[str]) -> None:
        got = parse_cookie_header(header, wanted)
        assert set(got) <= wanted
        assert all(set(v) <= set(COOKIE_OCTETS) for v in got.values())

    @PROPERTY
    @given(
        st.dictionaries(
            st.from_regex(r"[A-Za-z0-9_]{1,12}", fullmatch=True),
            st.text(alphabet=COOKIE_OCTETS, max_size=40),
            max_size=6,
        )
    )
    def test_round_trips_well_formed_headers(self, jar: dict[str, str]) -> None:
        header = "; ".join(f"{k}={v}" for k, v in jar.items())
        assert parse_cookie_header(header, set(jar)) == jar


class TestVisitorId:
    def test_round_trip(self) -> None:
        cookie = sign_visitor_id("v1-AbC_123", KEY)
        raw_id, sig = cookie.split(".")
        assert raw_id == "v1-AbC_123"
        assert len(base64.urlsafe_b64decode(sig + "==")) == 16
        assert verify_visitor_id(cookie, KEY) == "v1-AbC_123"

    def test_signature_is_deterministic_and_keyed(self) -> None:
        assert sign_visitor_id("abc", KEY) == sign_visitor_id("abc", KEY)
        assert sign_visitor_id("abc", KEY) != sign_visitor_id("abc", b"j" * 32)

    def test_forgeries_are_rejected(self) -> None:
        good = sign_visitor_id("alice", KEY)
        sig = good.split(".")[1]
        flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
        for forged in (
            f"mallory.{sig}",
            f"alice.{flipped}",
            sign_visitor_id("alice", b"j" * 32),
            "alice",
            "alice.",
            f".{sig}",
            f"alice.{sig}.x",
            f"alice.{sig}=",
            good[:-1],
            good + "A",
            f"al ice.{sig}",
            "",
        ):
            assert verify_visitor_id(forged, KEY) is None, forged
        assert verify_visitor_id(good, b"short") is None

    @pytest.mark.parametrize("raw_id", ["", "a.b", "a b", "é", "x" * 129])
    def test_unsignable_ids_raise(self, raw_id: str) -> None:
        with pytest.raises(ValueError, match="visitor id"):
            sign_visitor_id(raw_id, KEY)

    def test_short_key_raises(self) -> None:
        with pytest.raises(ValueError, match="key"):
            sign_visitor_id("abc", b"0123456789")

    @PROPERTY
    @given(st.from_regex(r"[A-Za-z0-9_-]{1,128}", fullmatch=True), st.text(max_size=40))
    def test_round_trip_and_tamper_property(self, raw_id: str, junk: str) -> None:
        cookie = sign_visitor_id(raw_id, KEY)
        assert verify_visitor_id(cookie, KEY) == raw_id
        assert verify_visitor_id(junk, KEY) is None or junk == cookie
