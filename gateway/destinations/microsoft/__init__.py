"""Microsoft Advertising: the UET Conversions API destination (``destination.py``), msclkid and
the ``_uetmsclkid`` cookie (``clickids.py``).

Everything the platform owns lives in this package; `PLATFORM` describes it.
"""

from __future__ import annotations

from typing import Final

from gateway.destinations.microsoft import clickids
from gateway.destinations.microsoft.destination import Microsoft, MicrosoftSettings
from gateway.destinations.platform import Platform, Registration

PLATFORM: Final = Platform(
    "microsoft",
    destination=Registration(MicrosoftSettings, Microsoft, Microsoft.hash_rules),
    click_ids=clickids.CLICK_IDS,
    cookies=clickids.COOKIES,
    click_window=clickids.CLICK_WINDOW,
)
