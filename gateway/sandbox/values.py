"""Small value checks the platform emulators share (pure functions, no platform knowledge)."""

from __future__ import annotations

import ipaddress
import math
from urllib.parse import urlsplit

__all__ = [
    "bearer_token",
    "is_http_url",
    "is_int",
    "is_ip",
    "is_number",
    "string_ids",
    "string_ids_under",
]


def bearer_token(authorization: str) -> str:
    """The credentials of a `Bearer` Authorization header value; "" for any other scheme."""
    scheme, _, credentials = authorization.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def is_number(value: object) -> bool:
    """True for a finite int or float (booleans are not numbers here)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def is_int(value: object) -> bool:
    """True for an int that is not a boolean."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_http_url(value: object) -> bool:
    """True for an absolute http(s) URL with a host."""
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(host)


def is_ip(value: str) -> bool:
    """True for an IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def string_ids(items: object, key: str) -> list[str]:
    """The string values at `key` of the objects in `items`; [] when `items` is not a list.

    Best effort on a possibly invalid body, for the recorder's list of refused ids.
    """
    if not isinstance(items, list):
        return []
    return [
        item[key] for item in items if isinstance(item, dict) and isinstance(item.get(key), str)
    ]


def string_ids_under(doc: object, list_key: str, key: str) -> list[str]:
    """`string_ids` of the list at `doc[list_key]`; [] when `doc` is not an object."""
    return string_ids(doc.get(list_key) if isinstance(doc, dict) else None, key)
