"""Consent tiers: combine GPC, IAB TCF v2.2, Consent Mode v2 and CMP cookies into one decision.

Tiers (browser.md §3.6):

* ``NONE``: nothing forwarded and no cookie beyond a strictly necessary consent-state cookie;
  the hit only counts in aggregates.
* ``ANALYTICS``: forwarded without identifiers: no cookies, IP, user agent, hashed PII,
  visitor id, ``_fbc``/``_fbp`` or click ids (also stripped from the URL and referrer).
* ``FULL``: everything.

Each signal yields its own tier (an absent or unusable signal yields nothing):

* Consent Mode v2 (browser.md §3.3), explicit state from the loader or the API; ignored when
  all four fields are unstated. ``ad_storage`` and ``ad_user_data`` granted → FULL; otherwise
  ``analytics_storage`` granted → ANALYTICS; otherwise NONE. An unstated field counts as
  denied, except that an unstated ``ad_user_data`` follows ``ad_storage`` (CMPs written before
  v2 set only the v1 fields). ``ad_personalization`` does not change the tier: it only
  restricts remarketing and travels to destinations on the event itself.
* IAB TCF (browser.md §3.2), only when ``policy.tcf`` and the string decodes; only consent bits
  count (never legitimate interest). Purpose 1 missing → NONE (also when
  ``purposeOneTreatment`` says it was not disclosed). Purpose 1 and one of 7/8/9 → at least
  ANALYTICS; purposes 1, 3, 4 and 7 plus consent for every ``policy.tcf_vendor_ids`` vendor →
  FULL. A publisher restriction of type 0 (not allowed) or 2 (legitimate interest only) on
  purpose 1, 3, 4 or 7 withholds that vendor's consent. An undecodable string is ignored and
  noted as ``tcf:invalid``.
* CMP cookie: ``policy.cmp_mapping`` keys are tried in order against the percent-decoded value
  (first 4096 characters); a plain key must equal the whole value and a key ``re:<regex>``
  must match somewhere in it (``re.search``). The first matching key gives the tier; no match
  is ignored and noted as ``cmp:unmatched``.

Combination: the most restrictive present signal wins, because the CMP's cookies and strings
are the source of truth on every hit (browser.md §3.6). ``policy.default`` applies only when no
signal is present, so an explicit Consent Mode grant (or a TCF/CMP grant) lifts a NONE default:
that is how granting consent later starts capture. GPC (browser.md §3.1, §3.5) then caps the
result at ANALYTICS when ``policy.honor_gpc``: it is an opt-out of sale/sharing/targeted
advertising and never grants anything.

Reasons list the notes (``tcf:invalid``, ``cmp:unmatched``) and then the codes of every signal
whose own tier equals the outcome, in the order consent mode, TCF, CMP cookie, default, GPC.

LDU (browser.md §3.4, §3.6 "US opt-out modifier"): ``ldu`` is set when the hit's region is in
``policy.ldu_regions`` (an entry "US" covers every "US-xx") or when an honoured GPC signal is
present; Meta/Snap destinations then send ``data_processing_options: ["LDU"]``.

Explicit denial (`is_explicit_denial`): the outcome is NONE because some signal said so (a
Consent Mode denial, a TCF string without purpose 1 or measurement, a CMP cookie mapped to
``none``), not because `policy.default` applied. Only an explicit denial deletes the tracking
cookies the gateway set earlier: every platform's managed vendor cookies plus the site's visitor
cookie. Which cookies those are is a fact of the platform registrations, passed in by the edge
(``gateway.destinations.TRACKING_COOKIES``, built with ``core.clickids.tracking_cookies``), as
``core.clickids`` gets its click ids; `_sgc` (the consent state) is strictly necessary.

Destinations by tier (`forwards`, browser.md §3.6): FULL reaches every destination, NONE none.
ANALYTICS reaches only `ANALYTICS_DESTINATIONS`: the ad platforms need what the tier strips
(Meta refuses a website event without ``client_user_agent``, platforms.md §1.2, and the tier
allows no user agent), so an analytics-tier event is never offered to them: it is counted as
``consent_denied`` instead of ending as a platform's dead letter. The set is empty while every
registered destination is an ad platform (Meta today); an analytics destination (e.g. GA4
measurement without identifiers) would be listed here.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Final
from urllib.parse import unquote

from gateway.core.event import CLICK_ID_KEYS, CONSENT_KEYS, Consent, Event, User


class Tier(StrEnum):
    """How much of a hit may be kept and forwarded."""

    NONE = "none"
    ANALYTICS = "analytics"
    FULL = "full"


_RANK: Final[Mapping[Tier, int]] = {Tier.NONE: 0, Tier.ANALYTICS: 1, Tier.FULL: 2}

META_LDU_REGIONS: Final = ("US-CA", "US-CO", "US-CT", "US-FL", "US-TX", "US-OR", "US-MT")
"""US states Meta lists for Limited Data Use (browser.md §3.4); the list grows, check Meta's."""

TCF_FULL_PURPOSES: Final = (1, 3, 4, 7)
"""Store/access, build and use ad profiles, measure ad performance (browser.md §3.2, §3.6)."""

TCF_ANALYTICS_PURPOSES: Final = (7, 8, 9)
"""Any one of these, with purpose 1, allows identifier-free measurement (browser.md §3.6)."""

MAX_TC_LENGTH: Final = 32_768
"""Longer TC strings are refused unread (two full 65535-vendor bitfields fit easily)."""

_MAX_COOKIE_LENGTH: Final = 4096
_REGEX_PREFIX: Final = "re:"
_URL_ID_PARAMS: Final = CLICK_ID_KEYS | {"_gl", "dclid", "gclsrc", "mc_eid"}


@dataclass(frozen=True, slots=True)
class ConsentPolicy:
    """Per-site consent settings; invalid values raise ValueError naming the field."""

    default: Tier = Tier.FULL
    honor_gpc: bool = True
    tcf: bool = False
    tcf_vendor_ids: tuple[int, ...] = ()
    cmp_cookie: str | None = None
    cmp_mapping: Mapping[str, Tier] = field(default_factory=dict)
    ldu_regions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Check and normalise the settings once, so `decide` never has to."""
        object.__setattr__(self, "default", _tier(self.default, "default"))
        for vendor in self.tcf_vendor_ids:
            if not _is_vendor_id(vendor):
                raise ValueError(f"tcf_vendor_ids: {vendor!r} is not a vendor id (1-65535)")
        object.__setattr__(self, "tcf_vendor_ids", tuple(dict.fromkeys(self.tcf_vendor_ids)))
        mapping: dict[str, Tier] = {}
        for key, tier in self.cmp_mapping.items():
            if not _is_text(key) or key == _REGEX_PREFIX:
                raise ValueError(f"cmp_mapping: {key!r} is not a cookie value or 're:' pattern")
            if key.startswith(_REGEX_PREFIX):
                try:
                    re.compile(key[len(_REGEX_PREFIX) :])
                except re.error as exc:
                    raise ValueError(f"cmp_mapping: {key!r} is not a valid regex: {exc}") from exc
            mapping[key] = _tier(tier, f"cmp_mapping[{key!r}]")
        object.__setattr__(self, "cmp_mapping", MappingProxyType(mapping))
        if not _is_text_list(self.ldu_regions):
            raise ValueError(f"ldu_regions: {self.ldu_regions!r} is not a list of region codes")
        regions = tuple(dict.fromkeys(_region(r) for r in self.ldu_regions))
        object.__setattr__(self, "ldu_regions", regions)


@dataclass(frozen=True, slots=True)
class Signals:
    """What the edge observed on one hit."""

    gpc: bool = False
    consent: Consent | None = None
    tc_string: str | None = None
    cmp_cookie_value: str | None = None
    region: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The tier for one hit, stable reason codes, and whether Meta/Snap LDU applies."""

    tier: Tier
    reasons: tuple[str, ...]
    ldu: bool


class RestrictionType(IntEnum):
    """Publisher restriction types of the TCF core segment."""

    NOT_ALLOWED = 0
    REQUIRE_CONSENT = 1
    REQUIRE_LI = 2


@dataclass(frozen=True, slots=True)
class VendorSet:
    """Vendor ids as sorted, disjoint, inclusive ranges, so a hostile string stays small."""

    ranges: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(cls, ids: Iterable[int]) -> VendorSet:
        """Return the set holding exactly `ids`."""
        return cls(_merge((i, i) for i in ids))

    def __contains__(self, vendor: object) -> bool:
        """Return whether the vendor id is in the set."""
        if not isinstance(vendor, int):
            return False
        i = bisect_right(self.ranges, (vendor, 65536)) - 1
        return i >= 0 and self.ranges[i][0] <= vendor <= self.ranges[i][1]

    def __iter__(self) -> Iterator[int]:
        """Yield the ids in ascending order."""
        for start, end in self.ranges:
            yield from range(start, end + 1)

    def __len__(self) -> int:
        """Return how many ids the set holds."""
        return sum(end - start + 1 for start, end in self.ranges)


@dataclass(frozen=True, slots=True)
class PublisherRestriction:
    """One publisher restriction: a purpose, its restriction type, the vendors it covers."""

    purpose: int
    restriction: RestrictionType
    vendors: VendorSet


@dataclass(frozen=True, slots=True)
class TCData:
    """The core segment of a TCF v2 TC string; times are unix seconds."""

    version: int
    created: float
    last_updated: float
    cmp_id: int
    cmp_version: int
    consent_screen: int
    consent_language: str
    vendor_list_version: int
    policy_version: int
    is_service_specific: bool
    use_non_standard_texts: bool
    special_feature_opt_ins: frozenset[int]
    purposes_consent: frozenset[int]
    purposes_li_transparency: frozenset[int]
    purpose_one_treatment: bool
    publisher_cc: str
    vendor_consents: VendorSet
    vendor_legitimate_interests: VendorSet
    publisher_restrictions: tuple[PublisherRestriction, ...]

    def restrictions_for(self, vendor: int) -> dict[int, set[RestrictionType]]:
        """Return purpose → restriction types the publisher set for this vendor."""
        out: dict[int, set[RestrictionType]] = {}
        for r in self.publisher_restrictions:
            if vendor in r.vendors:
                out.setdefault(r.purpose, set()).add(r.restriction)
        return out


TRACKING_COOKIES: Final = (
    "_fbc",
    "_fbp",
    "_gcl_aw",
    "ttclid",
    "_ttp",
    "_scid",
    "_scclid",
    "_uetmsclkid",
    "_ga",
)
"""Every vendor cookie the gateway sets (click ids and browser ids); with the site's visitor
cookie, what an explicit denial deletes. `_sgc` (the consent state) is strictly necessary."""

ANALYTICS_DESTINATIONS: Final[frozenset[str]] = frozenset()
"""Destinations that take identifier-free (analytics-tier) events as the platform documents."""

_NOT_SIGNALS: Final = frozenset({"default", "tcf:invalid", "cmp:unmatched"})


def is_explicit_denial(decision: Decision) -> bool:
    """Return whether a signal (not the site's default) denied everything (module docstring)."""
    return decision.tier is Tier.NONE and any(r not in _NOT_SIGNALS for r in decision.reasons)


def forwards(tier: Tier, destination: str) -> bool:
    """Return whether an event of this tier may be offered to the destination."""
    if tier is Tier.FULL:
        return True
    return tier is Tier.ANALYTICS and destination in ANALYTICS_DESTINATIONS


def stated(consent: Consent | None) -> Decision | None:
    """Return the decision of a server API event's explicit Consent Mode state, or None when it
    states none of the tier fields (``ad_storage``, ``ad_user_data``, ``analytics_storage``).

    The browser's Consent Mode rules, with one server-side reading: an event stored nothing on
    a device, so an unstated ``ad_storage`` follows ``ad_user_data`` (Google's server APIs carry
    only ``ad_user_data`` and ``ad_personalization``). ``ad_personalization`` alone changes no
    tier, as in the browser.
    """
    if consent is None or all(
        v is None for v in (consent.ad_storage, consent.ad_user_data, consent.analytics_storage)
    ):
        return None
    if consent.ad_storage is None:
        consent = replace(consent, ad_storage=consent.ad_user_data)
    tier, reasons = _consent_mode(consent)
    return Decision(tier=tier, reasons=reasons, ldu=False)


def by_stated_tier(events: Sequence[Event]) -> tuple[list[Event], dict[Tier, list[Event]]]:
    """Split server API events by their explicit `consent` object with the browser's tiers
    (`stated`): the full-tier ones (and those without consent), and the others by tier,
    stripped as their tier requires (the none-tier ones kept whole, for counting only)."""
    full: list[Event] = []
    restricted: dict[Tier, list[Event]] = {}
    for event in events:
        decision = stated(event.consent)
        if decision is None or decision.tier is Tier.FULL:
            full.append(event)
            continue
        kept = apply(decision, event)
        restricted.setdefault(decision.tier, []).append(event if kept is None else kept)
    return full, restricted


def decide(policy: ConsentPolicy, signals: Signals) -> Decision:
    """Return the consent tier for one hit under a site's policy (rules: module docstring)."""
    notes: list[str] = []
    verdicts: list[tuple[Tier, tuple[str, ...]]] = []
    consent = signals.consent
    if consent is not None and any(getattr(consent, k) is not None for k in CONSENT_KEYS):
        verdicts.append(_consent_mode(consent))
    if policy.tcf and signals.tc_string and signals.tc_string.strip():
        tc = decode_tc_string(signals.tc_string.strip())
        if tc is None:
            notes.append("tcf:invalid")
        else:
            verdicts.append(_tcf(tc, policy.tcf_vendor_ids))
    if policy.cmp_cookie is not None and signals.cmp_cookie_value:
        tier = _cmp(policy.cmp_mapping, signals.cmp_cookie_value)
        if tier is None:
            notes.append("cmp:unmatched")
        else:
            verdicts.append((tier, (f"cmp:{tier.value}",)))
    if not verdicts:
        verdicts.append((policy.default, ("default",)))
    outcome = min((t for t, _ in verdicts), key=_RANK.__getitem__)
    gpc = policy.honor_gpc and signals.gpc
    if gpc:
        verdicts.append((Tier.ANALYTICS, ("gpc",)))
        outcome = min(outcome, Tier.ANALYTICS, key=_RANK.__getitem__)
    reasons = [*notes, *(code for t, codes in verdicts if t is outcome for code in codes)]
    return Decision(tier=outcome, reasons=tuple(reasons), ldu=gpc or _in_regions(policy, signals))


def apply(decision: Decision, event: Event) -> Event | None:
    """Return the event as the decision allows it: dropped, stripped of identifiers, or as is."""
    if decision.tier is Tier.NONE:
        return None
    if decision.tier is Tier.FULL:
        return event
    return replace(
        event, user=User(), url=_strip_ids(event.url), referrer=_strip_ids(event.referrer)
    )


def decode_tc_string(tc: str) -> TCData | None:
    """Return the core segment of a TCF v2 TC string, or None when it is not a valid one."""
    if not 0 < len(tc) <= MAX_TC_LENGTH:
        return None
    segments = tc.split(".")
    if not all(_SEGMENT_RE.fullmatch(s) for s in segments):
        return None
    reader = _Reader("".join(map(_SEXTETS.__getitem__, segments[0].rstrip("="))))
    try:
        return _core(reader)
    except _MalformedError:
        return None


# --- decision helpers -----------------------------------------------------------------------


def _tier(value: object, name: str) -> Tier:
    if isinstance(value, str) and value in Tier.__members__.values():
        return Tier(value)
    choices = ", ".join(t.value for t in Tier)
    raise ValueError(f"{name}: {value!r} is not one of {choices}")


def _is_vendor_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


def _is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _is_text_list(value: object) -> bool:
    return isinstance(value, tuple | list) and all(_is_text(v) for v in value)


def _region(value: str) -> str:
    return value.strip().upper().replace("_", "-")


def _in_regions(policy: ConsentPolicy, signals: Signals) -> bool:
    if not signals.region or not policy.ldu_regions:
        return False
    region = _region(signals.region)
    return any(region == r or region.startswith(r + "-") for r in policy.ldu_regions)


def _consent_mode(c: Consent) -> tuple[Tier, tuple[str, ...]]:
    ad_storage = c.ad_storage is True
    ad_user_data = (c.ad_user_data if c.ad_user_data is not None else c.ad_storage) is True
    if ad_storage and ad_user_data:
        return Tier.FULL, ("consent_mode:granted",)
    denied = [
        f"consent_mode:{name}_denied"
        for name, granted in (("ad_storage", ad_storage), ("ad_user_data", ad_user_data))
        if not granted
    ]
    if c.analytics_storage is True:
        return Tier.ANALYTICS, tuple(denied)
    return Tier.NONE, (*denied, "consent_mode:analytics_storage_denied")


def _tcf(tc: TCData, vendors: tuple[int, ...]) -> tuple[Tier, tuple[str, ...]]:
    purposes = tc.purposes_consent
    if 1 not in purposes:
        why = "purpose1_not_disclosed" if tc.purpose_one_treatment else "purpose1_denied"
        return Tier.NONE, (f"tcf:{why}",)
    if not any(p in purposes for p in TCF_ANALYTICS_PURPOSES):
        return Tier.NONE, ("tcf:measurement_denied",)
    missing = [f"tcf:purpose{p}_denied" for p in TCF_FULL_PURPOSES if p not in purposes]
    missing += [f"tcf:vendor{v}_denied" for v in vendors if not _vendor_allowed(tc, v)]
    if missing:
        return Tier.ANALYTICS, tuple(missing)
    return Tier.FULL, ("tcf:granted",)


def _vendor_allowed(tc: TCData, vendor: int) -> bool:
    if vendor not in tc.vendor_consents:
        return False
    blocking = {RestrictionType.NOT_ALLOWED, RestrictionType.REQUIRE_LI}
    restricted = tc.restrictions_for(vendor)
    return not any(restricted.get(p, set()) & blocking for p in TCF_FULL_PURPOSES)


def _cmp(mapping: Mapping[str, Tier], raw: str) -> Tier | None:
    value = unquote(raw[:_MAX_COOKIE_LENGTH]).strip()
    for key, tier in mapping.items():
        if key.startswith(_REGEX_PREFIX):
            if re.search(key[len(_REGEX_PREFIX) :], value):
                return tier
        elif key == value:
            return tier
    return None


def _strip_ids(url: str | None) -> str | None:
    if url is None or "?" not in url:
        return url
    base, _, rest = url.partition("?")
    query, hash_mark, fragment = rest.partition("#")
    kept = [
        part
        for part in query.split("&")
        if part and unquote(part.partition("=")[0]).strip().lower() not in _URL_ID_PARAMS
    ]
    return base + ("?" + "&".join(kept) if kept else "") + hash_mark + fragment


# --- TC string decoding (IAB TCF v2 "Consent string and vendor list formats", core segment) --

_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_SEXTETS: Final[Mapping[str, str]] = {c: format(i, "06b") for i, c in enumerate(_ALPHABET)}
_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9_\-]+={0,2}")
_ONES_RE: Final = re.compile(r"1+")


class _MalformedError(Exception):
    """The bits do not form a valid core segment."""


class _Reader:
    """Reads big-endian unsigned fields from a string of '0'/'1' characters."""

    __slots__ = ("bits", "pos")

    def __init__(self, bits: str) -> None:
        self.bits = bits
        self.pos = 0

    def take(self, n: int) -> str:
        """Return the next `n` bits as text."""
        end = self.pos + n
        if end > len(self.bits):
            raise _MalformedError
        chunk = self.bits[self.pos : end]
        self.pos = end
        return chunk

    def number(self, n: int) -> int:
        """Return the next `n` bits as an unsigned integer."""
        return int(self.take(n), 2)

    def flag(self) -> bool:
        """Return the next bit as a boolean."""
        return self.take(1) == "1"

    def ids(self, n: int) -> frozenset[int]:
        """Return the 1-based positions of the set bits among the next `n`."""
        return frozenset(i + 1 for i, bit in enumerate(self.take(n)) if bit == "1")

    def letters(self) -> str:
        """Return a two-letter code stored as two 6-bit offsets from 'A'."""
        first, second = self.number(6), self.number(6)
        if first > 25 or second > 25:
            raise _MalformedError
        return chr(65 + first) + chr(65 + second)

    def ranges(self, max_id: int | None = None) -> VendorSet:
        """Return a range list: a 12-bit count of single ids or id ranges."""
        entries: list[tuple[int, int]] = []
        for _ in range(self.number(12)):
            is_range = self.flag()
            start = self.number(16)
            end = self.number(16) if is_range else start
            if start < 1 or end < start or (max_id is not None and end > max_id):
                raise _MalformedError
            entries.append((start, end))
        return VendorSet(_merge(entries))

    def vendors(self) -> VendorSet:
        """Return a vendor section: max id, then a bitfield or a range list."""
        max_id = self.number(16)
        if self.flag():
            return self.ranges(max_id)
        bits = self.take(max_id)
        return VendorSet(tuple((m.start() + 1, m.end()) for m in _ONES_RE.finditer(bits)))


def _core(r: _Reader) -> TCData:
    version = r.number(6)
    if version != 2:
        raise _MalformedError
    created, last_updated = r.number(36) / 10, r.number(36) / 10
    cmp_id, cmp_version, consent_screen = r.number(12), r.number(12), r.number(6)
    consent_language = r.letters()
    vendor_list_version, policy_version = r.number(12), r.number(6)
    is_service_specific, use_non_standard_texts = r.flag(), r.flag()
    special_features = r.ids(12)
    purposes_consent, purposes_li = r.ids(24), r.ids(24)
    purpose_one_treatment = r.flag()
    publisher_cc = r.letters()
    vendor_consents = r.vendors()
    vendor_li = r.vendors()
    restrictions: list[PublisherRestriction] = []
    for _ in range(r.number(12)):
        purpose, kind = r.number(6), r.number(2)
        if kind > RestrictionType.REQUIRE_LI:  # 3 is undefined in the specification
            raise _MalformedError
        restrictions.append(PublisherRestriction(purpose, RestrictionType(kind), r.ranges()))
    return TCData(
        version=version,
        created=created,
        last_updated=last_updated,
        cmp_id=cmp_id,
        cmp_version=cmp_version,
        consent_screen=consent_screen,
        consent_language=consent_language,
        vendor_list_version=vendor_list_version,
        policy_version=policy_version,
        is_service_specific=is_service_specific,
        use_non_standard_texts=use_non_standard_texts,
        special_feature_opt_ins=special_features,
        purposes_consent=purposes_consent,
        purposes_li_transparency=purposes_li,
        purpose_one_treatment=purpose_one_treatment,
        publisher_cc=publisher_cc,
        vendor_consents=vendor_consents,
        vendor_legitimate_interests=vendor_li,
        publisher_restrictions=tuple(restrictions),
    )


def _merge(entries: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(entries):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)
