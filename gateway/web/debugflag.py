"""The per-request debug flag of ``POST /v1/events``: ``X-Signalgate-Debug: <test code>``.

A request that carries the header (and, like any request of that API, a valid site key) has
every event without its own `test_code` take the header's value as its test code, so each
platform gets it on its test channel (README "Debug"): Meta and TikTok send it as
`test_event_code` and Reddit as `test_id` (use the code their test tool shows, e.g. TEST12345,
for the events to appear there), GA4 posts to /debug/mp/collect, Snap to /events/validate,
Pinterest adds ?test=true and Google Ads validateOnly; LinkedIn, Microsoft and X have no test
mode, so their copy is dead-lettered (invalid_field) instead of being counted. `1` (any
non-empty code) is enough for the platforms that take no code. `0`, `false`, `off`, `no` or an
empty value mean no flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from gateway.core.eventschema import MAX_NAME
from gateway.core.fielderrors import FieldError
from gateway.core.wire import WireEvent

DEBUG_HEADER: Final = "X-Signalgate-Debug"
_OFF: Final = frozenset({"", "0", "false", "off", "no"})


def debug_code(value: str | None) -> str | FieldError | None:
    """The test code a request's debug header asks for, None without one, or why it is bad."""
    if value is None:
        return None
    code = value.strip()
    if code.lower() in _OFF:
        return None
    if len(code) > MAX_NAME or not code.isascii() or not code.isprintable():
        return FieldError(
            f"headers.{DEBUG_HEADER}",
            f"expected a test code: 1 to {MAX_NAME} printable ASCII characters (or 1)",
        )
    return code


def mark_typed(items: Sequence[WireEvent], code: str) -> None:
    """Give every typed event without a test code of its own `code`."""
    for item in items:
        if not item.test_code:
            item.test_code = code


def mark_items(items: Sequence[Any], code: str) -> None:
    """Give every event object without a test code of its own `code` (others keep theirs,
    and a bad one is refused by the parser as usual)."""
    for item in items:
        if isinstance(item, dict) and item.get("test_code") in (None, ""):
            item["test_code"] = code
