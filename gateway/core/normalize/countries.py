"""Countries: the ISO 3166-1 table, reading a code or English name, and the country rule."""

from __future__ import annotations

import unicodedata
from typing import Final

from gateway.core.normalize.digests import is_sha256
from gateway.core.normalize.rule import MAX_INPUT, Dropped
from gateway.core.normalize.text import _fold_key

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


def _country_rule(value: str, _default: str | None) -> str | Dropped:
    """ISO 3166-1 alpha-2 lowercase from a code, alpha-3 code or English name."""
    code = _country(value)
    return Dropped("unknown country") if code is None else code
