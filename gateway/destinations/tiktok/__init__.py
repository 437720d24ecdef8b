"""TikTok: the Events API destination (``destination.py``), pixel JSON hits (``hits.py``),
ttclid and the ``ttclid``/``_ttp`` cookies (``clickids.py``).

Everything the platform owns lives in this package; `PLATFORM` describes it.
"""

from __future__ import annotations

from typing import Final

from gateway.destinations.platform import HitFormat, Platform, Registration
from gateway.destinations.tiktok import clickids
from gateway.destinations.tiktok.destination import TikTok, TikTokSettings
from gateway.destinations.tiktok.hits import read_hits

PLATFORM: Final = Platform(
    "tiktok",
    destination=Registration(TikTokSettings, TikTok, TikTok.hash_rules),
    hits=HitFormat(
        vendor="tiktok",
        upstream_path="/api/v2/pixel",
        methods=("POST",),
        cookies=frozenset({"_ttp", "ttclid"}),
        parse=read_hits,
        mirror_to=frozenset({"tiktok"}),
        digest_rules="tiktok",
    ),
    click_ids=clickids.CLICK_IDS,
    cookies=clickids.COOKIES,
    click_window=clickids.CLICK_WINDOW,
)
