"""Small pure helpers every destination shares: settings fields, time windows, JSON answers.

Platform decisions (field names, limits, error codes) stay in each platform's module; only
what is the same everywhere lives here.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, Final

import httpx

SAFETY: Final = 600
"""Dead-letter ten minutes before a platform's window closes: a request in flight must not cross
it."""


def setting(help_: str, **meta: Any) -> Any:
    """Return a required settings field whose metadata carries `help` and the given checks."""
    return field(metadata={"help": help_, **meta})


def past_window(event_time: float, now: float, window: float) -> bool:
    """Return whether an event is (nearly, by `SAFETY`) older than the platform's `window`."""
    return now - event_time > window - SAFETY


def json_object(response: httpx.Response) -> dict[str, Any] | None:
    """Return the answer's JSON body if it is an object, else None (not JSON, or not a dict)."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def strict_int(value: Any) -> int | None:
    """Return `value` if it is a JSON integer (never a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None
