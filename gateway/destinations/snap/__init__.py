"""Snapchat: the Conversions API destination (``destination.py``), pixel hits (``hits.py``),
ScCid and the ``_scclid``/``_scid`` cookies (``clickids.py``).

Everything the platform owns lives in this package; `PLATFORM` describes it.
"""

from __future__ import annotations

from typing import Final

from gateway.destinations.platform import HitFormat, Platform, Registration
from gateway.destinations.snap import clickids
from gateway.destinations.snap.destination import Snap, SnapSettings
from gateway.destinations.snap.hits import read_hits

PLATFORM: Final = Platform(
    "snap",
    destination=Registration(SnapSettings, Snap, Snap.hash_rules),
    hits=HitFormat(
        vendor="snap",
        upstream_path="/p",
        methods=("POST",),
        cookies=frozenset({"_scid"}),
        parse=read_hits,
        mirror_to=frozenset({"snap"}),
        digest_rules="snap",
    ),
    click_ids=clickids.CLICK_IDS,
    cookies=clickids.COOKIES,
    click_window=clickids.CLICK_WINDOW,
)
