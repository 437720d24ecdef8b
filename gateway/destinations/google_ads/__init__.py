"""Google Ads: the click-conversion upload destination (``destination.py``: settings, the event →
ClickConversion mapping and the request; ``answers.py``: request errors and per-row partial
failures read into outcomes; the OAuth2 refresh-token flow is the shared
`gateway.destinations.tokens`), gclid, gbraid, wbraid and the ``_gcl_aw`` cookie
(``clickids.py``). Its emulator is `gateway.sandbox.google_ads`.

Everything the platform owns lives in this package; `PLATFORM` describes it.
"""

from __future__ import annotations

from typing import Final

from gateway.destinations.google_ads import clickids
from gateway.destinations.google_ads.destination import GoogleAds, GoogleAdsSettings
from gateway.destinations.platform import Platform, Registration

PLATFORM: Final = Platform(
    "google_ads",
    destination=Registration(GoogleAdsSettings, GoogleAds, GoogleAds.hash_rules),
    click_ids=clickids.CLICK_IDS,
    cookies=clickids.COOKIES,
    click_window=clickids.CLICK_WINDOW,
)
