"""Tests for gateway.core.normalize.countries: the country rule and country_code."""

from __future__ import annotations

import pytest
from normalizing import dropped

from gateway.core.normalize import check


class TestCountry:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("us", "us"),
            ("US", "us"),
            (" Us ", "us"),
            ("USA", "us"),
            ("U.S.A.", "us"),
            ("United States", "us"),
            ("united states of america", "us"),
            ("GBR", "gb"),
            ("United Kingdom", "gb"),
            ("UK", "gb"),
            ("Great Britain", "gb"),
            ("Germany", "de"),
            ("DEU", "de"),
            ("Deutschland", "de"),
            ("France", "fr"),
            ("Côte d'Ivoire", "ci"),
            ("Ivory Coast", "ci"),
            ("Curaçao", "cw"),
            ("Åland Islands", "ax"),
            ("Türkiye", "tr"),
            ("South Korea", "kr"),
            ("North Korea", "kp"),
            ("Democratic Republic of the Congo", "cd"),
            ("Congo", "cg"),
            ("Niger", "ne"),
            ("Nigeria", "ng"),
            ("Dominica", "dm"),
            ("Dominican Republic", "do"),
            ("Bosnia and Herzegovina", "ba"),
            ("ax", "ax"),
            ("ss", "ss"),
            ("bq", "bq"),
        ],
    )
    def test_codes_and_names_become_lowercase_alpha2(self, value: str, expected: str) -> None:
        assert check("country", value) == expected

    @pytest.mark.parametrize("value", ["xx", "zz", "xk", "eu", "Atlantis", "12", "u"])
    def test_unassigned_or_unknown_is_dropped(self, value: str) -> None:
        assert dropped("country", value) == "unknown country"
