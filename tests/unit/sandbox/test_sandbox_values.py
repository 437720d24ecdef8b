"""Tests for the value checks the emulators share (gateway.sandbox.values)."""

from __future__ import annotations

import math

import pytest

from gateway.sandbox.values import (
    bearer_token,
    is_http_url,
    is_int,
    is_ip,
    is_number,
    string_ids,
    string_ids_under,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, True), (2.5, True), (True, False), (math.nan, False), (math.inf, False), ("1", False)],
)
def test_is_number(value: object, expected: bool) -> None:
    assert is_number(value) is expected


@pytest.mark.parametrize(("value", "expected"), [(3, True), (3.0, False), (False, False)])
def test_is_int(value: object, expected: bool) -> None:
    assert is_int(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://shop.example/thanks", True),
        ("http://127.0.0.1:8080/", True),
        ("ftp://shop.example/", False),
        ("https:///no-host", False),
        ("/relative", False),
        ("http://[::1", False),
        (None, False),
    ],
)
def test_is_http_url(value: object, expected: bool) -> None:
    assert is_http_url(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("203.0.113.7", True), ("2001:db8::1", True), ("203.0.113.300", False), ("host", False)],
)
def test_is_ip(value: str, expected: bool) -> None:
    assert is_ip(value) is expected


def test_string_ids_keeps_only_string_values_of_objects() -> None:
    items = [{"id": "a"}, {"id": 2}, "x", {"other": "b"}, {"id": "c"}]
    assert string_ids(items, "id") == ["a", "c"]
    assert string_ids({"id": "a"}, "id") == []
    assert string_ids(None, "id") == []


@pytest.mark.parametrize(
    ("header", "expected"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", ""), ("", ""), ("Bearer", "")],
)
def test_bearer_token(header: str, expected: str) -> None:
    assert bearer_token(header) == expected


def test_string_ids_under_reads_the_named_list_of_an_object() -> None:
    assert string_ids_under({"data": [{"id": "a"}, {"id": 1}]}, "data", "id") == ["a"]
    assert string_ids_under({"data": {"id": "a"}}, "data", "id") == []
    assert string_ids_under([{"id": "a"}], "data", "id") == []
