"""The script proxy's route table: public aliases → vendor upstream paths, and how a request's
path and query are read against it (gateway/web/proxy.py serves them).

Only the fixed route table below is forwarded. The upstream URL is always
`<configured vendor base> + <path from the table> [+ allow-listed query params]`; nothing of the
request's URL, Host or scheme ever reaches it (shared browser.md §4.1). Aliases are short and
avoid the words filter lists match on (§5.1: `fbevents`, `gtag`, `gtm`, `pixel`, `track`…):

    <prefix>m/<locale>/e.js     meta       /<locale>/fbevents.js          (known locales only)
    <prefix>m/c/<pixel_id>      meta       /signals/config/<pixel_id>     v, r
    <prefix>t/e.js              tiktok     /i18n/pixel/events.js          sdkid (required), lib
    <prefix>g/js                google     /gtag/js                       id (required), l
    <prefix>g/m.js              google     /gtm.js                        id (required), l
    <prefix>s/e.js              snap       /scevent.min.js
    <prefix>i/c.js              pinterest  /ct/core.js
    <prefix>b/u.js              microsoft  /bat.js
    <prefix>r/e.js              reddit     /ads/pixel.js

A request path with anything but `[A-Za-z0-9_.-]` segments (`..`, `//`, `%`-escapes such as
`%2f`/`%5c`, a backslash, a scheme) or an allow-listed parameter that is repeated or malformed is
refused with 400; a well-formed path not in the table (or a vendor the site did not enable) is 404.
Other query parameters (cache busters…) are dropped, so they never split the cache.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web
from multidict import MultiMapping

_SEGMENT: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

_LOCALES: Final = """
    af_ZA ar_AR az_AZ be_BY bg_BG bn_IN bs_BA ca_ES cs_CZ cy_GB da_DK de_DE el_GR en_GB en_US
    eo_EO es_ES es_LA et_EE eu_ES fa_IR fi_FI fr_CA fr_FR ga_IE gl_ES he_IL hi_IN hr_HR hu_HU hy_AM
    id_ID is_IS it_IT ja_JP ka_GE km_KH ko_KR lt_LT lv_LV mk_MK ml_IN ms_MY nb_NO ne_NP nl_NL nn_NO
    pa_IN pl_PL pt_BR pt_PT ro_RO ru_RU sk_SK sl_SI sq_AL sr_RS sv_SE sw_KE ta_IN te_IN th_TH tl_PH
    tr_TR uk_UA ur_PK vi_VN zh_CN zh_HK zh_TW"""
META_LOCALES: Final = frozenset(_LOCALES.split())
"""Locales of `connect.facebook.net/<locale>/fbevents.js` the proxy forwards."""

_PIXEL_ID: Final = re.compile(r"[0-9]{1,20}")
SLOTS: Final[Mapping[str, Callable[[str], bool]]] = {
    "locale": lambda s: s in META_LOCALES,
    "pixel_id": lambda s: _PIXEL_ID.fullmatch(s) is not None,
}
"""Path segments taken from the request, each checked before it is put in an upstream path."""


@dataclass(frozen=True, slots=True)
class Param:
    """An allow-listed query parameter passed on to the upstream."""

    pattern: re.Pattern[str]
    required: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    """One public alias (segments under the prefix; `{slot}` segments) → one upstream path."""

    vendor: str
    alias: tuple[str, ...]
    upstream: str
    params: Mapping[str, Param] = field(default_factory=dict)

    def match(self, segments: Sequence[str]) -> dict[str, str] | None:
        """Return the slot values when `segments` is this alias, else None."""
        if len(segments) != len(self.alias):
            return None
        slots: dict[str, str] = {}
        for want, got in zip(self.alias, segments, strict=True):
            if want.startswith("{"):
                name = want[1:-1]
                if not SLOTS[name](got):
                    return None
                slots[name] = got
            elif want != got:
                return None
        return slots


_GOOGLE_ID = Param(re.compile(r"(G|GT|AW|DC|MC|UA)-[A-Z0-9-]{2,24}"), required=True)
_GTM_ID = Param(re.compile(r"GTM-[A-Z0-9]{4,12}"), required=True)
_LAYER = Param(_NAME)

ROUTES: Final[tuple[Route, ...]] = (
    Route("meta", ("m", "{locale}", "e.js"), "/{locale}/fbevents.js"),
    Route(
        "meta",
        ("m", "c", "{pixel_id}"),
        "/signals/config/{pixel_id}",
        {"v": Param(re.compile(r"[0-9]{1,3}(\.[0-9]{1,4}){1,3}")), "r": Param(_NAME)},
    ),
    Route(
        "tiktok",
        ("t", "e.js"),
        "/i18n/pixel/events.js",
        {"sdkid": Param(re.compile(r"[A-Z0-9]{8,32}"), required=True), "lib": Param(_NAME)},
    ),
    Route("google", ("g", "js"), "/gtag/js", {"id": _GOOGLE_ID, "l": _LAYER}),
    Route("google", ("g", "m.js"), "/gtm.js", {"id": _GTM_ID, "l": _LAYER}),
    Route("snap", ("s", "e.js"), "/scevent.min.js"),
    Route("pinterest", ("i", "c.js"), "/ct/core.js"),
    Route("microsoft", ("b", "u.js"), "/bat.js"),
    Route("reddit", ("r", "e.js"), "/ads/pixel.js"),
)


def path_segments(raw_path: str, prefix: str) -> list[str] | None:
    """Split the still-encoded path under `prefix`; None when any segment is not plain."""
    if not raw_path.startswith(prefix):
        return None  # an absolute-form target, or an escaped prefix
    tail = raw_path[len(prefix) :]
    if not tail:
        return []
    segments = tail.split("/")
    if not all(_SEGMENT.fullmatch(s) for s in segments):
        return None
    return segments


def find_route(segments: Sequence[str]) -> tuple[Route, dict[str, str]] | None:
    """Return the first route whose alias `segments` is, with its slot values, else None."""
    for route in ROUTES:
        slots = route.match(segments)
        if slots is not None:
            return route, slots
    return None


def route_query(request: web.Request, route: Route) -> dict[str, str] | None:
    """Return the allow-listed parameters in table order; None when one is bad or repeated."""
    return query_of(request.query, route)


def query_of(params: MultiMapping[str], route: Route) -> dict[str, str] | None:
    """`route_query` of already parsed query parameters."""
    out: dict[str, str] = {}
    for name, param in route.params.items():
        values = params.getall(name, [])
        if len(values) > 1 or (param.required and not values):
            return None
        if values:
            if not param.pattern.fullmatch(values[0]):
                return None
            out[name] = values[0]
    return out
