"""The address rules: city (ct), state or province (st) with the US/Canadian name tables, and
postal code (zp)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Final

from gateway.core.normalize.rule import Dropped
from gateway.core.normalize.text import _ascii_digits, _fold, _has_letter, _is_word_char

# ---------------------------------------------------------------------------------------------
# ct, st

_CODE_SEPARATORS: Final = frozenset("-._\u2212\u30fc")


def _is_code_separator(c: str) -> bool:
    """Separators inside postcodes and "US-CA" codes: whitespace, dashes, minus, '.', '_'."""
    return c in _CODE_SEPARATORS or c.isspace() or unicodedata.category(c) == "Pd"


def _is_city_char(c: str) -> bool:
    return unicodedata.category(c)[0] in "LM"


def _city(value: str, _default: str | None) -> str | Dropped:
    """Letters only, lowercase: "New York" → "newyork"."""
    text = _fold(value, _is_city_char)
    if not _has_letter(text):
        return Dropped("no letters in city")
    return text


_US_STATES: Final = {
    "alabama": "al",
    "alaska": "ak",
    "arizona": "az",
    "arkansas": "ar",
    "california": "ca",
    "colorado": "co",
    "connecticut": "ct",
    "delaware": "de",
    "florida": "fl",
    "georgia": "ga",
    "hawaii": "hi",
    "idaho": "id",
    "illinois": "il",
    "indiana": "in",
    "iowa": "ia",
    "kansas": "ks",
    "kentucky": "ky",
    "louisiana": "la",
    "maine": "me",
    "maryland": "md",
    "massachusetts": "ma",
    "michigan": "mi",
    "minnesota": "mn",
    "mississippi": "ms",
    "missouri": "mo",
    "montana": "mt",
    "nebraska": "ne",
    "nevada": "nv",
    "newhampshire": "nh",
    "newjersey": "nj",
    "newmexico": "nm",
    "newyork": "ny",
    "newyorkstate": "ny",
    "northcarolina": "nc",
    "northdakota": "nd",
    "ohio": "oh",
    "oklahoma": "ok",
    "oregon": "or",
    "pennsylvania": "pa",
    "rhodeisland": "ri",
    "southcarolina": "sc",
    "southdakota": "sd",
    "tennessee": "tn",
    "texas": "tx",
    "utah": "ut",
    "vermont": "vt",
    "virginia": "va",
    "washington": "wa",
    "washingtonstate": "wa",
    "westvirginia": "wv",
    "wisconsin": "wi",
    "wyoming": "wy",
    "districtofcolumbia": "dc",
    "washingtondc": "dc",
    "puertorico": "pr",
    "guam": "gu",
    "usvirginislands": "vi",
    "virginislands": "vi",
    "americansamoa": "as",
    "northernmarianaislands": "mp",
}
_CA_PROVINCES: Final = {
    "alberta": "ab",
    "britishcolumbia": "bc",
    "manitoba": "mb",
    "newbrunswick": "nb",
    "newfoundlandandlabrador": "nl",
    "newfoundland": "nl",
    "novascotia": "ns",
    "ontario": "on",
    "princeedwardisland": "pe",
    "quebec": "qc",
    "saskatchewan": "sk",
    "northwestterritories": "nt",
    "nunavut": "nu",
    "yukon": "yt",
    "yukonterritory": "yt",
}
_STATE_NAMES: Final[Mapping[str, str]] = {**_US_STATES, **_CA_PROVINCES}
_STATE_CODES: Final = frozenset(_STATE_NAMES.values())
_ISO_SUBDIVISION_RE: Final = re.compile(r"(?:us|ca)-+([a-z]{2})")


def _state(value: str, default: str | None) -> str | Dropped:
    """US/CA names → 2-letter code; anything else lowercase without punctuation or spaces."""
    lowered = unicodedata.normalize("NFKC", value).lower()
    dashed = "".join("-" if _is_code_separator(c) else c for c in lowered)
    iso = _ISO_SUBDIVISION_RE.fullmatch(dashed)
    if iso is not None and iso.group(1) in _STATE_CODES:
        return iso.group(1)
    text = _fold(value, _is_word_char)
    if not text:
        return Dropped("no letters or digits in state")
    key = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return _STATE_NAMES.get(key, text)


# ---------------------------------------------------------------------------------------------
# zp

_US_ZIP_RE: Final = re.compile(r"[0-9]{5}(?:[0-9]{4})?")
_ZIP_RE: Final = re.compile(r"[a-z0-9]{2,10}")


def _zip(value: str, _default: str | None) -> str | Dropped:
    """Lowercase without separators (Meta, TikTok: no spaces, no dashes); US ZIP+4 → 5 digits."""
    text = _ascii_digits(unicodedata.normalize("NFKC", value).lower())
    text = "".join(c for c in text if not _is_code_separator(c))
    if _US_ZIP_RE.fullmatch(text):
        return text[:5]
    if _ZIP_RE.fullmatch(text) is None:
        return Dropped("not a postal code")
    return text
