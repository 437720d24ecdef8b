"""The Bearer credential of an `Authorization` header, as bytes to compare in constant time.

A header value may hold any byte a client sent: aiohttp decodes bytes that are not UTF-8 to
lone surrogates (which `str.encode` refuses) and the lane reads latin-1. A credential is
printable ASCII, so anything else is no credential at all (the caller answers 401), never an
encoding error (a 500).
"""

from __future__ import annotations

from typing import Final

_SCHEME: Final = "bearer "


def bearer_token(header: str | None) -> bytes | None:
    """Return the token of `Bearer <token>` (scheme case-insensitive), or None when the header
    is missing, of another scheme, empty or not printable ASCII."""
    if not header or not header.isascii() or header[:7].lower() != _SCHEME:
        return None
    token = header[7:].strip(" \t")
    if not token or not token.isprintable():
        return None
    return token.encode("ascii")
