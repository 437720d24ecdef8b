"""Reddit's click id ``rdt_cid`` (pure).

platforms.md §10.2. Captured from the landing URL only: the ``_rdt_cid`` cookie is
never written (its format is undocumented or unverified, and we never invent values for
formats we do not control, browser.md §2.2). The click window is not documented for us: the
conservative default.
"""

from __future__ import annotations

import re
from typing import Final

from gateway.core.clickids import SAFE_ID, ClickIdParam, CookieKind, CookieSpec, matching
from gateway.core.crossdevice import DEFAULT_WINDOW_DAYS, ClickWindow

__all__ = ["CLICK_IDS", "CLICK_WINDOW", "COOKIES"]

CLICK_IDS: Final = (ClickIdParam("rdt_cid", SAFE_ID),)
CLICK_WINDOW: Final = ClickWindow("reddit", ("rdt_cid",), DEFAULT_WINDOW_DAYS)

# platforms.md §7, §10.2: `user.uuid` is the plain value of the `_rdt_uuid` cookie, documented
# as `<ms timestamp>.<uuid>`. Read into click_ids["rdt_uuid"], never written (the pixel's).
_RDT_UUID_RE: Final = re.compile(
    r"\d{10,16}\.[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
)
_valid_rdt_uuid: Final = matching(_RDT_UUID_RE)
COOKIES: Final = (
    CookieSpec(
        "_rdt_uuid", CookieKind.READ, 0, _valid_rdt_uuid, reads_as="rdt_uuid", read=_valid_rdt_uuid
    ),
)
