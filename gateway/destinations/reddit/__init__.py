"""Reddit: the Conversions API destination (``destination.py``), the rdt_cid click id and the
``_rdt_uuid`` cookie, read only (``clickids.py``).

Everything the platform owns lives in this package; `PLATFORM` describes it.
"""

from __future__ import annotations

from typing import Final

from gateway.destinations.platform import Platform, Registration
from gateway.destinations.reddit import clickids
from gateway.destinations.reddit.destination import Reddit, RedditSettings

PLATFORM: Final = Platform(
    "reddit",
    destination=Registration(RedditSettings, Reddit, Reddit.hash_rules),
    click_ids=clickids.CLICK_IDS,
    cookies=clickids.COOKIES,
    click_window=clickids.CLICK_WINDOW,
)
