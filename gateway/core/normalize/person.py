"""The rules about the person: first and last name (fn, ln), date of birth (db), gender (ge)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Final

from gateway.core.normalize.rule import Dropped
from gateway.core.normalize.text import _ascii_digits, _fold, _fold_key, _has_letter, _is_word_char

# ---------------------------------------------------------------------------------------------
# fn, ln


def _name(value: str, _default: str | None) -> str | Dropped:
    """NFKC + lowercase, punctuation/symbols/spaces removed: "O'Brien" → "obrien"."""
    text = _fold(value, _is_word_char)
    if not _has_letter(text):
        return Dropped("no letters in name")
    return text


# ---------------------------------------------------------------------------------------------
# db

_DATE_YMD_RE: Final = re.compile(r"([0-9]{4})([-/.])([0-9]{1,2})\2([0-9]{1,2})(?:[t ][0-9:].*)?")
_DATE_8_RE: Final = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})")
_DATE_DOTTED_RE: Final = re.compile(r"([0-9]{1,2})\.([0-9]{1,2})\.([0-9]{4})")
_DATE_US_RE: Final = re.compile(r"([0-9]{1,2})([-/])([0-9]{1,2})\2([0-9]{4})")
_MIN_YEAR: Final = 1900
_MAX_YEAR: Final = 2099
_NOT_A_DATE: Final = Dropped("not a date of birth (YYYYMMDD, YYYY-MM-DD, MM/DD/YYYY, DD.MM.YYYY)")


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _ymd(year: int, month: int, day: int) -> str | None:
    """Return YYYYMMDD for a real date in 1900-2099, else None."""
    if not _MIN_YEAR <= year <= _MAX_YEAR or not 1 <= month <= 12:
        return None
    if not 1 <= day <= _days_in_month(year, month):
        return None
    return f"{year:04d}{month:02d}{day:02d}"


def _date_of_birth(value: str, _default: str | None) -> str | Dropped:
    """YYYYMMDD from the accepted date forms; US order wins for ambiguous slash dates."""
    text = _ascii_digits(unicodedata.normalize("NFKC", value)).lower()
    result: str | None = None
    if (m := _DATE_8_RE.fullmatch(text)) is not None:
        result = _ymd(int(m[1]), int(m[2]), int(m[3]))
    elif (m := _DATE_YMD_RE.fullmatch(text)) is not None:
        result = _ymd(int(m[1]), int(m[3]), int(m[4]))
    elif (m := _DATE_DOTTED_RE.fullmatch(text)) is not None:
        result = _ymd(int(m[3]), int(m[2]), int(m[1]))
    elif (m := _DATE_US_RE.fullmatch(text)) is not None:
        first, second, year = int(m[1]), int(m[3]), int(m[4])
        result = _ymd(year, first, second) or _ymd(year, second, first)
    else:
        return _NOT_A_DATE
    return Dropped("not a real date in 1900-2099") if result is None else result


# ---------------------------------------------------------------------------------------------
# ge

_GENDER_WORDS: Final[Mapping[str, str]] = {
    **dict.fromkeys(
        (
            "m",
            "male",
            "man",
            "men",
            "boy",
            "mr",
            "sir",
            "he",
            "him",
            "masculine",
            "masculino",
            "masculin",
            "maennlich",
            "mannlich",
            "hombre",
            "homme",
            "herr",
        ),
        "m",
    ),
    **dict.fromkeys(
        (
            "f",
            "female",
            "woman",
            "women",
            "girl",
            "mrs",
            "ms",
            "miss",
            "mme",
            "madam",
            "she",
            "her",
            "feminine",
            "femenino",
            "feminin",
            "weiblich",
            "mujer",
            "femme",
            "frau",
        ),
        "f",
    ),
}


def _gender(value: str, _default: str | None) -> str | Dropped:
    """Return "m" or "f" from a gender word or title."""
    code = _GENDER_WORDS.get(_fold_key(value))
    return Dropped("not a gender (m or f)") if code is None else code
