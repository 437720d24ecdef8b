"""Shared destination helpers (gateway/destinations/common.py): forms, key order, verdicts."""

from __future__ import annotations

import json

import httpx

from gateway.core.event import Content, Event, Source, User
from gateway.destinations.base import BatchVerdict, Paused, Retry
from gateway.destinations.common import (
    SAFETY,
    chosen_test_code,
    content_items,
    hashed_ids,
    item_count,
    past_window,
    post_json,
    put_present,
    put_truthy,
    reason_text,
    status_verdict,
)

NOW = 1_790_000_000.0
ITEMS = (Content("a", 2, 10.0), Content("b", None, 2.5), Content("c", 3, None))


def test_content_items_keep_the_platform_key_names_and_order() -> None:
    assert content_items(ITEMS) == [
        {"id": "a", "quantity": 2, "item_price": 10.0},
        {"id": "b", "item_price": 2.5},
        {"id": "c", "quantity": 3},
    ]
    first = content_items(ITEMS[:1], id_key="content_id", price_key="price", price_first=True)
    assert list(first[0]) == ["content_id", "price", "quantity"]
    assert content_items(ITEMS[:1], money=lambda v: f"{v:.2f}") == [
        {"id": "a", "quantity": 2, "item_price": "10.00"}
    ]
    assert item_count(ITEMS) == 6


def test_put_present_skips_none_only() -> None:
    out: dict[str, object] = {"x": 1}
    put_present(out, (("a", None), ("b", 0), ("c", "")))
    assert out == {"x": 1, "b": 0, "c": ""}


def test_past_window_keeps_the_safety_margin() -> None:
    window = 7 * 86400
    assert not past_window(NOW - window + SAFETY, NOW, window)
    assert past_window(NOW - window + SAFETY - 1, NOW, window)


def test_hashed_ids_forms() -> None:
    user = User(hashed={"r": {"em": ("e1", "e2"), "ph": ("p1",), "fn": ()}})
    keys = ("em", ("ph", "phone"), "fn", "zp")
    assert hashed_ids(user, "r", keys, "list") == {"em": ["e1", "e2"], "phone": ["p1"]}
    assert hashed_ids(user, "r", keys, "first") == {"em": "e1", "phone": "p1"}
    assert hashed_ids(user, "r", keys, "one_or_list") == {"em": ["e1", "e2"], "phone": "p1"}
    assert hashed_ids(user, "other", keys, "list") == {}


def test_status_verdict_pauses_retries_or_defers() -> None:
    def verdict(status: int, **headers: str) -> BatchVerdict | None:
        paused = {401: "token", 404: "missing"}
        return status_verdict(httpx.Response(status, headers=headers), NOW, "m", paused, 60.0)

    assert verdict(401) == BatchVerdict(Paused("m (token)"))
    assert verdict(404) == BatchVerdict(Paused("m (missing)"))
    assert verdict(429) == BatchVerdict(Retry("m", 60.0))
    assert verdict(429, **{"retry-after": "5"}) == BatchVerdict(Retry("m", 5.0))
    assert verdict(503) == BatchVerdict(Retry("m", None))
    assert verdict(408) == BatchVerdict(Retry("m", None))
    for status in (200, 400, 403, 422):
        assert verdict(status) is None


def test_post_json_is_compact_utf8_with_headers_in_order() -> None:
    request = post_json(
        "https://api.example/x",
        {"a": "é", "b": [1]},
        auth={"authorization": "Bearer t"},
        extra={"x-extra": "1"},
        params={"q": "v"},
    )
    assert request.method == "POST"
    assert str(request.url) == "https://api.example/x?q=v"
    assert request.content == '{"a":"é","b":[1]}'.encode()
    assert json.loads(request.content) == {"a": "é", "b": [1]}
    names = [k.decode().lower() for k, _ in request.headers.raw]
    assert names.index("authorization") < names.index("content-type") < names.index("x-extra")


def test_reason_text_and_chosen_test_code() -> None:
    assert reason_text(["HTTP 400", "code 3"], "bad") == "HTTP 400, code 3: bad"
    assert reason_text(["HTTP 400"], "") == "HTTP 400"
    assert reason_text(["HTTP 400"], None) == "HTTP 400"
    assert reason_text(["x"], "y" * 1000, limit=10) == "x: yyyyyyy"
    assert len(reason_text(["x"], "y" * 1000)) == 500
    user = User()
    real = Event(event="Lead", event_id="e", time=0, source=Source.WEBSITE, user=user)
    test = Event(
        event="Lead", event_id="e", time=0, source=Source.WEBSITE, user=user, test_code="T1"
    )
    assert chosen_test_code(real, None) == ""
    assert chosen_test_code(real, "CONF") == "CONF"
    assert chosen_test_code(test, "CONF") == "T1"


def test_put_truthy_skips_empty_values() -> None:
    out: dict[str, object] = {}
    put_truthy(out, (("ip", ""), ("ua", None), ("x", "1")))
    assert out == {"x": "1"}
