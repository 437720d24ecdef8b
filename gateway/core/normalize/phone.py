"""The phone rules (ph): a written number cleaned to its digits, then read as E.164 (with or
without '+') by the numbering plans in gateway/core/phones.py."""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from gateway.core.normalize.rule import Dropped
from gateway.core.normalize.text import _ascii_digits
from gateway.core.phones import PhoneRefused, e164

_TEL_SCHEME_RE: Final = re.compile(r"^\s*tel:", re.IGNORECASE)
_EXTENSION_RE: Final = re.compile(r"(?:[;#,]|ext|x).*$", re.IGNORECASE)
_SEPARATORS: Final = frozenset("-./()_\u00a0\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u30fc")
"""Separators inside phone numbers, postcodes and states: ASCII ``-./()_``, NBSP, the Unicode
dashes U+2010..U+2015, the minus sign U+2212 and the katakana prolonged sound mark (written as
a dash in Japanese numbers); any whitespace and any other dash (category Pd) too."""
_ASCII_SEPARATORS_RE: Final = re.compile(r"[\s\-./()_]+")
"""The ASCII fast path of the separator filter (whitespace, dashes, dots, slashes, parens, _)."""
_PHONE_SHAPE_RE: Final = re.compile(r"\+?[0-9]+")
_PLAIN_PHONE_RE: Final = re.compile(r"\+?[0-9 \-./()]+")
"""ASCII digits, an optional leading '+' and the common separators: nothing for NFKC, digit
mapping, "tel:" or extension removal to change; only the separators go (see `_phone_clean`)."""
_NO_DIGITS: Final = Dropped("not a phone number: no digits")


def _is_separator(c: str) -> bool:
    return c in _SEPARATORS or c.isspace() or unicodedata.category(c) == "Pd"


def _phone_clean(value: str) -> tuple[str, bool] | Dropped:
    """Return (digits, had an international '+' prefix) or why this is not a phone number."""
    if _PLAIN_PHONE_RE.fullmatch(value) is not None and "(0)" not in value:
        # The usual shape ("+1 650 555-1212"): the general steps below would only remove the
        # separators, which plain str.replace does several times faster than the regexes.
        digits = (
            value.replace(" ", "")
            .replace("-", "")
            .replace(".", "")
            .replace("/", "")
            .replace("(", "")
            .replace(")", "")
        )
        # Only ASCII digits are left, after a '+' if there was one: the shape is right.
        if digits.startswith("+"):
            return (digits[1:], True) if len(digits) > 1 else _NO_DIGITS
        return (digits, False) if digits else _NO_DIGITS
    text = _ascii_digits(unicodedata.normalize("NFKC", value))
    text = _TEL_SCHEME_RE.sub("", text)
    text = _EXTENSION_RE.sub("", text)
    text = text.replace("(0)", "")
    if text.isascii():
        text = _ASCII_SEPARATORS_RE.sub("", text)
    else:
        text = "".join(c for c in text if not _is_separator(c))
    return _phone_result(text)


def _phone_result(text: str) -> tuple[str, bool] | Dropped:
    """Return (digits, had '+') for a cleaned number, or why it is not one."""
    if not text or text == "+":
        return _NO_DIGITS
    if _PHONE_SHAPE_RE.fullmatch(text) is None:
        return Dropped("not a phone number: letters or symbols")
    if text.startswith("+"):
        return text[1:], True
    return text, False


def _phone_digits(value: str, default: str | None) -> str | Dropped:
    """E.164 digits without '+', e.g. "16505551212" (Meta, Snap, Pinterest)."""
    cleaned = _phone_clean(value)
    if isinstance(cleaned, Dropped):
        return cleaned
    digits, plus = cleaned
    if not plus and digits.startswith("00"):
        digits, plus = digits[2:], True
    try:
        return e164(digits, plus, default)
    except PhoneRefused as refused:
        return Dropped(str(refused))


def _phone_plus(value: str, default: str | None) -> str | Dropped:
    """E.164 with a leading '+', e.g. "+16505551212" (Google, TikTok, Reddit)."""
    digits = _phone_digits(value, default)
    return digits if isinstance(digits, Dropped) else _plus(digits)


def _plus(digits: str) -> str:
    return "+" + digits
