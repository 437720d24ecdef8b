"""Tests for gateway.core.normalize.emails: the e-mail rules (em) of every rule set."""

from __future__ import annotations

import pytest
from normalizing import dropped

from gateway.core.normalize import check


class TestEmail:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("John_Smith@gmail.com", "john_smith@gmail.com"),
            ("  JOHN.SMITH+shop@Gmail.COM ", "john.smith+shop@gmail.com"),
            ("a@b.c", "a@b.c"),
            ("fo'o@bar.com", "fo'o@bar.com"),
            ("user@sub.example.co.uk", "user@sub.example.co.uk"),
            ("Ünïcode@Exämple.de", "ünïcode@exämple.de"),
        ],
    )
    def test_trims_and_lowercases_valid_addresses(self, value: str, expected: str) -> None:
        assert check("em", value) == expected

    @pytest.mark.parametrize(
        "value",
        [
            "a",
            "abc",
            "a@b",
            "@b.c",
            ".c",
            "@",
            '"a b"@c.d',
            "a@@b.c",
            "a@b@c.d",
            "a b@c.d",
            "a@b..c",
            "a@.b.c",
            "a@b.c.",
            "<a@b.c>",
            "a@b.c;x@y.z",
        ],
    )
    def test_rejects_what_is_not_an_address(self, value: str) -> None:
        assert dropped("em", value) == "not an email address"

    def test_too_long_address_is_dropped(self) -> None:
        assert "too long" in dropped("em", "a" * 250 + "@b.co")

    def test_meta_and_tiktok_never_strip_gmail_dots(self) -> None:
        for platform in ("meta", "tiktok"):
            assert check("em", "John.Doe+x@GMAIL.com", platform) == "john.doe+x@gmail.com"

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("John.Doe+x@GMAIL.com", "johndoe@gmail.com"),
            ("j.o.h.n@googlemail.com", "john@googlemail.com"),
            ("cloudy.sanfrancisco+shopping@gmail.com", "cloudysanfrancisco@gmail.com"),
            ("John.Doe+x@example.com", "john.doe+x@example.com"),
            ("john.doe@gmail.com.au", "john.doe@gmail.com.au"),
        ],
    )
    def test_google_strips_dots_and_tag_for_gmail_only(self, value: str, expected: str) -> None:
        assert check("em", value, "google") == expected

    def test_google_drops_gmail_address_with_nothing_left(self) -> None:
        assert dropped("em", "...+tag@gmail.com", "google") == "not an email address"
