"""LinkedIn: the Conversions API destination (``destination.py``) and the li_fat_id click id
(``clickids.py``).

Everything the platform owns lives in this package; `PLATFORM` describes it.
"""

from __future__ import annotations

from typing import Final

from gateway.destinations.linkedin import clickids
from gateway.destinations.linkedin.destination import LinkedIn, LinkedInSettings
from gateway.destinations.platform import Platform, Registration

PLATFORM: Final = Platform(
    "linkedin",
    destination=Registration(LinkedInSettings, LinkedIn, LinkedIn.hash_rules),
    click_ids=clickids.CLICK_IDS,
    click_window=clickids.CLICK_WINDOW,
)
