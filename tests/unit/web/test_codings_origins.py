"""Pure helpers of the HTTP edge: content codings, origin triples, Bearer credentials."""

from __future__ import annotations

import gzip
import zlib

import pytest

from gateway.web.bearer import bearer_token
from gateway.web.codings import CodingError, accepts, decode
from gateway.web.origins import OriginRule, origin_triple


@pytest.mark.parametrize(
    ("header", "coding", "expected"),
    [
        (None, "gzip", False),
        ("", "gzip", False),
        ("gzip", "gzip", True),
        ("GZIP", "gzip", True),
        ("deflate, gzip;q=0.5", "gzip", True),
        ("gzip;q=0", "gzip", False),
        ("gzip; q=0.000", "gzip", False),
        ("gzip;q=bad", "gzip", False),
        ("*", "gzip", True),
        ("*;q=0", "gzip", False),
        ("*, gzip;q=0", "gzip", False),
        ("br", "gzip", False),
        ("gzip", "x-gzip", True),
        ("identity", "deflate", False),
    ],
)
def test_accepts(header: str | None, coding: str, expected: bool) -> None:
    assert accepts(header, coding) is expected


def test_decode_gzip_and_both_deflates() -> None:
    data = b"hello " * 100
    assert decode(gzip.compress(data), "gzip", 1000) == data
    assert decode(zlib.compress(data), "deflate", 1000) == data
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decode(raw.compress(data) + raw.flush(), "Deflate", 1000) == data


@pytest.mark.parametrize(
    ("body", "coding"),
    [
        (gzip.compress(b"\0" * 10_000_000), "gzip"),  # a bomb: refused at the limit
        (gzip.compress(b"x" * 1001), "gzip"),
        (b"\x1f\x8b not gzip", "gzip"),
        (gzip.compress(b"abc")[:-6], "gzip"),  # truncated
        (b"abc", "br"),
        (b"abc", "compress"),
    ],
)
def test_decode_refuses_bombs_corruption_and_unknown_codings(body: bytes, coding: str) -> None:
    with pytest.raises(CodingError):
        decode(body, coding, 1000)


@pytest.mark.parametrize(
    ("origin", "triple"),
    [
        ("https://shop.example", ("https", "shop.example", 443)),
        ("https://shop.example:443", ("https", "shop.example", 443)),
        ("http://shop.example", ("http", "shop.example", 80)),
        ("HTTPS://Shop.Example:8443", ("https", "shop.example", 8443)),
        ("http://[::1]:8080", ("http", "::1", 8080)),
        ("https://shop.example/", ("https", "shop.example", 443)),
        ("https://shop.example/path", None),
        ("https://shop.example?q", None),
        ("https://u@shop.example", None),
        ("https://shop.example:99999", None),
        ("https://shop.example:x", None),
        ("ftp://shop.example", None),
        ("null", None),
        ("", None),
        ("https://sh\u00f6p.example", None),
        ("https://shop .example", None),
    ],
)
def test_origin_triple(origin: str, triple: tuple[str, str, int] | None) -> None:
    assert origin_triple(origin) == triple


def test_rule_matches_only_the_allowed_port_and_scheme() -> None:
    rule = OriginRule(["https://shop.example", "https://app.shop.example:8443", "not an origin"])
    assert rule.allows("https://shop.example", "track.shop.example")
    assert not rule.allows("http://shop.example", "track.shop.example")
    assert not rule.allows("https://shop.example:8443", "track.shop.example")
    assert rule.allows("https://app.shop.example:8443", "track.shop.example")
    assert not rule.allows("https://app.shop.example", "track.shop.example")
    assert rule.allows("https://track.shop.example", "track.shop.example")
    assert rule.allows("https://track.shop.example:8443", "track.shop.example:8443")
    assert not rule.allows("https://track.shop.example", "track.shop.example:8443")
    assert not rule.allows("https://track.shop.example:8443", "track.shop.example")


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", b"abc"),
        ("bearer  abc ", b"abc"),
        ("Bearer caf\u00e9", None),
        ("Bearer \udcff\udcfe", None),  # aiohttp's surrogateescape of non-UTF-8 bytes
        ("Bearer \x00abc", None),
        ("Bearer ", None),
        ("Basic abc", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, token: bytes | None) -> None:
    assert bearer_token(header) == token
