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
import hashlib
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias

from gateway.core.phones import PhoneRefused, e164

__all__ = [
    "DERIVED",
    "FIELDS",
    "RULESETS",
    "SAME_RULE",
    "Dropped",
    "check",
    "country_code",
    "hashed",
    "is_sha256",
    "normalize",
    "sha256_hex",
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

MAX_INPUT: Final = 1024
"""Longer raw values are refused outright; no real identifier is that long."""

MAX_EXTERNAL_ID: Final = 256


@dataclass(frozen=True, slots=True)
class Dropped:
    """A value that cannot be normalised, with a short human reason."""

    reason: str


# ---------------------------------------------------------------------------------------------
# Countries: ISO 3166-1 alpha-2, alpha-3, English name; aliases after ';'. (Calling codes and
# numbering plans come from the phonenumbers library: gateway/core/phones.py.)

_COUNTRY_TABLE: Final = """
AD AND Andorra
AE ARE United Arab Emirates;UAE;Emirates
AF AFG Afghanistan
AG ATG Antigua and Barbuda;Antigua
AI AIA Anguilla
AL ALB Albania
AM ARM Armenia
AO AGO Angola
AQ ATA Antarctica
AR ARG Argentina
AS ASM American Samoa
AT AUT Austria
AU AUS Australia
AW ABW Aruba
AX ALA Aland Islands;Aland
AZ AZE Azerbaijan
BA BIH Bosnia and Herzegovina;Bosnia
BB BRB Barbados
BD BGD Bangladesh
BE BEL Belgium
BF BFA Burkina Faso
BG BGR Bulgaria
BH BHR Bahrain
BI BDI Burundi
BJ BEN Benin
BL BLM Saint Barthelemy;St Barthelemy;St Barts
BM BMU Bermuda
BN BRN Brunei;Brunei Darussalam
BO BOL Bolivia;Plurinational State of Bolivia
BQ BES Bonaire, Sint Eustatius and Saba;Caribbean Netherlands;Bonaire
BR BRA Brazil;Brasil
BS BHS Bahamas;The Bahamas
BT BTN Bhutan
BV BVT Bouvet Island
BW BWA Botswana
BY BLR Belarus
BZ BLZ Belize
CA CAN Canada
CC CCK Cocos (Keeling) Islands;Cocos Islands
CD COD Democratic Republic of the Congo;Congo (Dem. Rep.);DR Congo;Congo-Kinshasa;DRC
CF CAF Central African Republic
CG COG Congo;Republic of the Congo;Congo-Brazzaville
CH CHE Switzerland;Schweiz;Suisse
CI CIV Cote d'Ivoire;Ivory Coast
CK COK Cook Islands
CL CHL Chile
CM CMR Cameroon
CN CHN China;People's Republic of China;PRC
CO COL Colombia
CR CRI Costa Rica
CU CUB Cuba
CV CPV Cabo Verde;Cape Verde
CW CUW Curacao
CX CXR Christmas Island
CY CYP Cyprus
CZ CZE Czechia;Czech Republic
DE DEU Germany;Deutschland
DJ DJI Djibouti
DK DNK Denmark;Danmark
DM DMA Dominica
DO DOM Dominican Republic
DZ DZA Algeria
EC ECU Ecuador
EE EST Estonia
EG EGY Egypt
EH ESH Western Sahara
ER ERI Eritrea
ES ESP Spain;Espana
ET ETH Ethiopia
FI FIN Finland;Suomi
FJ FJI Fiji
FK FLK Falkland Islands;Falklands;Falkland Islands (Malvinas)
FM FSM Micronesia;Federated States of Micronesia
FO FRO Faroe Islands;Faroes
FR FRA France
GA GAB Gabon
GB GBR United Kingdom;UK;U.K.;Great Britain;Britain;England;Scotland;Wales;Northern Ireland
GD GRD Grenada
GE GEO Georgia
GF GUF French Guiana
GG GGY Guernsey
GH GHA Ghana
GI GIB Gibraltar
GL GRL Greenland
GM GMB Gambia;The Gambia
GN GIN Guinea
GP GLP Guadeloupe
GQ GNQ Equatorial Guinea
GR GRC Greece;Hellas
GS SGS South Georgia and the South Sandwich Islands;South Georgia
GT GTM Guatemala
GU GUM Guam
GW GNB Guinea-Bissau
GY GUY Guyana
HK HKG Hong Kong
HM HMD Heard Island and McDonald Islands
HN HND Honduras
HR HRV Croatia;Hrvatska
HT HTI Haiti
HU HUN Hungary
ID IDN Indonesia
IE IRL Ireland;Republic of Ireland;Eire
IL ISR Israel
IM IMN Isle of Man
IN IND India
IO IOT British Indian Ocean Territory
IQ IRQ Iraq
IR IRN Iran;Islamic Republic of Iran
IS ISL Iceland
IT ITA Italy;Italia
JE JEY Jersey
JM JAM Jamaica
JO JOR Jordan
JP JPN Japan
KE KEN Kenya
KG KGZ Kyrgyzstan
KH KHM Cambodia
KI KIR Kiribati
KM COM Comoros
KN KNA Saint Kitts and Nevis;St Kitts and Nevis
KP PRK North Korea;Democratic People's Republic of Korea;DPRK
KR KOR South Korea;Korea;Republic of Korea;Korea, Republic of
KW KWT Kuwait
KY CYM Cayman Islands
KZ KAZ Kazakhstan
LA LAO Laos;Lao People's Democratic Republic
LB LBN Lebanon
LC LCA Saint Lucia;St Lucia
LI LIE Liechtenstein
LK LKA Sri Lanka
LR LBR Liberia
LS LSO Lesotho
LT LTU Lithuania
LU LUX Luxembourg
LV LVA Latvia
LY LBY Libya
MA MAR Morocco
MC MCO Monaco
MD MDA Moldova;Republic of Moldova
ME MNE Montenegro
MF MAF Saint Martin;St Martin;Saint Martin (French part)
MG MDG Madagascar
MH MHL Marshall Islands
MK MKD North Macedonia;Macedonia
ML MLI Mali
MM MMR Myanmar;Burma
MN MNG Mongolia
MO MAC Macao;Macau
MP MNP Northern Mariana Islands
MQ MTQ Martinique
MR MRT Mauritania
MS MSR Montserrat
MT MLT Malta
MU MUS Mauritius
MV MDV Maldives
MW MWI Malawi
MX MEX Mexico
MY MYS Malaysia
MZ MOZ Mozambique
NA NAM Namibia
NC NCL New Caledonia
NE NER Niger
NF NFK Norfolk Island
NG NGA Nigeria
NI NIC Nicaragua
NL NLD Netherlands;The Netherlands;Holland;Nederland
NO NOR Norway;Norge
NP NPL Nepal
NR NRU Nauru
NU NIU Niue
NZ NZL New Zealand
OM OMN Oman
PA PAN Panama
PE PER Peru
PF PYF French Polynesia
PG PNG Papua New Guinea
PH PHL Philippines
PK PAK Pakistan
PL POL Poland;Polska
PM SPM Saint Pierre and Miquelon
PN PCN Pitcairn;Pitcairn Islands
PR PRI Puerto Rico
PS PSE Palestine;State of Palestine
PT PRT Portugal
PW PLW Palau
PY PRY Paraguay
QA QAT Qatar
RE REU Reunion
RO ROU Romania
RS SRB Serbia
RU RUS Russia;Russian Federation
RW RWA Rwanda
SA SAU Saudi Arabia
SB SLB Solomon Islands
SC SYC Seychelles
SD SDN Sudan
SE SWE Sweden;Sverige
SG SGP Singapore
SH SHN Saint Helena;Saint Helena, Ascension and Tristan da Cunha;St Helena
SI SVN Slovenia
SJ SJM Svalbard and Jan Mayen
SK SVK Slovakia
SL SLE Sierra Leone
SM SMR San Marino
SN SEN Senegal
SO SOM Somalia
SR SUR Suriname
SS SSD South Sudan
ST STP Sao Tome and Principe
SV SLV El Salvador
SX SXM Sint Maarten;Sint Maarten (Dutch part)
SY SYR Syria;Syrian Arab Republic
SZ SWZ Eswatini;Swaziland
TC TCA Turks and Caicos Islands
TD TCD Chad
TF ATF French Southern Territories
TG TGO Togo
TH THA Thailand
TJ TJK Tajikistan
TK TKL Tokelau
TL TLS Timor-Leste;East Timor
TM TKM Turkmenistan
TN TUN Tunisia
TO TON Tonga
TR TUR Turkey;Turkiye
TT TTO Trinidad and Tobago;Trinidad
TV TUV Tuvalu
TW TWN Taiwan
TZ TZA Tanzania;United Republic of Tanzania
UA UKR Ukraine
UG UGA Uganda
UM UMI United States Minor Outlying Islands
US USA United States;United States of America;USA;U.S.A.;US;U.S.;America
UY URY Uruguay
UZ UZB Uzbekistan
VA VAT Vatican City;Holy See;Vatican
VC VCT Saint Vincent and the Grenadines;St Vincent and the Grenadines;Saint Vincent
VE VEN Venezuela
VG VGB British Virgin Islands;Virgin Islands (British)
VI VIR United States Virgin Islands;US Virgin Islands;Virgin Islands (U.S.)
VN VNM Vietnam;Viet Nam
VU VUT Vanuatu
WF WLF Wallis and Futuna
WS WSM Samoa
YE YEM Yemen
YT MYT Mayotte
ZA ZAF South Africa
ZM ZMB Zambia
ZW ZWE Zimbabwe
"""


def _fold_key(text: str) -> str:
    """Return a lookup key: lowercase ASCII letters only, accents removed."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if "a" <= c <= "z")


def _parse_countries() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    alpha2: dict[str, str] = {}
    alpha3: dict[str, str] = {}
    names: dict[str, str] = {}
    for line in _COUNTRY_TABLE.strip().splitlines():
        a2, a3, rest = line.split(" ", 2)
        a2, a3 = a2.lower(), a3.lower()
        alpha2[a2] = a2
        alpha3[a3] = a2
        for name in rest.split(";"):
            names.setdefault(_fold_key(name), a2)
    return alpha2, alpha3, names


_ALPHA2, _ALPHA3, _COUNTRY_NAMES = _parse_countries()


def _country(value: str) -> str | None:
    """Return the lowercase alpha-2 code for a code, alpha-3 code or English name."""
    compact = "".join(c for c in unicodedata.normalize("NFKC", value).lower() if c.isalnum())
    if len(compact) == 2 and compact in _ALPHA2:
        return compact
    if len(compact) == 3 and compact in _ALPHA3:
        return _ALPHA3[compact]
    return _COUNTRY_NAMES.get(_fold_key(value))


def country_code(value: str) -> str | None:
    """Return the lowercase ISO alpha-2 code `value` names (code, alpha-3 or English name).

    None for anything else, a SHA-256 digest included: what a raw `user.country` tells the
    phone rule about where a national number was written.
    """
    text = value.strip()
    if not text or len(text) > MAX_INPUT or is_sha256(text):
        return None
    return _country(text)


# ---------------------------------------------------------------------------------------------
# Generic helpers

_SHA256_RE: Final = re.compile(r"[0-9a-fA-F]{64}")


def is_sha256(value: str) -> bool:
    """Tell whether `value` (stripped) is a SHA-256 hex digest: 64 hex digits, any case."""
    return _SHA256_RE.fullmatch(value.strip()) is not None


def sha256_hex(value: str) -> str:
    """Return the lowercase hex SHA-256 of the UTF-8 bytes of `value`."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


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


def _is_city_char(c: str) -> bool:
    return unicodedata.category(c)[0] in "LM"


def _has_letter(text: str) -> bool:
    return any(unicodedata.category(c)[0] == "L" for c in text)


_Rule: TypeAlias = Callable[[str, str | None], str | Dropped]
"""A field rule: (stripped non-empty value, default country alpha-2 or None) → result."""


# ---------------------------------------------------------------------------------------------
# em

_EMAIL_RE: Final = re.compile(
    r'[^@\s<>()\[\]\\,;:"]+@[^@.\s<>()\[\]\\,;:"]+(?:\.[^@.\s<>()\[\]\\,;:"]+)+'
)
"""One '@' between a non-empty local part and a domain of two or more non-empty dot-separated
labels; no whitespace or ``<>()[]\\,;:"`` anywhere."""
_NOT_EMAIL: Final = Dropped("not an email address")


def _email(value: str, _default: str | None) -> str | Dropped:
    """Trim + lowercase, then require a plausible address."""
    text = value.lower()
    if len(text) > 254:
        return Dropped("email address too long")
    if _EMAIL_RE.fullmatch(text) is None or not text.isprintable():
        return _NOT_EMAIL
    return text


_GMAIL_DOMAINS: Final = frozenset({"gmail.com", "googlemail.com"})


def _email_google(value: str, default: str | None) -> str | Dropped:
    """Meta's email rule plus Google's: gmail/googlemail lose local-part dots and '+tag'."""
    text = _email(value, default)
    return text if isinstance(text, Dropped) else _gmail(text)


def _gmail(text: str) -> str | Dropped:
    """Google's step on an address Meta's rule kept (see `_email_google`)."""
    local, domain = text.split("@")
    if domain in _GMAIL_DOMAINS:
        local = local.split("+", 1)[0].replace(".", "")
        if not local:
            return _NOT_EMAIL
    return f"{local}@{domain}"


_NOT_ALNUM_RE: Final = re.compile(r"[^a-z0-9]+")


def _email_reddit(value: str, default: str | None) -> str | Dropped:
    """Meta's email rule, then Reddit's: on every domain the local part loses its '+tag' and
    every character but ASCII letters and digits ("Al.ice$+Apple@Example.Com" → "alice@…")."""
    text = _email(value, default)
    return text if isinstance(text, Dropped) else _reddit_local(text)


def _reddit_local(text: str) -> str | Dropped:
    """Reddit's step on an address Meta's rule kept (see `_email_reddit`)."""
    local, domain = text.split("@")
    local = _NOT_ALNUM_RE.sub("", local.split("+", 1)[0])
    if not local:
        return _NOT_EMAIL
    return f"{local}@{domain}"


# ---------------------------------------------------------------------------------------------
# ph

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


_CODE_SEPARATORS: Final = frozenset("-._\u2212\u30fc")


def _is_code_separator(c: str) -> bool:
    """Separators inside postcodes and "US-CA" codes: whitespace, dashes, minus, '.', '_'."""
    return c in _CODE_SEPARATORS or c.isspace() or unicodedata.category(c) == "Pd"


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


# ---------------------------------------------------------------------------------------------
# fn, ln, ct, st


def _name(value: str, _default: str | None) -> str | Dropped:
    """NFKC + lowercase, punctuation/symbols/spaces removed: "O'Brien" → "obrien"."""
    text = _fold(value, _is_word_char)
    if not _has_letter(text):
        return Dropped("no letters in name")
    return text


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


# ---------------------------------------------------------------------------------------------
# country


def _country_rule(value: str, _default: str | None) -> str | Dropped:
    """ISO 3166-1 alpha-2 lowercase from a code, alpha-3 code or English name."""
    code = _country(value)
    return Dropped("unknown country") if code is None else code


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


# ---------------------------------------------------------------------------------------------
# external_id


def _external_id(value: str, _default: str | None) -> str | Dropped:
    """Lowercase with all whitespace removed (Meta param builder)."""
    text = "".join(c for c in value.lower() if not c.isspace())
    if len(text) > MAX_EXTERNAL_ID:
        return Dropped(f"external_id longer than {MAX_EXTERNAL_ID} characters")
    return text


def _external_id_trimmed(value: str, _default: str | None) -> str | Dropped:
    """Trimmed only (Reddit, platforms.md §7): the id as the shop knows it, case kept."""
    if len(value) > MAX_EXTERNAL_ID:
        return Dropped(f"external_id longer than {MAX_EXTERNAL_ID} characters")
    return value


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
