"""Unicode folding shared by the field rules: digits to ASCII, NFKC + lowercase filters, keys."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable


def _fold_key(text: str) -> str:
    """Return a lookup key: lowercase ASCII letters only, accents removed."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if "a" <= c <= "z")


def _ascii_digits(text: str) -> str:
    """Replace every Unicode decimal digit (Arabic-Indic, fullwidth …) by its ASCII digit."""
    if text.isascii():
        return text
    return "".join(
        str(unicodedata.decimal(c)) if not c.isascii() and unicodedata.decimal(c, -1) >= 0 else c
        for c in text
    )


def _fold(text: str, keep: Callable[[str], bool]) -> str:
    """NFKC + lowercase + filter, repeated until stable (filtering can enable compositions)."""
    for _ in range(8):
        folded = unicodedata.normalize("NFKC", text).lower()
        folded = "".join(c for c in folded if keep(c))
        if folded == text:
            break
        text = folded
    return text


def _is_word_char(c: str) -> bool:
    """Letters, marks and digits: what survives in names and non-US states."""
    return unicodedata.category(c)[0] in "LMN"


def _has_letter(text: str) -> bool:
    return any(unicodedata.category(c)[0] == "L" for c in text)
