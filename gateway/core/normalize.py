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
  ``#``, ``;``…) and a national "(0)" are removed, separators (spaces, ``-./()``, dashes) are
  removed; any other letter drops the number (vanity numbers like 1-800-FLOWERS are refused).
  '+', '00' (and '011' with a US/Canada default) mark an international number. A digits-only
  string is read, in this order, as: a national number of the default country when it starts
  with that country's trunk prefix ('0'; '8' for RU/KZ/LT, '80' for BY, '06' for HU; none for
  IT/SM/VA/CI/GA/CG/BJ, whose numbers keep their 0); a US/Canada 10-digit number with a NANP
  default; an 11-digit '1[3-9]…' mobile with default CN; otherwise a complete international
  number if it is plausible (known calling code, national-number length for that code); else a
  national number of the default country without trunk prefix. Without a default, a plausible
  complete number is accepted unless it has 10 digits shaped like a US/Canada number (that is
  most often a US number missing its country code: dropped with "no country calling code").
  Results are checked for E.164 (8-15 digits) and a per-code national length. Inherent
  ambiguity: an already-normalised foreign number that also looks like the default country's
  national form (10 digits with a NANP default or none, '1[3-9]' + 9 digits with CN, '8' + 10
  digits with RU/KZ/LT) is re-read as national; pass such numbers with '+'.
* fn, ln: NFKC + lowercase, drop punctuation, symbols, separators and control characters
  (Unicode P*, S*, Z*, C*); letters of any script, marks and digits stay; needs a letter.
* ct: NFKC + lowercase, keep letters and combining marks only ("New York" → "newyork").
* st: US/Canadian names and "US-CA" forms map to the 2-letter code; otherwise like a name
  (letters, marks, digits) — so 2-letter codes are simply lowercased.
* zp: NFKC + lowercase, whitespace removed; a US ZIP(+4) (``^\\d{5}(-?\\d{4})?$``) keeps its first
  5 digits; otherwise the part before the first '-' (as Meta's SDK and param builder do) is kept
  whole, so UK "M1 1AE" → "m11ae". Must be 2-10 ASCII letters/digits.
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

__all__ = [
    "FIELDS",
    "RULESETS",
    "Dropped",
    "check",
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
# Countries: ISO 3166-1 alpha-2, alpha-3, ITU calling code, English name; aliases after ';'.
# Territories sharing a calling code list the shared code (NANP members are all "1").

_COUNTRY_TABLE: Final = """
AD AND 376 Andorra
AE ARE 971 United Arab Emirates;UAE;Emirates
AF AFG 93 Afghanistan
AG ATG 1 Antigua and Barbuda;Antigua
AI AIA 1 Anguilla
AL ALB 355 Albania
AM ARM 374 Armenia
AO AGO 244 Angola
AQ ATA 672 Antarctica
AR ARG 54 Argentina
AS ASM 1 American Samoa
AT AUT 43 Austria
AU AUS 61 Australia
AW ABW 297 Aruba
AX ALA 358 Aland Islands;Aland
AZ AZE 994 Azerbaijan
BA BIH 387 Bosnia and Herzegovina;Bosnia
BB BRB 1 Barbados
BD BGD 880 Bangladesh
BE BEL 32 Belgium
BF BFA 226 Burkina Faso
BG BGR 359 Bulgaria
BH BHR 973 Bahrain
BI BDI 257 Burundi
BJ BEN 229 Benin
BL BLM 590 Saint Barthelemy;St Barthelemy;St Barts
BM BMU 1 Bermuda
BN BRN 673 Brunei;Brunei Darussalam
BO BOL 591 Bolivia;Plurinational State of Bolivia
BQ BES 599 Bonaire, Sint Eustatius and Saba;Caribbean Netherlands;Bonaire
BR BRA 55 Brazil;Brasil
BS BHS 1 Bahamas;The Bahamas
BT BTN 975 Bhutan
BV BVT 47 Bouvet Island
BW BWA 267 Botswana
BY BLR 375 Belarus
BZ BLZ 501 Belize
CA CAN 1 Canada
CC CCK 61 Cocos (Keeling) Islands;Cocos Islands
CD COD 243 Democratic Republic of the Congo;Congo (Dem. Rep.);DR Congo;Congo-Kinshasa;DRC
CF CAF 236 Central African Republic
CG COG 242 Congo;Republic of the Congo;Congo-Brazzaville
CH CHE 41 Switzerland;Schweiz;Suisse
CI CIV 225 Cote d'Ivoire;Ivory Coast
CK COK 682 Cook Islands
CL CHL 56 Chile
CM CMR 237 Cameroon
CN CHN 86 China;People's Republic of China;PRC
CO COL 57 Colombia
CR CRI 506 Costa Rica
CU CUB 53 Cuba
CV CPV 238 Cabo Verde;Cape Verde
CW CUW 599 Curacao
CX CXR 61 Christmas Island
CY CYP 357 Cyprus
CZ CZE 420 Czechia;Czech Republic
DE DEU 49 Germany;Deutschland
DJ DJI 253 Djibouti
DK DNK 45 Denmark;Danmark
DM DMA 1 Dominica
DO DOM 1 Dominican Republic
DZ DZA 213 Algeria
EC ECU 593 Ecuador
EE EST 372 Estonia
EG EGY 20 Egypt
EH ESH 212 Western Sahara
ER ERI 291 Eritrea
ES ESP 34 Spain;Espana
ET ETH 251 Ethiopia
FI FIN 358 Finland;Suomi
FJ FJI 679 Fiji
FK FLK 500 Falkland Islands;Falklands;Falkland Islands (Malvinas)
FM FSM 691 Micronesia;Federated States of Micronesia
FO FRO 298 Faroe Islands;Faroes
FR FRA 33 France
GA GAB 241 Gabon
GB GBR 44 United Kingdom;UK;U.K.;Great Britain;Britain;England;Scotland;Wales;Northern Ireland
GD GRD 1 Grenada
GE GEO 995 Georgia
GF GUF 594 French Guiana
GG GGY 44 Guernsey
GH GHA 233 Ghana
GI GIB 350 Gibraltar
GL GRL 299 Greenland
GM GMB 220 Gambia;The Gambia
GN GIN 224 Guinea
GP GLP 590 Guadeloupe
GQ GNQ 240 Equatorial Guinea
GR GRC 30 Greece;Hellas
GS SGS 500 South Georgia and the South Sandwich Islands;South Georgia
GT GTM 502 Guatemala
GU GUM 1 Guam
GW GNB 245 Guinea-Bissau
GY GUY 592 Guyana
HK HKG 852 Hong Kong
HM HMD 672 Heard Island and McDonald Islands
HN HND 504 Honduras
HR HRV 385 Croatia;Hrvatska
HT HTI 509 Haiti
HU HUN 36 Hungary
ID IDN 62 Indonesia
IE IRL 353 Ireland;Republic of Ireland;Eire
IL ISR 972 Israel
IM IMN 44 Isle of Man
IN IND 91 India
IO IOT 246 British Indian Ocean Territory
IQ IRQ 964 Iraq
IR IRN 98 Iran;Islamic Republic of Iran
IS ISL 354 Iceland
IT ITA 39 Italy;Italia
JE JEY 44 Jersey
JM JAM 1 Jamaica
JO JOR 962 Jordan
JP JPN 81 Japan
KE KEN 254 Kenya
KG KGZ 996 Kyrgyzstan
KH KHM 855 Cambodia
KI KIR 686 Kiribati
KM COM 269 Comoros
KN KNA 1 Saint Kitts and Nevis;St Kitts and Nevis
KP PRK 850 North Korea;Democratic People's Republic of Korea;DPRK
KR KOR 82 South Korea;Korea;Republic of Korea;Korea, Republic of
KW KWT 965 Kuwait
KY CYM 1 Cayman Islands
KZ KAZ 7 Kazakhstan
LA LAO 856 Laos;Lao People's Democratic Republic
LB LBN 961 Lebanon
LC LCA 1 Saint Lucia;St Lucia
LI LIE 423 Liechtenstein
LK LKA 94 Sri Lanka
LR LBR 231 Liberia
LS LSO 266 Lesotho
LT LTU 370 Lithuania
LU LUX 352 Luxembourg
LV LVA 371 Latvia
LY LBY 218 Libya
MA MAR 212 Morocco
MC MCO 377 Monaco
MD MDA 373 Moldova;Republic of Moldova
ME MNE 382 Montenegro
MF MAF 590 Saint Martin;St Martin;Saint Martin (French part)
MG MDG 261 Madagascar
MH MHL 692 Marshall Islands
MK MKD 389 North Macedonia;Macedonia
ML MLI 223 Mali
MM MMR 95 Myanmar;Burma
MN MNG 976 Mongolia
MO MAC 853 Macao;Macau
MP MNP 1 Northern Mariana Islands
MQ MTQ 596 Martinique
MR MRT 222 Mauritania
MS MSR 1 Montserrat
MT MLT 356 Malta
MU MUS 230 Mauritius
MV MDV 960 Maldives
MW MWI 265 Malawi
MX MEX 52 Mexico
MY MYS 60 Malaysia
MZ MOZ 258 Mozambique
NA NAM 264 Namibia
NC NCL 687 New Caledonia
NE NER 227 Niger
NF NFK 672 Norfolk Island
NG NGA 234 Nigeria
NI NIC 505 Nicaragua
NL NLD 31 Netherlands;The Netherlands;Holland;Nederland
NO NOR 47 Norway;Norge
NP NPL 977 Nepal
NR NRU 674 Nauru
NU NIU 683 Niue
NZ NZL 64 New Zealand
OM OMN 968 Oman
PA PAN 507 Panama
PE PER 51 Peru
PF PYF 689 French Polynesia
PG PNG 675 Papua New Guinea
PH PHL 63 Philippines
PK PAK 92 Pakistan
PL POL 48 Poland;Polska
PM SPM 508 Saint Pierre and Miquelon
PN PCN 64 Pitcairn;Pitcairn Islands
PR PRI 1 Puerto Rico
PS PSE 970 Palestine;State of Palestine
PT PRT 351 Portugal
PW PLW 680 Palau
PY PRY 595 Paraguay
QA QAT 974 Qatar
RE REU 262 Reunion
RO ROU 40 Romania
RS SRB 381 Serbia
RU RUS 7 Russia;Russian Federation
RW RWA 250 Rwanda
SA SAU 966 Saudi Arabia
SB SLB 677 Solomon Islands
SC SYC 248 Seychelles
SD SDN 249 Sudan
SE SWE 46 Sweden;Sverige
SG SGP 65 Singapore
SH SHN 290 Saint Helena;Saint Helena, Ascension and Tristan da Cunha;St Helena
SI SVN 386 Slovenia
SJ SJM 47 Svalbard and Jan Mayen
SK SVK 421 Slovakia
SL SLE 232 Sierra Leone
SM SMR 378 San Marino
SN SEN 221 Senegal
SO SOM 252 Somalia
SR SUR 597 Suriname
SS SSD 211 South Sudan
ST STP 239 Sao Tome and Principe
SV SLV 503 El Salvador
SX SXM 1 Sint Maarten;Sint Maarten (Dutch part)
SY SYR 963 Syria;Syrian Arab Republic
SZ SWZ 268 Eswatini;Swaziland
TC TCA 1 Turks and Caicos Islands
TD TCD 235 Chad
TF ATF 262 French Southern Territories
TG TGO 228 Togo
TH THA 66 Thailand
TJ TJK 992 Tajikistan
TK TKL 690 Tokelau
TL TLS 670 Timor-Leste;East Timor
TM TKM 993 Turkmenistan
TN TUN 216 Tunisia
TO TON 676 Tonga
TR TUR 90 Turkey;Turkiye
TT TTO 1 Trinidad and Tobago;Trinidad
TV TUV 688 Tuvalu
TW TWN 886 Taiwan
TZ TZA 255 Tanzania;United Republic of Tanzania
UA UKR 380 Ukraine
UG UGA 256 Uganda
UM UMI 1 United States Minor Outlying Islands
US USA 1 United States;United States of America;USA;U.S.A.;US;U.S.;America
UY URY 598 Uruguay
UZ UZB 998 Uzbekistan
VA VAT 39 Vatican City;Holy See;Vatican
VC VCT 1 Saint Vincent and the Grenadines;St Vincent and the Grenadines;Saint Vincent
VE VEN 58 Venezuela
VG VGB 1 British Virgin Islands;Virgin Islands (British)
VI VIR 1 United States Virgin Islands;US Virgin Islands;Virgin Islands (U.S.)
VN VNM 84 Vietnam;Viet Nam
VU VUT 678 Vanuatu
WF WLF 681 Wallis and Futuna
WS WSM 685 Samoa
YE YEM 967 Yemen
YT MYT 262 Mayotte
ZA ZAF 27 South Africa
ZM ZMB 260 Zambia
ZW ZWE 263 Zimbabwe
"""

# National significant number length (min, max) per calling code: the digits after the code.
# Kept a little generous: it separates complete numbers from national ones, it does not validate.
_NSN_TABLE: Final = """
1:10 7:10 20:8-10 27:9 30:10 31:9-10 32:8-9 33:9 34:9 36:8-9 39:6-11 40:9 41:9 43:4-13 44:9-10
45:8 46:7-10 47:5-8 48:9 49:5-13 51:8-9 52:10-11 53:6-8 54:10-11 55:10-11 56:9-11 57:8-10 58:10
60:8-10 61:9 62:7-12 63:8-10 64:8-10 65:8 66:8-9 81:9-10 82:8-10 84:9-10 86:9-12 90:10 91:10
92:9-10 93:9 94:9 95:7-10 98:10 211:9 212:9 213:8-9 216:8 218:8-9 220:7 221:9 222:8 223:8
224:8-9 225:8-10 226:8 227:8 228:8 229:8-10 230:7-8 231:7-9 232:8 233:9 234:8-10 235:8 236:8
237:8-9 238:7 239:7 240:9 241:7-9 242:9 243:7-9 244:9 245:7-9 246:7 248:7 249:9 250:9 251:9
252:7-9 253:8 254:9-10 255:9 256:9 257:8 258:8-9 260:9 261:9 262:9 263:9-10 264:7-10 265:7-9
266:8 267:7-8 268:8 269:7 290:4-5 291:7 297:7 298:6 299:6 350:8 351:9 352:4-11 353:7-9 354:7-9
355:8-9 356:8 357:8 358:5-12 359:7-9 370:8 371:8 372:7-8 373:8 374:8 375:9-10 376:6-9 377:8-9
378:6-10 380:9 381:6-12 382:8 385:8-9 386:8 387:8-9 389:8 420:9 421:9 423:7-9 500:5 501:7 502:8
503:8 504:8 505:8 506:8 507:7-8 508:6 509:8 590:9 591:8 592:7 593:8-9 594:9 595:6-9 596:9
597:6-7 598:8 599:7-8 670:7-8 672:5-6 673:7 674:7 675:7-8 676:5-7 677:5-7 678:5-7 679:7 680:7
681:6 682:5 683:4-7 685:5-7 686:5-8 687:6 688:5-6 689:6-8 690:4-7 691:7 692:7 850:8-10 852:8
853:8 855:8-9 856:8-10 880:8-10 886:8-9 960:7 961:7-8 962:8-9 963:8-9 964:8-10 965:8 966:8-9
967:7-9 968:8 970:8-9 971:8-9 972:8-9 973:8 974:8 975:7-8 976:8 977:8-10 992:9 993:8 994:9
995:9 996:9 998:9
"""


def _parse_nsn_lengths() -> dict[str, tuple[int, int]]:
    lengths: dict[str, tuple[int, int]] = {}
    for item in _NSN_TABLE.split():
        code, _, span = item.partition(":")
        low, _, high = span.partition("-")
        lengths[code] = (int(low), int(high or low))
    return lengths


_NSN_LENGTHS: Final = _parse_nsn_lengths()

# Calling codes whose national significant numbers may start with 0 (Italy's area codes, San
# Marino, and the West African plans that moved the 0 into the number).
_NSN_MAY_START_WITH_ZERO: Final = frozenset({"39", "378", "225", "229", "241", "242"})

# National trunk prefixes that differ from the usual "0"; () = none, the 0 belongs to the number.
_TRUNK_PREFIXES: Final[Mapping[str, tuple[str, ...]]] = {
    "it": (),
    "sm": (),
    "va": (),
    "ci": (),
    "ga": (),
    "cg": (),
    "bj": (),
    "ru": ("8",),
    "kz": ("8",),
    "by": ("80",),
    "lt": ("8", "0"),
    "hu": ("06",),
}

_E164_MIN: Final = 8
_E164_MAX: Final = 15


def _fold_key(text: str) -> str:
    """Return a lookup key: lowercase ASCII letters only, accents removed."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if "a" <= c <= "z")


def _parse_countries() -> tuple[
    dict[str, str], dict[str, str], dict[str, str], dict[str, str], frozenset[str]
]:
    alpha2: dict[str, str] = {}
    alpha3: dict[str, str] = {}
    calling: dict[str, str] = {}
    names: dict[str, str] = {}
    nanp: set[str] = set()
    for line in _COUNTRY_TABLE.strip().splitlines():
        a2, a3, code, rest = line.split(" ", 3)
        a2, a3 = a2.lower(), a3.lower()
        alpha2[a2] = a2
        alpha3[a3] = a2
        calling[a2] = code
        if code == "1":
            nanp.add(a2)
        for name in rest.split(";"):
            names.setdefault(_fold_key(name), a2)
    return alpha2, alpha3, calling, names, frozenset(nanp)


_ALPHA2, _ALPHA3, _CALLING_CODE, _COUNTRY_NAMES, _NANP = _parse_countries()
_KNOWN_CALLING_CODES: Final = frozenset(_CALLING_CODE.values())


def _country(value: str) -> str | None:
    """Return the lowercase alpha-2 code for a code, alpha-3 code or English name."""
    compact = "".join(c for c in unicodedata.normalize("NFKC", value).lower() if c.isalnum())
    if len(compact) == 2 and compact in _ALPHA2:
        return compact
    if len(compact) == 3 and compact in _ALPHA3:
        return _ALPHA3[compact]
    return _COUNTRY_NAMES.get(_fold_key(value))


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
    if isinstance(text, Dropped):
        return text
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
    if isinstance(text, Dropped):
        return text
    local, domain = text.split("@")
    local = _NOT_ALNUM_RE.sub("", local.split("+", 1)[0])
    if not local:
        return _NOT_EMAIL
    return f"{local}@{domain}"


# ---------------------------------------------------------------------------------------------
# ph

_TEL_SCHEME_RE: Final = re.compile(r"^\s*tel:", re.IGNORECASE)
_EXTENSION_RE: Final = re.compile(r"(?:[;#,]|ext|x).*$", re.IGNORECASE)
_PHONE_SEPARATORS: Final = frozenset(" -./()\u00a0")
_ASCII_SEPARATORS_RE: Final = re.compile(r"[\s\-./()]+")
"""The ASCII fast path of the separator filter (whitespace, dashes, dots, slashes, parens)."""
_PHONE_SHAPE_RE: Final = re.compile(r"\+?[0-9]+")
_PLAIN_PHONE_RE: Final = re.compile(r"\+?[0-9 \-./()]+")
"""ASCII digits, an optional leading '+' and the common separators: nothing for NFKC, digit
mapping, "tel:" or extension removal to change; only the separators go (see `_phone_clean`)."""
_NANP_NSN_RE: Final = re.compile(r"[2-9][0-9]{2}[2-9][0-9]{6}")
_CN_MOBILE_RE: Final = re.compile(r"1[3-9][0-9]{9}")
_NO_DIGITS: Final = Dropped("not a phone number: no digits")
_NO_CALLING_CODE: Final = Dropped(
    "no country calling code: set a default country or send the number with '+'"
)


def _calling_code_of(digits: str) -> str | None:
    """Return the calling code `digits` starts with (codes are prefix-free), if any."""
    for size in (1, 2, 3):
        if digits[:size] in _KNOWN_CALLING_CODES:
            return digits[:size]
    return None


def _e164_problem(digits: str) -> str | None:
    """Return why `digits` is not a plausible complete E.164 number, or None if it is."""
    if not _E164_MIN <= len(digits) <= _E164_MAX:
        return f"not a phone number: {len(digits)} digits, E.164 needs 8-15"
    code = _calling_code_of(digits)
    if code is None:
        return "not a phone number: unknown country calling code"
    national = digits[len(code) :]
    low, high = _NSN_LENGTHS[code]
    if not low <= len(national) <= high:
        return f"not a phone number: wrong length for +{code}"
    if national.startswith("0") and code not in _NSN_MAY_START_WITH_ZERO:
        return f"not a phone number: +{code} numbers do not continue with 0"
    if code == "1" and not _NANP_NSN_RE.fullmatch(national):
        return "not a phone number: not a valid US/Canada (NANP) number"
    if code == "7" and national[0] in "0125":
        return "not a phone number: not a valid +7 number"
    return None


def _as_e164(digits: str) -> str | Dropped:
    problem = _e164_problem(digits)
    return digits if problem is None else Dropped(problem)


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
        text = "".join(
            c
            for c in text
            if c not in _PHONE_SEPARATORS and not c.isspace() and unicodedata.category(c) != "Pd"
        )
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
    if plus:
        return _as_e164(digits)
    if digits.startswith("00"):
        return _as_e164(digits[2:])
    if default in _NANP and digits.startswith("011"):
        return _as_e164(digits[3:])
    if default is None:
        if len(digits) == 10 and _NANP_NSN_RE.fullmatch(digits):
            return _NO_CALLING_CODE
        if _e164_problem(digits) is None:
            return digits
        return _NO_CALLING_CODE
    code = _CALLING_CODE[default]
    national_problem: str | None = None
    for trunk in _TRUNK_PREFIXES.get(default, ("0",)):
        if digits.startswith(trunk):
            national = code + digits[len(trunk) :]
            national_problem = _e164_problem(national)
            if national_problem is None:
                return national
            break
    if default in _NANP and _NANP_NSN_RE.fullmatch(digits):
        return "1" + digits
    if default == "cn" and _CN_MOBILE_RE.fullmatch(digits):
        return "86" + digits
    if _e164_problem(digits) is None:
        return digits
    if national_problem is not None:
        return Dropped(national_problem)
    return _as_e164(code + digits)


def _phone_plus(value: str, default: str | None) -> str | Dropped:
    """E.164 with a leading '+', e.g. "+16505551212" (Google, TikTok, Reddit)."""
    digits = _phone_digits(value, default)
    return digits if isinstance(digits, Dropped) else "+" + digits


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
_ISO_SUBDIVISION_RE: Final = re.compile(r"(?:us|ca)[-_ ]([a-z]{2})")


def _state(value: str, default: str | None) -> str | Dropped:
    """US/CA names → 2-letter code; anything else lowercase without punctuation or spaces."""
    iso = _ISO_SUBDIVISION_RE.fullmatch(value.lower())
    if iso is not None and iso.group(1) in _STATE_CODES:
        return iso.group(1)
    text = _fold(value, _is_word_char)
    if not text:
        return Dropped("no letters or digits in state")
    key = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return _STATE_NAMES.get(key, text)


# ---------------------------------------------------------------------------------------------
# zp

_US_ZIP_RE: Final = re.compile(r"[0-9]{5}(?:-?[0-9]{4})?")
_ZIP_RE: Final = re.compile(r"[a-z0-9]{2,10}")


def _zip(value: str, _default: str | None) -> str | Dropped:
    """Lowercase, no spaces; US ZIP+4 → 5 digits; otherwise the part before '-'."""
    text = "".join(c for c in unicodedata.normalize("NFKC", value).lower() if not c.isspace())
    if _US_ZIP_RE.fullmatch(text):
        return text[:5]
    text = text.split("-", 1)[0]
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
