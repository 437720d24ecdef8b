"""Phone numbers → E.164, with Google's libphonenumber numbering plans (`phonenumbers`).

`e164` takes a number already reduced to ASCII digits (see `gateway.core.normalize`, which
removes separators, "tel:", extensions and a "(0)"), whether it was written with an
international prefix ('+' or '00'), and the country to read a national number in. It returns
the E.164 digits without '+' ("16505551212") or raises `PhoneRefused` with a short reason.

Only numbers the library calls *valid* (in an assigned range of their country's plan, not only
of a possible length) are accepted: a hash of an impossible number never matches anyone, and the
warning tells the site what to fix. The library data is updated with each `phonenumbers`
release; keep the dependency current.

Reading a number written without an international prefix, with a country:

* it starts with that country's trunk prefix ('0'; '8' in RU, '06' in HU, '1' in NANP
  countries), or the country has no trunk prefix (IT, SM, VA …), or it is one whose people
  customarily write national numbers without it (NANP countries, China, India, Brazil):
  national reading first, then the whole number as an international one;
* otherwise the international reading comes first, so the digits this module returns read back
  as themselves (Meta's form has no '+'). The inherent ambiguity left: where the national
  reading comes first, digits that form a valid national number are read as one ("4792234567"
  with US is +1 479 223 4567, not +47 92 23 45 67; "84912345678" with RU, whose trunk prefix is
  '8', is +7 491 234 5678, not +84 912 345 678); send such numbers with '+'.

Without a country, digits are read as an international number, except ten digits shaped like a
US/Canada national number (most often a US number missing its country code): refused.

Fast roads: the library's parse + is_valid_number cost some 30 µs a number, mostly in per-call
pattern lookups. For '+<digits>' the parse step is skipped when it could change nothing (no
national prefix after the country code), and validity is decided with the library's own
patterns compiled once per calling code, in the library's order (`_CodePlan`). A national
number on a plain road (no IDD, no own calling code, at most the plain trunk prefix) is read
the same way, taking only a *valid* answer. Everything else goes to the library;
tests/unit/core/test_phones.py holds both roads to its answers.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final

import phonenumbers
from phonenumbers import NumberParseException, PhoneMetadata, PhoneNumber, ValidationResult
from phonenumbers.phonemetadata import PhoneNumberDesc

__all__ = ["PhoneRefused", "e164", "e164_by_library", "national_by_library", "national_first"]

_E164_MAX: Final = 15
_NANP_NATIONAL_RE: Final = re.compile(r"[2-9][0-9]{2}[2-9][0-9]{6}")
_NON_GEO: Final = "001"
_NSN_MIN: Final = 2  # the library's bounds on a national significant number
_NSN_MAX: Final = 17


class PhoneRefused(ValueError):
    """The digits are not a valid phone number; the message says why (no digits in it)."""


def e164(digits: str, international: bool, country: str | None) -> str:
    """Return the E.164 digits (no '+') of `digits`, or raise PhoneRefused.

    `digits` are ASCII digits only; `international` tells whether they followed '+' or '00';
    `country` is a lowercase ISO alpha-2 code or None.
    """
    if not digits:
        raise PhoneRefused("not a phone number: no digits")
    if international:
        return _international(digits)
    region = _region(country)
    if region is None:
        if len(digits) == 10 and _NANP_NATIONAL_RE.fullmatch(digits) is not None:
            raise PhoneRefused(_NO_CALLING_CODE)
        try:
            return _international(digits)
        except PhoneRefused:
            raise PhoneRefused(_NO_CALLING_CODE) from None
    first = national_first(digits, region)
    readings = (_national, _intl_or_none) if first else (_intl_or_none, _national)
    for reading in readings:
        result = reading(digits, region)
        if result is not None:
            return result
    raise PhoneRefused(_national_problem(digits, region))


# A message, not a shared exception instance: a raised instance keeps its traceback, whose
# frames hold the raw digits.
_NO_CALLING_CODE: Final = (
    "no country calling code: set a default country or send the number with '+'"
)


def e164_by_library(digits: str) -> str | None:
    """The library's own answer for '+<digits>': E.164 digits if valid, else None (no fast road).

    What the fast road in `_international` must agree with; also its fallback.
    """
    try:
        number = phonenumbers.parse("+" + digits, None)
    except NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return f"{number.country_code}{phonenumbers.national_significant_number(number)}"


def _international(digits: str) -> str:
    """E.164 digits of a number given with its calling code, or PhoneRefused."""
    if len(digits) > _E164_MAX:
        raise PhoneRefused(f"not a phone number: {len(digits)} digits, E.164 allows 15")
    fast = _fast_valid(digits)
    if fast is True:
        return digits
    if fast is None:  # the fast road does not apply: ask the library
        result = e164_by_library(digits)
        if result is not None:
            return result
    raise PhoneRefused(_international_problem(digits))


def _intl_or_none(digits: str, _country: str) -> str | None:
    try:
        return _international(digits)
    except PhoneRefused:
        return None


def _national(digits: str, region: str) -> str | None:
    """E.164 digits of `digits` read as dialled in `region` (trunk, IDD, own code), or None."""
    fast = _national_fast(digits, region)
    if fast is not None:
        return fast
    return national_by_library(digits, region)


def national_by_library(digits: str, region: str) -> str | None:
    """The library's reading of national `digits` in `region` (no fast road): E.164 or None."""
    try:
        number = phonenumbers.parse(digits, region)
    except NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    result = f"{number.country_code}{phonenumbers.national_significant_number(number)}"
    return result if len(result) <= _E164_MAX else None


_REASONS: Final = {
    ValidationResult.INVALID_COUNTRY_CODE: "unknown country calling code",
    ValidationResult.TOO_SHORT: "too short for +{code}",
    ValidationResult.TOO_LONG: "too long for +{code}",
    ValidationResult.INVALID_LENGTH: "wrong length for +{code}",
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "too short for +{code}",
    ValidationResult.IS_POSSIBLE: "not a valid +{code} number",
}


def _describe(number: PhoneNumber) -> str:
    reason = phonenumbers.is_possible_number_with_reason(number)
    return "not a phone number: " + _REASONS[reason].format(code=number.country_code)


def _international_problem(digits: str) -> str:
    try:
        number = phonenumbers.parse("+" + digits, None)
    except NumberParseException as error:
        if error.error_type == NumberParseException.INVALID_COUNTRY_CODE:
            return "not a phone number: unknown country calling code"
        return "not a phone number: too short or too long"
    return _describe(number)


def _national_problem(digits: str, region: str) -> str:
    try:
        number = phonenumbers.parse(digits, region)
    except NumberParseException:
        return f"not a phone number: too short or too long for {region}"
    return _describe(number)


@functools.lru_cache(maxsize=512)
def _region(country: str | None) -> str | None:
    """The library's region code for a lowercase alpha-2 code, or None if it has no plan."""
    if country is None:
        return None
    region = country.upper()
    return region if PhoneMetadata.metadata_for_region(region) is not None else None


@functools.lru_cache(maxsize=512)
def _trunk(region: str) -> str:
    """The region's national (trunk) prefix, or "\\0" (matches no digits) when it has none."""
    metadata = PhoneMetadata.metadata_for_region(region)
    prefix = None if metadata is None else metadata.national_prefix
    return prefix or "\0"


_CUSTOMARILY_WITHOUT_TRUNK: Final = frozenset(
    {*phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1], "CN", "IN", "BR"}
)


def national_first(digits: str, region: str) -> bool:
    """Whether `digits` (no '+') are read as a national number of `region` first."""
    trunk = _trunk(region)
    return region in _CUSTOMARILY_WITHOUT_TRUNK or trunk == "\0" or digits.startswith(trunk)


# ---------------------------------------------------------------------------------------------
# The fast road: the library's validity test with its patterns compiled once per calling code.


@dataclass(frozen=True, slots=True)
class _Desc:
    """One NumberDesc: the lengths it allows (empty: any) and its compiled pattern."""

    lengths: frozenset[int]
    pattern: re.Pattern[str]

    def matches(self, nsn: str) -> bool:
        if self.lengths and len(nsn) not in self.lengths:
            return False
        return self.pattern.fullmatch(nsn) is not None


@dataclass(frozen=True, slots=True)
class _RegionPlan:
    """What `_number_type_helper` checks for one region, in its order, and its leading digits."""

    leading: re.Pattern[str] | None
    general: _Desc
    kinds: tuple[_Desc, ...]

    def valid(self, nsn: str) -> bool:
        return self.general.matches(nsn) and any(kind.matches(nsn) for kind in self.kinds)


@dataclass(frozen=True, slots=True)
class _CodePlan:
    """The regions of one calling code and the prefix that `parse` would strip after it."""

    regions: tuple[_RegionPlan, ...]
    national_prefix: re.Pattern[str] | None

    def valid(self, nsn: str) -> bool:
        """is_valid_number: the region picked as region_code_for_number picks it, then its test."""
        if len(self.regions) == 1:
            return self.regions[0].valid(nsn)
        for region in self.regions:
            if region.leading is not None:
                if region.leading.match(nsn) is not None:
                    return region.valid(nsn)
            elif region.valid(nsn):
                return True
        return False


def _desc(desc: PhoneNumberDesc | None) -> _Desc | None:
    if desc is None or not desc.national_number_pattern:
        return None
    return _Desc(frozenset(desc.possible_length), re.compile(desc.national_number_pattern))


def _region_plan(metadata: PhoneMetadata) -> _RegionPlan | None:
    general = _desc(metadata.general_desc)
    if general is None:
        return None
    kinds = [
        metadata.premium_rate,
        metadata.toll_free,
        metadata.shared_cost,
        metadata.voip,
        metadata.personal_number,
        metadata.pager,
        metadata.uan,
        metadata.voicemail,
        metadata.fixed_line,
    ]
    if not metadata.same_mobile_and_fixed_line_pattern:
        kinds.append(metadata.mobile)
    leading = None if metadata.leading_digits is None else re.compile(metadata.leading_digits)
    descs = tuple(d for d in map(_desc, kinds) if d is not None)
    return _RegionPlan(leading, general, descs)


@functools.cache
def _code_plan(code: int) -> _CodePlan | None:
    """The plan of a calling code, or None when the fast road cannot model it (then: library)."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code)
    if not regions:
        return None
    if regions == (_NON_GEO,):
        main = PhoneMetadata.metadata_for_nongeo_region(code)
        metadatas = [main]
    else:
        metadatas = [PhoneMetadata.metadata_for_region(region) for region in regions]
        main = metadatas[0]
    if main is None:
        return None
    plans: list[_RegionPlan] = []
    for metadata in metadatas:
        if metadata is None:
            continue  # the library skips a region without metadata too
        plan = _region_plan(metadata)
        if plan is None:
            return None  # a region without a general pattern: leave it to the library
        plans.append(plan)
    parsing = main.national_prefix_for_parsing
    return _CodePlan(tuple(plans), None if not parsing else re.compile(parsing))


def _fast_valid(digits: str) -> bool | None:
    """Whether '+<digits>' is valid, as the library would say; None when only it can tell."""
    if digits.startswith("0"):
        return None
    for size in (1, 2, 3):
        plan = _code_plan(int(digits[:size]))
        if plan is not None:
            break
        if int(digits[:size]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return None  # a known code the fast road cannot model
    else:
        return None
    nsn = digits[size:]
    if not _NSN_MIN <= len(nsn) <= _NSN_MAX:
        return None
    if plan.national_prefix is not None and plan.national_prefix.match(nsn) is not None:
        return None  # parse may strip a trunk prefix here ("+49 030 …"): the library decides
    return plan.valid(nsn)


@dataclass(frozen=True, slots=True)
class _RegionRoad:
    """What `parse(digits, region)` looks at before the national number: IDD, code, trunk."""

    code: str
    idd: re.Pattern[str] | None
    parsing: re.Pattern[str] | None
    trunk: str | None
    plan: _CodePlan


@functools.lru_cache(maxsize=512)
def _region_road(region: str) -> _RegionRoad | None:
    """The fast national road of a region, or None when its parsing rules are not plain."""
    metadata = PhoneMetadata.metadata_for_region(region)
    if metadata is None or metadata.country_code is None:
        return None
    if metadata.national_prefix_transform_rule:
        return None  # parse rewrites the number (AR, BR, JP …): the library decides
    plan = _code_plan(metadata.country_code)
    if plan is None:
        return None
    idd = None if not metadata.international_prefix else re.compile(metadata.international_prefix)
    npfp = metadata.national_prefix_for_parsing
    parsing = None if not npfp else re.compile(npfp)
    trunk = metadata.national_prefix or None
    return _RegionRoad(str(metadata.country_code), idd, parsing, trunk, plan)


def _national_fast(digits: str, region: str) -> str | None:
    """The E.164 digits of a national number when the library would surely read it so.

    Taken only for a *valid* answer on a plain road: no international (IDD) prefix and not the
    region's own calling code first (parse would look for a country code), and either no
    national prefix for parsing at the start, or exactly the plain trunk prefix (which parse
    strips when what follows is a valid number). Anything else, and every invalid answer, goes
    to the library.
    """
    road = _region_road(region)
    if road is None:
        return None
    if road.idd is not None and road.idd.match(digits) is not None:
        return None
    if digits.startswith(road.code):
        return None
    nsn = digits
    if road.parsing is not None and (found := road.parsing.match(digits)) is not None:
        if road.trunk is None or found.group(0) != road.trunk or any(found.groups()):
            return None
        nsn = digits[len(road.trunk) :]
    if not _NSN_MIN <= len(nsn) <= _NSN_MAX or not road.plan.valid(nsn):
        return None
    result = road.code + nsn
    return result if len(result) <= _E164_MAX else None
