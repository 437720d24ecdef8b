"""GA4's client-id cookie ``_ga`` (pure).

platforms.md §4.3 and §10.2: ``_ga`` is ``GA1.<domain levels>.<random>.<unix seconds>`` and the
Measurement Protocol's ``client_id`` is ``<random>.<seconds>`` (the cookie minus its ``GA1.<n>.``
prefix). It is a VISITOR cookie, re-issued server-side the way ``_fbp`` is (browser.md §2.2:
server-side GTM re-issues ``_ga`` the same way): a known value is kept, else a new one
``GA1.1.<31 random bits>.<now in seconds>`` is created; like ``_fbp`` it is ``carried``: a known
visitor without it gets the profile's value back (the creation time is part of the value). A
valid cookie fills ``user.click_ids["ga"]`` with the client id, which only the GA4 destination
reads (GA4 hits forward the cookie itself to Google). GA's own lifetime is two years: we stay
at the 400-day cap. GA4 has no click id of its own (Google Ads owns gclid).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from gateway.core.clickids import CookieKind, CookieSpec, check_digits, validating

__all__ = ["COOKIES", "client_id", "format_ga"]

_GA_RE: Final = re.compile(r"GA1\.([1-9]\d?)\.(\d{1,20})\.(\d{1,20})")


def client_id(value: object) -> str | None:
    """Return the GA4 client id ``<random>.<seconds>`` of a ``_ga`` value, or None if malformed."""
    if not isinstance(value, str) or (m := _GA_RE.fullmatch(value)) is None:
        return None
    return f"{m[2]}.{m[3]}"


def format_ga(random_int: int, created_s: int) -> str:
    """Return the ``_ga`` value ``GA1.1.<random>.<seconds>`` (a positive random, 10-digit s)."""
    check_digits("random_int", random_int, 1, 20)
    check_digits("created_s", created_s, 10, 10)
    if random_int == 0:
        raise ValueError("random_int must be positive")
    return f"GA1.1.{random_int}.{created_s}"


def _new_ga(now_ms: int, random_bits: Callable[[int], int], subdomain_index: int) -> str:
    # 32 bits halved to 31: a draw of its own width, never the 31 bits another cookie (_fbp)
    # drew, so the GA client id and Meta's browser id share no random part.
    return format_ga((random_bits(32) >> 1) or 1, now_ms // 1000)


COOKIES: Final = (
    CookieSpec(
        "_ga",
        CookieKind.VISITOR,
        400,
        validating(client_id),
        create=_new_ga,
        carried=True,
        reads_as="ga",
        read=client_id,
    ),
)
