"""X (formerly Twitter): the Conversion API destination (``destination.py``: settings, the
event-id table, the pure mapping Event → conversion, request building and answer
classification; ``signing.py``: the OAuth 1.0a HMAC-SHA1 `Authorization` header, signed by
oauthlib with the nonce and timestamp passed in) and the twclid click id (``clickids.py``). Its
emulator is `gateway.sandbox.x`.

Everything the platform owns lives in this package; `PLATFORM` describes it.
"""

from __future__ import annotations

from typing import Final

from gateway.destinations.platform import Platform, Registration
from gateway.destinations.x import clickids
from gateway.destinations.x.destination import X, XSettings

PLATFORM: Final = Platform(
    "x",
    destination=Registration(XSettings, X, X.hash_rules),
    click_ids=clickids.CLICK_IDS,
    click_window=clickids.CLICK_WINDOW,
)
