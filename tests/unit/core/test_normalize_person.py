"""Tests for gateway.core.normalize.person: names (fn, ln), date of birth (db), gender (ge)."""

from __future__ import annotations

import pytest
from normalizing import dropped, fullwidth

from gateway.core.normalize import check


class TestNames:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("Mary", "mary"),
            ("  Valéry ", "valéry"),
            ("Vale\u0301ry", "valéry"),
            ("O'Brien", "obrien"),
            ("Jean-Luc", "jeanluc"),
            ("Mary Ann", "maryann"),
            ("J.R.R.", "jrr"),
            ("Smith, Jr.", "smithjr"),
            (fullwidth("MARY"), "mary"),
            ("정", "정"),
            ("Müller-Lüdenscheidt", "müllerlüdenscheidt"),
            ("Ελένη", "ελένη"),
            ("देवी", "देवी"),
            ("Louis XIV 2nd", "louisxiv2nd"),
        ],
    )
    def test_lowercase_without_punctuation_or_spaces(self, value: str, expected: str) -> None:
        assert check("fn", value) == expected
        assert check("ln", value) == expected

    @pytest.mark.parametrize("value", ["---", "123", "'.'", "☺", "\u0301"])
    def test_without_letters_is_dropped(self, value: str) -> None:
        assert dropped("fn", value) == "no letters in name"


class TestDateOfBirth:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("2/16/1997", "19970216"),
            ("02/16/1997", "19970216"),
            ("02-16-1997", "19970216"),
            ("16/2/1997", "19970216"),
            ("3/4/1997", "19970304"),
            ("19970216", "19970216"),
            ("1997-02-16", "19970216"),
            ("1997/2/16", "19970216"),
            ("1997.02.16", "19970216"),
            ("1997-02-16T00:00:00Z", "19970216"),
            ("1997-02-16 08:30", "19970216"),
            ("16.02.1997", "19970216"),
            ("1.2.1997", "19970201"),
            ("2000-02-29", "20000229"),
            ("1900-01-01", "19000101"),
            ("2099-12-31", "20991231"),
            (fullwidth("1997-02-16"), "19970216"),
        ],
    )
    def test_accepted_forms_become_yyyymmdd(self, value: str, expected: str) -> None:
        assert check("db", value) == expected

    @pytest.mark.parametrize(
        "value",
        ["1900-02-29", "1999-02-29", "2/30/1997", "13/13/1997", "1997-00-10", "1997-04-31",
         "1899-12-31", "2100-01-01", "31.02.1997", "00000000"],
    )  # fmt: skip
    def test_impossible_dates_are_dropped(self, value: str) -> None:
        assert dropped("db", value) == "not a real date in 1900-2099"

    @pytest.mark.parametrize(
        "value",
        ["yesterday", "1997", "97-02-16", "16 Feb 1997", "1997-02-16-01", "2/16/97", "1997-02/16"],
    )
    def test_unrecognised_forms_are_dropped(self, value: str) -> None:
        assert dropped("db", value).startswith("not a date of birth")


class TestGender:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("m", "m"),
            ("M", "m"),
            ("male", "m"),
            ("Man", "m"),
            ("Mr.", "m"),
            ("männlich", "m"),
            ("f", "f"),
            ("F", "f"),
            ("Female", "f"),
            ("woman", "f"),
            ("Mrs", "f"),
            ("Ms.", "f"),
            ("miss", "f"),
            ("Féminin", "f"),
        ],
    )
    def test_words_map_to_initial(self, value: str, expected: str) -> None:
        assert check("ge", value) == expected

    @pytest.mark.parametrize("value", ["x", "other", "non-binary", "1", "mf", "?"])
    def test_anything_else_is_dropped(self, value: str) -> None:
        assert dropped("ge", value) == "not a gender (m or f)"
