"""Tests for gateway.core.normalize: the public API, Meta's documented vectors, digests passed
through and empty input (each field rule: test_normalize_<rule module>.py; properties of every
rule: test_normalize_properties.py)."""

from __future__ import annotations

import pytest
from normalizing import dropped

from gateway.core.normalize import FIELDS, RULESETS, check, hashed, normalize
from gateway.core.normalize.digests import is_sha256, sha256_hex
from gateway.core.normalize.rule import Dropped


class TestPublicApi:
    def test_fields_are_metas_user_data_keys_in_order(self) -> None:
        assert FIELDS == (
            "em",
            "ph",
            "fn",
            "ln",
            "ct",
            "st",
            "zp",
            "country",
            "db",
            "ge",
            "external_id",
        )

    def test_rule_sets_include_meta_google_and_tiktok(self) -> None:
        assert RULESETS[0] == "meta"
        assert {"meta", "google", "tiktok"} <= set(RULESETS)

    def test_unknown_field_is_a_programming_error(self) -> None:
        with pytest.raises(ValueError, match="unknown identifier field"):
            check("email", "a@b.c")

    def test_unknown_platform_is_a_programming_error(self) -> None:
        with pytest.raises(ValueError, match="unknown platform"):
            check("em", "a@b.c", "myspace")

    def test_unknown_default_country_is_a_programming_error(self) -> None:
        with pytest.raises(ValueError, match="unknown default country"):
            check("ph", "0151 2345 6789", default_country="zz")

    def test_dropped_is_immutable_value(self) -> None:
        reason = Dropped("empty")
        assert reason == Dropped("empty")
        with pytest.raises(AttributeError):
            reason.reason = "other"  # type: ignore[misc]

    def test_normalize_turns_dropped_into_none(self) -> None:
        assert normalize("em", "John_Smith@gmail.com") == "john_smith@gmail.com"
        assert normalize("em", "not an email") is None

    def test_hashed_is_none_when_dropped(self) -> None:
        assert hashed("ge", "unknown") is None

    def test_sha256_hex_is_lowercase_hex_of_utf8(self) -> None:
        assert sha256_hex("abc") == (
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        )
        assert sha256_hex("é") == sha256_hex("\u00e9")
        assert sha256_hex("valéry").startswith("08e1996b")

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("a" * 64, True),
            ("A" * 64, True),
            ("  " + "0123456789abcdef" * 4 + "\n", True),
            ("a" * 63, False),
            ("a" * 65, False),
            ("g" * 64, False),
            ("", False),
            ("a" * 32, False),
        ],
    )
    def test_is_sha256_recognises_64_hex_digits(self, value: str, expected: bool) -> None:
        assert is_sha256(value) is expected


class TestMetaDocVectors:
    """The exact examples of Meta's customer-information parameter docs (platforms.md §1.3)."""

    def test_email(self) -> None:
        assert hashed("em", "John_Smith@gmail.com") == (
            "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
        )

    def test_phone_with_us_default(self) -> None:
        assert check("ph", "(650)555-1212", default_country="us") == "16505551212"
        assert hashed("ph", "(650)555-1212", default_country="us") == (
            "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
        )

    def test_date_of_birth_us_order(self) -> None:
        assert check("db", "2/16/1997") == "19970216"
        assert hashed("db", "2/16/1997") == (
            "01acdbf6ec7b4f478a225f1a246e5d6767eeab1a7ffa17f025265b5b94f40f0c"
        )

    def test_country(self) -> None:
        assert hashed("country", "us") == (
            "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"
        )

    def test_first_names(self) -> None:
        mary = hashed("fn", "Mary")
        valery = hashed("fn", "Valéry")
        assert mary is not None
        assert mary.startswith("6915771b")
        assert mary.endswith("f4ec")
        assert valery is not None
        assert valery.startswith("08e1996b")
        assert valery.endswith("149c")
        assert check("fn", "정") == "정"


class TestAlreadyHashed:
    @pytest.mark.parametrize("field", FIELDS)
    def test_sdk_vector_64_a_is_returned_unchanged(self, field: str) -> None:
        assert check(field, "a" * 64) == "a" * 64
        assert hashed(field, "a" * 64) == "a" * 64

    @pytest.mark.parametrize("platform", RULESETS)
    @pytest.mark.parametrize("field", FIELDS)
    def test_uppercase_padded_digest_is_lowercased_not_rehashed(
        self, field: str, platform: str
    ) -> None:
        digest = sha256_hex("john_smith@gmail.com")
        assert check(field, f"  {digest.upper()} ", platform) == digest
        assert hashed(field, f"  {digest.upper()} ", platform) == digest

    def test_digest_needs_exactly_64_hex_digits(self) -> None:
        assert check("external_id", "a" * 63) == "a" * 63
        assert hashed("external_id", "a" * 63) == sha256_hex("a" * 63)


class TestEmpty:
    @pytest.mark.parametrize("platform", RULESETS)
    @pytest.mark.parametrize("field", FIELDS)
    @pytest.mark.parametrize("value", ["", " ", "\t\n", "\u00a0\u2003"])
    def test_blank_is_dropped_as_empty(self, field: str, platform: str, value: str) -> None:
        assert dropped(field, value, platform) == "empty"

    @pytest.mark.parametrize("field", FIELDS)
    def test_oversized_input_is_dropped(self, field: str) -> None:
        assert dropped(field, "a" * 5000) == "too long"

    @pytest.mark.parametrize("field", FIELDS)
    def test_lone_surrogate_is_dropped_not_crashing_the_hash(self, field: str) -> None:
        assert dropped(field, "ab\ud800cd") == "not valid unicode text"
        assert hashed(field, "ab\ud800cd") is None
