"""JSON in and out of the request path: orjson, with the stdlib deciding what orjson refuses.

orjson decodes and encodes several times faster than the stdlib's `json` (which is most of the
per-event cost of a bare handler), but it refuses some documents the stdlib takes: the
constants NaN/Infinity and lone surrogate escapes ("\\ud800"). The gateway's validation turns
such values into precise field errors (422 with a path) or drops them, so when orjson refuses a
document the stdlib decodes it, and the answer stays as precise as before.

One difference remains: orjson reads an integer beyond 64 bits as a float. Every numeric field
the gateway takes is far smaller than that except ids, and the event parser answers a float id
that large with "send ids of 20 or more digits as strings".
"""

from __future__ import annotations

import json
from typing import Any, Final

import orjson

_stdlib_loads: Final = json.loads


def loads(data: bytes | str) -> Any:
    """Decode JSON; raise ValueError (or RecursionError) when neither orjson nor json can."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _stdlib_loads(data)


def dumps(obj: Any) -> bytes:
    """Encode compactly as UTF-8 (like ``json.dumps(separators=(",", ":"), ensure_ascii=False)``).

    Dict keys must be strings; NaN and infinities, which the gateway never stores, would become
    null.
    """
    return orjson.dumps(obj)
