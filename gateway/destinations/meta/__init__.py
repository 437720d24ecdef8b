"""Meta (Facebook, Instagram): the Conversions API destination.

Everything the platform owns lives in this package; `PLATFORM` describes it.
"""

from __future__ import annotations

from typing import Final

from gateway.destinations.meta.destination import Meta, MetaSettings
from gateway.destinations.platform import Platform, Registration

PLATFORM: Final = Platform(
    "meta",
    destination=Registration(MetaSettings, Meta, Meta.hash_rules),
)
