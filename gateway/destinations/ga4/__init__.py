"""Google Analytics 4: the Measurement Protocol destination (``destination.py``, with the
event-name table, GA4's name and parameter rules and the pure mapping in ``mapping.py``), the
gtag.js ``/g/collect`` hits (``hits.py``) and the ``_ga`` cookie (``clickids.py``). Its emulator
is `gateway.sandbox.ga4`.

Everything the platform owns lives in this package; `PLATFORM` describes it.
"""

from __future__ import annotations

import re
from typing import Final

from gateway.destinations.ga4 import clickids
from gateway.destinations.ga4.destination import GA4, GA4Settings
from gateway.destinations.ga4.hits import read_hits
from gateway.destinations.platform import HitFormat, Platform, Registration

PLATFORM: Final = Platform(
    "ga4",
    # Backend events only: the Measurement Protocol does not deduplicate a server copy of a
    # loader event or pixel hit against the tag's own hit (it counts both).
    destination=Registration(GA4Settings, GA4, GA4.hash_rules, sources=("backend",)),
    hits=HitFormat(
        vendor="google",
        upstream_path="/g/collect",
        methods=("GET", "POST"),
        cookies=frozenset({"_ga"}),
        cookie_pattern=re.compile(r"_ga_[A-Za-z0-9]{1,32}"),
        parse=read_hits,
        # Not "ga4": the Measurement Protocol counts both copies (it does not deduplicate a
        # mirror against the tag's own hit), so a GA4 hit is never mirrored back to GA4.
        mirror_to=frozenset({"google_ads"}),
        digest_rules="google",
    ),
    cookies=clickids.COOKIES,
)
