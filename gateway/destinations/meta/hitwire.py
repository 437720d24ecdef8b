"""Meta ``/tr`` hits straight to their parts of an Event: the hit mirror's fast lane (pure).

The general road of a mirrored hit is ``parse_meta_tr`` (``meta/hits.py``) → a canonical
event object (a dict) → ``core.eventparse.parse_event``, which checks that dict again and builds
the Event. Here the usual hit (a decoded query, no body) is read once and its fields come out
already in the Event's types, with the very helpers of both stages in the same order: the hit
parser's checks (`clean_text`, `http_url`, `epoch_seconds`, `client_time`, `valid_cookie`,
`_meta_data`) give the value the event object would hold, then ``core.eventfast``'s fast-path
checks (`_text`, `_matching`, `_when_common`, `_data_common`) give the value `parse_event`
would make of it. So the two roads cannot drift apart.

Like ``core.wire``, this decides nothing on its own: `meta_hit` returns None as soon as anything
is unusual (too many or too long parameters, a skipped or unknown kind of hit, a value either
stage would refuse or hand to the precise parser, a Purchase without value or currency) and the
caller then takes the general road, which counts, refuses or explains. A differential test holds
the two roads to the same Event (tests/unit/web/test_hit_fastpath.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, cast

from gateway.core.event import PII_FIELDS, VALUE_EVENTS, Data, Source
from gateway.core.eventbuild import _new_data
from gateway.core.eventfast import (
    _OTHER,
    _WEBSITE,
    _data_common,
    _matching,
    _text,
    _Unusual,
    _when_common,
)
from gateway.core.eventschema import _FB_COOKIE_RE, _URL_RE, MAX_ID, MAX_URL, ParseLimits
from gateway.core.hits import (
    MAX_PARAMS,
    MAX_PII_LEN,
    MAX_VALUE,
    NAME_RE,
    clean_text,
    client_time,
    epoch_seconds,
    http_url,
    valid_cookie,
)
from gateway.destinations.meta.clickids import parse_fbc, parse_fbp
from gateway.destinations.meta.hits import (
    _BRACKET_RE,
    _META_MODES,
    _META_SKIP_EVENTS,
    _UD_FIELDS,
    _meta_data,
)

__all__ = ["MetaHit", "check_url", "meta_hit"]

_MAX_KEY: Final = 256
_PII_ORDER: Final = tuple(PII_FIELDS.items())
_NO_PII: Final[Mapping[str, tuple[str, ...]]] = {}


class MetaHit:
    """The parts of a Meta ``/tr`` hit's Event, each already as `parse_event` makes it."""

    __slots__ = (
        "data",
        "event_id",
        "fbc",
        "fbp",
        "name",
        "pii",
        "referrer",
        "source",
        "time",
        "url",
    )

    def __init__(
        self,
        name: str,
        event_id: str | None,
        time: int,
        source: Source,
        url: str | None,
        referrer: str | None,
        fbp: str | None,
        fbc: str | None,
        pii: Mapping[str, tuple[str, ...]],
        data: Data,
    ) -> None:
        self.name = name
        self.event_id = event_id
        """None: the caller derives it (order id) or makes one, as the pipeline does."""
        self.time = time
        self.source = source
        self.url = url
        """The hit's own page (``dl``); None when it has none (the caller may use the Referer)."""
        self.referrer = referrer
        self.fbp = fbp
        self.fbc = fbc
        self.pii = pii
        """Raw ``ud[…]`` values by identifier key, in `PII_FIELDS` order (to hash)."""
        self.data = data


def meta_hit(
    query: Sequence[tuple[str, str]], *, now: float, limits: ParseLimits
) -> MetaHit | None:
    """Return the Event parts of a bodiless Meta ``/tr`` hit, or None: take the general road.

    `query` is the decoded query (pairs of strings); `now` and `limits` are what the pipeline
    would parse the hit's event object with. The Event the caller builds from the result (with
    the source ``website`` when it sets a Referer URL through `check_url`) is the one
    ``parse_event(parse_meta_tr(query).event, …)`` returns; a hit that would give no event or a
    refused one gives None.
    """
    try:
        return _meta_hit(query, now, limits)
    except _Unusual:
        return None


def check_url(raw: str) -> str:
    """The page URL (a Referer) as `parse_event` keeps it; raises `_Unusual` if it would not."""
    url = _matching(raw, MAX_URL, _URL_RE.match)
    if url is None:
        raise _Unusual
    return url


def _page_url(raw: str) -> str | None:
    """``_matching(http_url(raw), MAX_URL, _URL_RE.match)`` (both stages), memoised."""
    found = _PAGE_URLS.get(raw, _UNSEEN)
    if found is _UNSEEN:
        try:
            url = http_url(raw)
            found = _matching(url, MAX_URL, _URL_RE.match) if url is not None else None
        except _Unusual:
            found = _REFUSED
        if len(raw) <= _MEMO_TEXT_MAX:
            if len(_PAGE_URLS) >= _MEMO_MAX:
                _PAGE_URLS.clear()
            _PAGE_URLS[raw] = found
    if found is _REFUSED:
        raise _Unusual
    return cast("str | None", found)


_PAGE_URLS: dict[str, object] = {}
_UNSEEN: Final = object()
_REFUSED: Final = object()
_MEMO_MAX: Final = 4096
_MEMO_TEXT_MAX: Final = 1024


def _meta_hit(query: Sequence[tuple[str, str]], now: float, limits: ParseLimits) -> MetaHit | None:
    if len(query) > MAX_PARAMS:
        return None  # the general road reads the first MAX_PARAMS only
    params: dict[str, str] = {}
    brackets = False
    for key, value in query:
        if len(value) > MAX_VALUE or len(key) > _MAX_KEY:
            return None  # skipped by the general road (a later duplicate could then count)
        if key not in params:
            params[key] = value
            if "[" in key:
                brackets = True
    name = params.get("ev")
    if name is None or not NAME_RE.fullmatch(name) or name in _META_SKIP_EVENTS:
        return None
    if params.get("es") == "automatic":
        return None
    mode = params.get("rqm")
    if mode is not None and mode.strip().upper() not in _META_MODES:
        return None
    cd: dict[str, object] = {}
    pii: Mapping[str, tuple[str, ...]] = _NO_PII
    if brackets:
        ud: dict[str, str] = {}
        for key, value in params.items():
            if "[" in key and (m := _BRACKET_RE.fullmatch(key)) is not None:
                if m[1] == "cd":
                    cd[m[2]] = value
                else:
                    canonical = _UD_FIELDS.get(m[2])
                    if canonical is not None and (text := clean_text(value, MAX_PII_LEN)):
                        ud[canonical] = text
        if ud:  # parse_event keeps them in PII_FIELDS order
            pii = {key: (ud[name],) for name, key in _PII_ORDER if name in ud}
    fbp = fbc = None
    if "fbp" in params and (fbp := valid_cookie(params["fbp"], parse_fbp)) is not None:
        fbp = _matching(fbp, 200, _FB_COOKIE_RE.fullmatch)
    if "fbc" in params and (fbc := valid_cookie(params["fbc"], parse_fbc)) is not None:
        fbc = _matching(fbc, 500, _FB_COOKIE_RE.fullmatch)
    data = _data_common(_meta_data(cd)) if cd else _new_data()
    if name in VALUE_EVENTS and (data.value is None or data.currency is None):
        return None  # refused by the pipeline: the general road counts it
    eid = params.get("eid")
    event_id = _text(clean_text(eid, MAX_ID), MAX_ID) if eid is not None else None
    dl = params.get("dl")
    url = _page_url(dl) if dl is not None else None
    rl = params.get("rl")
    referrer = _page_url(rl) if rl is not None else None
    when = client_time(epoch_seconds(params.get("ts")), now)
    source = _WEBSITE if url else _OTHER
    # (the window is the same for website and other events: a Referer URL changes nothing)
    time = int(_when_common(when, now, source, limits))
    return MetaHit(name, event_id, time, source, url, referrer, fbp, fbc, pii, data)
