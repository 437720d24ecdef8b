"""meta.hitwire: a hit's page URLs are decided once per spelling, the same way each time."""

from __future__ import annotations

import pytest

from gateway.core.eventfast import _matching, _Unusual
from gateway.core.eventschema import _URL_RE, MAX_URL
from gateway.core.hits import http_url
from gateway.destinations.meta import hitwire

PAGES = [
    "https://www.shop.test/",
    "http://x.example/a?fbclid=IwAR1&gclid=g1",
    " https://pad.example/ ",
    "",
    "   ",
    "https://",
    "https:///x",
    "javascript:alert(1)",
    "HTTPS://UPPER.example/\u00e4",
    "https://a.example/\u200b",
    "https://a.example/\x01",
    "https://long.example/" + "x" * 3000,
]


def direct(raw: str) -> tuple[str, str | None]:
    try:
        url = http_url(raw)
        return "kept", _matching(url, MAX_URL, _URL_RE.match) if url is not None else None
    except _Unusual:
        return "unusual", None


def memoised(raw: str) -> tuple[str, str | None]:
    try:
        return "kept", hitwire._page_url(raw)
    except _Unusual:
        return "unusual", None


@pytest.mark.parametrize("raw", PAGES)
def test_a_page_url_is_decided_as_both_stages_decide_it_first_and_from_the_memo(raw: str) -> None:
    hitwire._PAGE_URLS.clear()
    expected = direct(raw)
    assert memoised(raw) == expected
    assert (raw in hitwire._PAGE_URLS) == (len(raw) <= 1024)
    assert memoised(raw) == expected


def test_the_page_memo_stays_bounded() -> None:
    hitwire._PAGE_URLS.clear()
    for n in range(hitwire._MEMO_MAX + 10):
        memoised(f"https://www.shop.test/{n}")
    assert len(hitwire._PAGE_URLS) <= hitwire._MEMO_MAX
