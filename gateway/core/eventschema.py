"""What an incoming event object may hold: its JSON keys, size limits, value patterns, time
reading and age window, which the precise parser, its fast path and core.wire all check."""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from gateway.core.event import CONSENT_KEYS, PII_FIELDS

JSON = Any

# Size limits for strings accepted from clients: generous for real data, small enough that a
# hostile body cannot blow up storage or platform payloads.
MAX_NAME = 100
MAX_ID = 256
MAX_URL = 4096
MAX_TEXT = 1024
MAX_UA = 1024
MAX_LIST = 10
MAX_CONTENTS = 500
MAX_CUSTOM_KEYS = 50

# Ms-since-epoch values are ~1.7e12 today; seconds are ~1.7e9. Anything above this bound is
# almost certainly milliseconds (platforms.md §11 pitfall 5) and is refused with that reason.
_MS_THRESHOLD: Final = 100_000_000_000
FUTURE_SKEW = 300.0
"""Client clocks up to five minutes ahead are clamped to now; further ahead is rejected."""


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Per-site bounds applied while parsing."""

    max_age_seconds: float = 7 * 86400
    max_age_offline_seconds: float = 62 * 86400


_EVENT_KEYS: Final = frozenset(
    {
        "event",
        "event_id",
        "time",
        "source",
        "url",
        "referrer",
        "user",
        "data",
        "consent",
        "test_code",
    }
)
_USER_KEYS: Final = frozenset(
    set(PII_FIELDS) | {"ip", "user_agent", "visitor_id", "fbc", "fbp", "click_ids"}
)
_DATA_KEYS: Final = frozenset(
    {
        "value",
        "currency",
        "order_id",
        "contents",
        "content_type",
        "content_name",
        "content_category",
        "num_items",
        "search_string",
        "status",
        "predicted_ltv",
        "custom",
    }
)
_CONTENT_KEYS: Final = frozenset({"id", "quantity", "price"})
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_ .:\-]{0,99}$")
_CURRENCY_RE: Final = re.compile(r"^[A-Za-z]{3}$")
_PRINTABLE_RE: Final = re.compile(r"^[^\x00-\x1f\x7f]*$")
_IPV4_RE: Final = re.compile(
    r"^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$"
)
_COOKIE_SAFE_RE: Final = re.compile(r"^[A-Za-z0-9._\-~]{1,500}$")
_IDENTIFIER_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DECIMAL_TIME_RE: Final = re.compile(r"\d{1,11}(\.\d+)?")
_FB_COOKIE_RE: Final = re.compile(r"fb\.\d\.\d{10,16}\.[A-Za-z0-9_\-.]{1,400}")
_CUSTOM_KEY_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_URL_RE: Final = re.compile(r"^https?://[^\s/?#]+", re.IGNORECASE)
_CONSENT_KEY_SET: Final = frozenset(CONSENT_KEYS)


def _isfinite(value: int | float) -> bool:
    """`math.isfinite`, without its OverflowError for an int beyond any float (False then).

    orjson reads such integers as floats, but the stdlib, which decodes what orjson refuses
    (jsoncodec), keeps them exact; an int compares with a float without conversion.
    """
    if type(value) is int:
        return -_FLOAT_MAX <= value <= _FLOAT_MAX
    return math.isfinite(value)


_FLOAT_MAX: Final = sys.float_info.max


def parse_time(value: JSON) -> float | str:
    """Return unix seconds from unix seconds or ISO-8601, or a reason string."""
    kind = type(value)
    if kind is int or kind is float:  # the usual case first (and no union object per call)
        if not _isfinite(value) or value < 0:
            return "expected non-negative unix seconds"
        if value >= _MS_THRESHOLD:
            return "looks like milliseconds; expected unix seconds"
        return float(value)
    if isinstance(value, bool):
        return "expected unix seconds or an ISO-8601 string"
    if isinstance(value, int | float):
        if not _isfinite(value) or value < 0:
            return "expected non-negative unix seconds"
        if value >= _MS_THRESHOLD:
            return "looks like milliseconds; expected unix seconds"
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 40:
            return "expected unix seconds or an ISO-8601 string"
        if _DECIMAL_TIME_RE.fullmatch(text):
            return parse_time(float(text))
        try:
            stamp = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return "expected unix seconds or an ISO-8601 string"
        if stamp.tzinfo is None:
            return "ISO-8601 time needs a timezone (e.g. Z or +02:00)"
        return stamp.timestamp()
    return "expected unix seconds or an ISO-8601 string"
