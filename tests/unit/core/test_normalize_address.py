"""Tests for gateway.core.normalize.address: city (ct), state (st), postal code (zp)."""

from __future__ import annotations

import pytest
from normalizing import dropped, fullwidth

from gateway.core.normalize import check


class TestCity:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("New York", "newyork"),
            ("St. Louis", "stlouis"),
            ("Winston-Salem", "winstonsalem"),
            ("São Paulo", "sãopaulo"),
            ("Paris 15", "paris"),
            ("Köln", "köln"),
            ("東京", "東京"),
        ],
    )
    def test_letters_only_lowercase(self, value: str, expected: str) -> None:
        assert check("ct", value) == expected

    def test_without_letters_is_dropped(self) -> None:
        assert dropped("ct", "12345") == "no letters in city"


class TestState:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("California", "ca"),
            ("New York", "ny"),
            ("new york", "ny"),
            ("District of Columbia", "dc"),
            ("North Carolina", "nc"),
            ("British Columbia", "bc"),
            ("Québec", "qc"),
            ("CA", "ca"),
            ("tx", "tx"),
            ("US-CA", "ca"),
            ("CA-ON", "on"),
            ("Bavaria", "bavaria"),
            ("Île-de-France", "îledefrance"),
            ("Nordrhein-Westfalen", "nordrheinwestfalen"),
            ("Tokyo 13", "tokyo13"),
        ],
    )
    def test_maps_us_and_canadian_names_to_codes(self, value: str, expected: str) -> None:
        assert check("st", value) == expected

    def test_without_letters_or_digits_is_dropped(self) -> None:
        assert dropped("st", "--") == "no letters or digits in state"


class TestZip:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("94025", "94025"),
            ("94025-1234", "94025"),
            ("940251234", "94025"),
            ("M1 1AE", "m11ae"),
            ("SW1A 1AA", "sw1a1aa"),
            ("K1A 0B1", "k1a0b1"),
            ("10115", "10115"),
            ("1000-001", "1000001"),
            ("00-950", "00950"),
            ("-12345", "12345"),
            (fullwidth("12345"), "12345"),
        ],
    )
    def test_lowercase_no_spaces_us_five_digits(self, value: str, expected: str) -> None:
        assert check("zp", value) == expected

    @pytest.mark.parametrize("value", ["n/a", "-", "1", "12345678901", "ab#12", "Straße"])
    def test_garbage_is_dropped(self, value: str) -> None:
        assert dropped("zp", value) == "not a postal code"
