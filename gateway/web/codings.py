"""Content codings of forwarded hit answers: never send a client a coding it did not accept.

The hit proxy asks its upstream for `Accept-Encoding: identity`, but an upstream may compress
anyway. A gzip or deflate answer to a client whose `Accept-Encoding` does not accept that
coding is decoded here (bounded: a body that inflates past the limit is refused, like an
oversized upstream answer); another coding the client did not accept cannot be passed at all.
"""

from __future__ import annotations

import zlib
from typing import Final

_WBITS: Final = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": 0}


class CodingError(ValueError):
    """A coded body that cannot be given to the client (unknown coding, corrupt, too big)."""


def accepts(accept_encoding: str | None, coding: str) -> bool:
    """Whether an Accept-Encoding value accepts `coding` (a q=0 entry refuses it; `*` counts)."""
    if not accept_encoding:
        return False
    coding = coding.lower()
    wildcard = False
    for item in accept_encoding.lower().split(","):
        name, _, params = item.partition(";")
        name = name.strip()
        refused = False
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip() == "q":
                try:
                    refused = float(value.strip()) <= 0
                except ValueError:
                    refused = True
        if name == coding or (coding == "x-gzip" and name == "gzip"):
            return not refused
        if name == "*":
            wildcard = not refused
    return wildcard


def decode(body: bytes, coding: str, limit: int) -> bytes:
    """Return the decoded body of a gzip/deflate `coding`; CodingError when it is another
    coding, corrupt, or longer than `limit` bytes once decoded."""
    wbits = _WBITS.get(coding.strip().lower())
    if wbits is None:
        raise CodingError("unsupported content coding")
    try:
        if wbits == 0:  # "deflate" is zlib-wrapped; some servers send it raw
            wbits = zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS
        inflater = zlib.decompressobj(wbits)
        out = inflater.decompress(body, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise CodingError("decoded body too large")
        out += inflater.flush()
    except zlib.error as exc:
        raise CodingError("corrupt coded body") from exc
    if len(out) > limit or not inflater.eof:
        raise CodingError("corrupt or too large coded body")
    return out
