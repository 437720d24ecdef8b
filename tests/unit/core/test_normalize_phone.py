"""Tests for gateway.core.normalize.phone: the phone rules (ph) of every rule set."""

from __future__ import annotations

import pytest
from normalizing import dropped, fullwidth

from gateway.core.normalize import check, hashed
from gateway.core.normalize.digests import sha256_hex


class TestPhone:
    @pytest.mark.parametrize(
        ("value", "default", "expected"),
        [
            ("(650) 555-1212", "us", "16505551212"),
            ("(650)555-1212", "US", "16505551212"),
            ("650.555.1212", "ca", "16505551212"),
            ("1 650 555 1212", "us", "16505551212"),
            ("+1 (650) 555-1212", None, "16505551212"),
            ("+44 20 7946 0958", None, "442079460958"),
            ("+44 (0)20 7946 0958", None, "442079460958"),
            ("0044 20 7946 0958", None, "442079460958"),
            ("0044 20 7946 0958", "de", "442079460958"),
            ("011 44 20 7946 0958", "us", "442079460958"),
            ("020 7946 0958", "gb", "442079460958"),
            ("0151 2345 6789", "de", "4915123456789"),
            ("06 12 34 56 78", "fr", "33612345678"),
            ("06 1234 5678", "it", "390612345678"),
            ("312 345 6789", "it", "393123456789"),
            ("92 23 45 67", "no", "4792234567"),
            ("612 34 56 78", "es", "34612345678"),
            ("8 (916) 123-45-67", "ru", "79161234567"),
            ("138 1234 5678", "cn", "8613812345678"),
            ("16505551212", None, "16505551212"),
            ("4915123456789", "gb", "4915123456789"),
            ("tel:+1-650-555-1212", None, "16505551212"),
            ("+1 650 555 1212 ext. 33", None, "16505551212"),
            ("+1 650 555 1212 x33", None, "16505551212"),
            ("+1 650 555 1212 #33", None, "16505551212"),
            (fullwidth("+1 650 555 1212"), None, "16505551212"),
            ("+٤٤ ٢٠ ٧٩٤٦ ٠٩٥٨", None, "442079460958"),
            ("+1\u2013650\u2013555\u20131212", None, "16505551212"),
            ("+49 0151 2345 6789", None, "4915123456789"),
            ("+49 030 1234567", None, "49301234567"),
        ],
    )
    def test_normalises_to_e164_digits_without_plus(
        self, value: str, default: str | None, expected: str
    ) -> None:
        assert check("ph", value, default_country=default) == expected

    @pytest.mark.parametrize(
        ("value", "default", "reason"),
        [
            ("(650) 555-1212", None, "no country calling code"),
            ("6505551212", None, "no country calling code"),
            ("020 7946 0958", None, "no country calling code"),
            ("1-800-FLOWERS", "us", "letters or symbols"),
            ("call me", None, "letters or symbols"),
            ("+44 20 +7946", None, "letters or symbols"),
            ("---", None, "no digits"),
            ("+", None, "no digits"),
            ("+1 555 12", None, "too short for +1"),
            ("+1234567890123456", None, "16 digits, E.164 allows 15"),
            ("+28 1234 5678", None, "unknown country calling code"),
            ("+0 650 555 1212", None, "unknown country calling code"),
            ("+44 1234", None, "too short for +44"),
            ("+44 1234 5678 9012", None, "too long for +44"),
            ("+1 (150) 555-1212", None, "not a valid +1 number"),
            ("012", "de", "too short for +49"),
        ],
    )
    def test_drops_with_reason(self, value: str, default: str | None, reason: str) -> None:
        assert reason in dropped("ph", value, default=default)

    @pytest.mark.parametrize("platform", ["google", "tiktok"])
    def test_google_and_tiktok_keep_the_plus(self, platform: str) -> None:
        assert check("ph", "(650) 555-1212", platform, default_country="us") == "+16505551212"
        assert check("ph", "+16505551212", platform) == "+16505551212"
        assert hashed("ph", "(650) 555-1212", platform, default_country="us") == sha256_hex(
            "+16505551212"
        )
        assert "no country calling code" in dropped("ph", "6505551212", platform)

    def test_complete_number_wins_over_default_country(self) -> None:
        # Normalised output has no '+': read back it must stay itself, whatever the default.
        for default in (None, "us", "de", "gb", "fr", "it", "in", "jp"):
            assert check("ph", "442079460958", default_country=default) == "442079460958"
            assert check("ph", "16505551212", default_country=default) == "16505551212"

    def test_ten_digit_foreign_number_is_ambiguous_with_nanp(self) -> None:
        # Documented ambiguity: "+47 92 23 45 67" normalises to ten digits that also form a
        # US number, so without '+' they are read as US (with "us") or refused (no default).
        assert check("ph", "+47 92 23 45 67", default_country="us") == "4792234567"
        assert check("ph", "4792234567", default_country="us") == "14792234567"
        assert "no country calling code" in dropped("ph", "4792234567")
        assert check("ph", "4792234567", default_country="no") == "4792234567"

    def test_cn_mobile_and_ru_trunk_are_read_as_national(self) -> None:
        # Documented ambiguity: an unprefixed "1[3-9]" + 9 digits is a Chinese mobile with "cn"
        # and "8" + 10 digits is a national Russian number with "ru".
        assert check("ph", "13812345678", default_country="cn") == "8613812345678"
        # Without a country it is no number: +1 381 is not an assigned US/Canada area code.
        assert "no country calling code" in dropped("ph", "13812345678")
        assert check("ph", "84912345678", default_country="ru") == "74912345678"
        assert check("ph", "+84 912 345 678", default_country="ru") == "84912345678"

    def test_ru_trunk_falls_back_to_international_when_not_a_russian_number(self) -> None:
        assert check("ph", "81312345678", default_country="ru") == "81312345678"
