"""The `_sgv` visitor cookie value a backend passes as `user.visitor_id`.

A backend links an order to the browser it came from by forwarding the gateway's visitor cookie
exactly as it reads it (``<id>.<signature>``, see web/cookies.py). Such a value is verified with
the cookie key and replaced by the bare id; a value of that shape whose signature does not match
is dropped with a warning in the 202 (it was altered, or signed by another key). Any other
string is a plain visitor id and is used as it is, as before.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Final

from gateway.core.event import Event
from gateway.core.fielderrors import FieldError
from gateway.core.record import Stored
from gateway.web.cookies import verify_visitor_id

SIGNED_SHAPE: Final = re.compile(r"[A-Za-z0-9_-]{1,128}\.[A-Za-z0-9_-]{22}")
"""What a signed visitor cookie value looks like (web/cookies.py: id, dot, 128-bit HMAC)."""

BAD_SIGNATURE: Final = "signed visitor cookie with a wrong signature: visitor id ignored"


def resolve(value: str | None, key: bytes | None) -> tuple[str | None, bool]:
    """Return the visitor id to use and whether a bad signature made it be dropped."""
    if value is None or "." not in value or not SIGNED_SHAPE.fullmatch(value):
        return value, False
    verified = verify_visitor_id(value, key) if key is not None else None
    return verified, verified is None


def resolve_events(
    events: Sequence[Event], indexes: Sequence[int], key: bytes | None, prefix: str
) -> tuple[list[Event], list[FieldError]]:
    """`resolve` every event's visitor id; warnings name ``<prefix>[index].user.visitor_id``."""
    out = list(events)
    warnings: list[FieldError] = []
    for n, (event, index) in enumerate(zip(events, indexes, strict=True)):
        vid = event.user.visitor_id
        if vid is None or "." not in vid:
            continue
        resolved, bad = resolve(vid, key)
        if resolved != vid:
            out[n] = replace(event, user=replace(event.user, visitor_id=resolved))
        if bad:
            warnings.append(FieldError(f"{prefix}[{index}].user.visitor_id", BAD_SIGNATURE))
    return out, warnings


def resolve_stored(stored: Sequence[Stored], key: bytes | None, prefix: str) -> list[FieldError]:
    """`resolve` the visitor ids of stored forms in place (they are not shared yet)."""
    warnings: list[FieldError] = []
    for index, item in enumerate(stored):
        vid = item.u.vid
        if vid is None or "." not in vid:
            continue
        resolved, bad = resolve(vid, key)
        item.u.vid = resolved
        if bad:
            warnings.append(FieldError(f"{prefix}[{index}].user.visitor_id", BAD_SIGNATURE))
    return warnings
