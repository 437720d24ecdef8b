"""Normalisation and SHA-256 hashing of customer identifiers (PII) per ad platform's rules.

Rules follow platforms.md §1.3 (Meta), §10.4 and §11 pitfalls 1, 12-14: stricter than Meta's
python SDK, in the spirit of Meta's capi-param-builder. A rule set is a table field → function;
"meta" is complete, "google" and "tiktok" reuse it and swap the email and phone rules only
(E.164 *with* '+', and gmail/googlemail dot and '+tag' removal for Google). "reddit" takes the
'+' phone too, its own e-mail rule (every domain: '+tag' cut, then every character of the local
part that is not an ASCII letter or digit removed — Reddit's "Manual Advanced Matching" guide:
``Al.ice$+Apple@Example.Com`` → ``alice@example.com``) and an external_id that is only trimmed
(platforms.md §7).

Choices worth knowing (all idempotent: a result fed back in gives itself, except the phone
ambiguities listed under `ph`):

* Every field: a 64-hex-digit value is an existing SHA-256 digest; it is lowercased and passed
  through, never hashed twice. Empty or whitespace-only values are dropped ("empty").
* em: trim + lowercase; one '@', non-empty local part, a dotted domain without empty labels, no
  whitespace, control characters or ``<>()[],;:\\"``. No gmail dot stripping for Meta.
* ph: NFKC, any Unicode digit becomes ASCII, a "tel:" scheme, an extension (``ext``, ``x``,
  ``#``, ``;``…) and a national "(0)" are removed, separators (whitespace, NBSP, ``-./()_``, any
  Unicode dash, the minus sign) are removed; any other letter drops the number (vanity numbers
  like 1-800-FLOWERS are refused). '+' or '00' mark an international number. The digits are
  then read with Google's libphonenumber numbering plans (gateway/core/phones.py): a trunk
  prefix after the country code goes ("+49 030 1234567" → 49301234567), a national number is
  read in the event's country (else the site's default country), and only numbers valid in their
  country's plan are kept. Ambiguity: in countries whose people write national numbers without
  a trunk prefix (US/Canada, China, Italy …) digits that form a valid national number are read
  as one; send foreign numbers with '+'.
* fn, ln: NFKC + lowercase, drop punctuation, symbols, separators and control characters
  (Unicode P*, S*, Z*, C*); letters of any script, marks and digits stay; needs a letter.
* ct: NFKC + lowercase, keep letters and combining marks only ("New York" → "newyork").
* st: US/Canadian names and "US-CA" forms (any separator) map to the 2-letter code; otherwise
  like a name (letters, marks, digits) — so 2-letter codes are simply lowercased.
* zp: NFKC + lowercase, any digit ASCII, separators removed (whitespace, NBSP, ``-._``, any
  Unicode dash, the minus sign: Meta's "no spaces, no dash"); then a US ZIP(+4) (5 or 9 digits)
  keeps its first 5 digits, so UK "M1 1AE" → "m11ae", Polish "00-950" → "00950", JP
  "100-0001" → "1000001". Must be 2-10 ASCII letters/digits.
* country: ISO 3166-1 alpha-2 (assigned codes only), alpha-3 or an English name/alias (accents
  and punctuation ignored: "Côte d'Ivoire", "U.S.A.", "UK") → lowercase alpha-2.
* db: YYYYMMDD from YYYYMMDD, YYYY-MM-DD / YYYY/MM/DD / YYYY.MM.DD (an ISO time part is
  ignored), DD.MM.YYYY, and MM/DD/YYYY or MM-DD-YYYY — for those slash/dash forms the US order is
  preferred and DD/MM is used only when MM/DD is not a date (16/2/1997). Real calendar date,
  year 1900-2099 (core has no clock, so a future date is not refused).
* ge: "m"/"f" from m/f, male/female, man/woman, mr/mrs/ms/miss, he/she … (a few non-English words
  too); anything else is dropped.
* external_id: trim, lowercase, all whitespace removed (Meta param builder); 1-256 characters.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Final

from gateway.core.normalize.address import _city, _state, _zip
from gateway.core.normalize.countries import _country, _country_rule
from gateway.core.normalize.digests import _SHA256_RE, is_sha256, sha256_hex
from gateway.core.normalize.emails import (
    _email,
    _email_google,
    _email_reddit,
    _gmail,
    _reddit_local,
)
from gateway.core.normalize.externalid import _external_id, _external_id_trimmed
from gateway.core.normalize.person import _date_of_birth, _gender, _name
from gateway.core.normalize.phone import _phone_digits, _phone_plus, _plus
from gateway.core.normalize.rule import MAX_INPUT, Dropped, _Rule

__all__ = [
    "DERIVED",
    "FIELDS",
    "RULESETS",
    "SAME_RULE",
    "check",
    "hashed",
    "normalize",
]

FIELDS: Final[tuple[str, ...]] = (
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


# ---------------------------------------------------------------------------------------------
# Rule sets

_META: Final[Mapping[str, _Rule]] = {
    "em": _email,
    "ph": _phone_digits,
    "fn": _name,
    "ln": _name,
    "ct": _city,
    "st": _state,
    "zp": _zip,
    "country": _country_rule,
    "db": _date_of_birth,
    "ge": _gender,
    "external_id": _external_id,
}

_RULES: Final[Mapping[str, Mapping[str, _Rule]]] = {
    "meta": _META,
    "google": {**_META, "em": _email_google, "ph": _phone_plus},
    "tiktok": {**_META, "ph": _phone_plus},
    "reddit": {
        **_META,
        "em": _email_reddit,
        "ph": _phone_plus,
        "external_id": _external_id_trimmed,
    },
}

RULESETS: Final[tuple[str, ...]] = tuple(_RULES)

SAME_RULE: Final[Mapping[tuple[str, str], str]] = {
    (platform, field): next(p for p in RULESETS if _RULES[p][field] is rule)
    for platform, rules in _RULES.items()
    for field, rule in rules.items()
}
"""(rule set, field) → the first rule set (in `RULESETS` order) with the very same rule for the
field, so `check` gives both the same result for any value: "tiktok" e-mails are "meta"'s,
"reddit" phones "google"'s (what a hasher computes once for several rule sets)."""

DERIVED: Final[Mapping[tuple[str, str], tuple[str, Callable[[str], str | Dropped]]]] = {
    ("google", "em"): ("meta", _gmail),
    ("reddit", "em"): ("meta", _reddit_local),
    ("google", "ph"): ("meta", _plus),
}
"""(rule set, field) → (base rule set, step): the rule is the base rule set's followed by the
step, so `check` gives the base's Dropped, its passed-through digest (the base rules here never
make 64 hex digits of anything else) or the step applied to the base's normal form. A hasher
reads a value once for Meta and derives Google's and Reddit's e-mails and '+' phones from it
(keys are `SAME_RULE` groups: TikTok's and Reddit's phones are Google's)."""


def _rule(field: str, platform: str) -> _Rule:
    rules = _RULES.get(platform)
    if rules is None:
        raise ValueError(f"unknown platform rule set {platform!r}; known: {', '.join(RULESETS)}")
    rule = rules.get(field)
    if rule is None:
        raise ValueError(f"unknown identifier field {field!r}; known: {', '.join(FIELDS)}")
    return rule


@functools.lru_cache(maxsize=256)
def _default_country(default_country: str | None) -> str | None:
    if default_country is None:
        return None
    code = _country(default_country)
    if code is None:
        raise ValueError(f"unknown default country {default_country!r}")
    return code


def check(
    field: str, value: str, platform: str = "meta", *, default_country: str | None = None
) -> str | Dropped:
    """Return the normalised value (or an existing digest, lowercased) or why it was dropped."""
    rules = _RULES.get(platform)
    rule = rules.get(field) if rules is not None else None
    if rule is None:
        rule = _rule(field, platform)  # raises, naming what is unknown
    default = None if default_country is None else _default_country(default_country)
    text = value.strip()
    if not text:
        return Dropped("empty")
    if len(text) == 64 and _SHA256_RE.fullmatch(text) is not None:  # is_sha256(text)
        return text.lower()
    if len(text) > MAX_INPUT:
        return Dropped("too long")
    if not text.isascii():  # only lone surrogates fail to encode, and they are not ASCII
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return Dropped("not valid unicode text")
    return rule(text, default)


def normalize(
    field: str, value: str, platform: str = "meta", *, default_country: str | None = None
) -> str | None:
    """Return the normalised value ready to hash, or None when it cannot be normalised."""
    result = check(field, value, platform, default_country=default_country)
    return None if isinstance(result, Dropped) else result


def hashed(
    field: str, value: str, platform: str = "meta", *, default_country: str | None = None
) -> str | None:
    """Return the value as sent to the platform: SHA-256 of the normalised form, or the digest."""
    result = check(field, value, platform, default_country=default_country)
    if isinstance(result, Dropped):
        return None
    return result if is_sha256(value) else sha256_hex(result)
