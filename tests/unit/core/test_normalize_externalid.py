"""Tests for gateway.core.normalize.externalid: the external_id rules."""

from __future__ import annotations

import pytest
from normalizing import dropped

from gateway.core.normalize import check


class TestExternalId:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("user-123", "user-123"),
            ("  ABC 123\t", "abc123"),
            ("Ab C\nD", "abcd"),
            ("x" * 256, "x" * 256),
        ],
    )
    def test_lowercase_without_whitespace(self, value: str, expected: str) -> None:
        assert check("external_id", value) == expected

    def test_longer_than_256_is_dropped(self) -> None:
        assert "longer than 256" in dropped("external_id", "x" * 257)
