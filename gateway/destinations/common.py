"""Small pure helpers every destination shares: settings fields, time windows, JSON answers.

Platform decisions (field names, limits, error codes) stay in each platform's module; only
what is the same everywhere lives here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import field
from typing import Any, Final, Generic, Literal, Protocol, TypeVar

import httpx

from gateway.core.event import Content, Event, User
from gateway.destinations.base import BatchVerdict, Paused, Retry, parse_retry_after

IdForm = Literal["list", "first", "one_or_list"]
"""How a platform takes a hashed identifier (see `hashed_ids`)."""

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


def put_present(out: dict[str, Any], pairs: Iterable[tuple[str, Any]]) -> None:
    """Set each `(key, value)` pair in `out`, in order, skipping values that are None."""
    for key, value in pairs:
        if value is not None:
            out[key] = value


def content_items(
    contents: Sequence[Content],
    *,
    id_key: str = "id",
    price_key: str = "item_price",
    price_first: bool = False,
    money: Callable[[float], Any] | None = None,
) -> list[dict[str, Any]]:
    """Return one object per line item: its id, then quantity and price when known.

    The platform names the id and price keys, the order of quantity and price (JSON bytes keep
    key order) and how a price is written (`money`, e.g. a decimal string).
    """
    items: list[dict[str, Any]] = []
    for c in contents:
        item: dict[str, Any] = {id_key: c.id}
        price = None if c.price is None else (money(c.price) if money else c.price)
        if price_first and price is not None:
            item[price_key] = price
        if c.quantity is not None:
            item["quantity"] = c.quantity
        if not price_first and price is not None:
            item[price_key] = price
        items.append(item)
    return items


def item_count(contents: Sequence[Content]) -> int:
    """Return the number of units in the line items (a line without a quantity counts once)."""
    return sum(c.quantity or 1 for c in contents)


def api_base_setting(default: str, api: str) -> Any:
    """Return the `api_base` field: the platform's base URL, overridable to reach a sandbox."""
    return field(
        default=default,
        metadata={"help": f"{api} base URL (point at the sandbox in tests).", "url": True},
    )


def max_batch_setting(platform: str, limit: int, default: int = 500) -> Any:
    """Return the `max_batch` field, bounded by the platform's own per-request `limit`."""
    return field(
        default=default,
        metadata={
            "help": f"Events per request ({platform} allows {limit}).",
            "min": 1,
            "max": limit,
        },
    )


def mapping_setting(help_: str) -> Any:
    """Return an optional name → name table field (empty by default), e.g. `custom_events`."""
    return field(default_factory=dict, metadata={"help": help_})


def optional_setting(help_: str) -> Any:
    """Return an optional text field (None by default), e.g. a test event code."""
    return field(default=None, metadata={"help": help_})


class BatchSettings(Protocol):
    """Settings that carry a configured batch size."""

    @property
    def max_batch(self) -> int:
        """Return the most events one request may carry."""


S = TypeVar("S", bound=BatchSettings)


class Configured(Generic[S]):
    """A destination built from its settings; its batch size is the configured `max_batch`."""

    def __init__(self, settings: S) -> None:
        self.settings = settings

    @property
    def max_batch(self) -> int:
        """Return the configured batch size."""
        return self.settings.max_batch


def status_verdict(
    response: httpx.Response,
    now: float,
    message: str,
    paused: Mapping[int, str],
    rate_limit_wait: float | None = None,
) -> BatchVerdict | None:
    """Return the verdict an HTTP status alone decides, or None to let the platform's body decide.

    A status in `paused` pauses the route, its hint appended to `message` in parentheses; 408,
    429 and 5xx retry after the Retry-After header (a 429 without one waits `rate_limit_wait`).
    """
    status = response.status_code
    hint = paused.get(status)
    if hint is not None:
        return BatchVerdict(Paused(f"{message} ({hint})"))
    if status in (408, 429) or status >= 500:
        after = parse_retry_after(response.headers.get("retry-after"), now)
        if status == 429 and after is None:
            after = rate_limit_wait
        return BatchVerdict(Retry(message, after))
    return None


def post_json(
    url: str | httpx.URL,
    doc: Any,
    auth: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
) -> httpx.Request:
    """Return a POST of `doc` as compact UTF-8 JSON.

    Headers go out in a fixed order: `auth` first, then content-type, then `extra`.
    """
    return httpx.Request(
        "POST",
        url,
        params=params,
        content=json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode(),
        headers={**(auth or {}), "content-type": "application/json", **(extra or {})},
    )


def hashed_ids(
    user: User, rules: str, keys: Iterable[str | tuple[str, str]], form: IdForm
) -> dict[str, Any]:
    """Return the user's digests under one rule set, keyed by the platform's names.

    `keys` holds our identifier keys, or (our key, platform key) pairs; absent or empty ones are
    left out. `form` is how the platform takes them: every value as a list, only the first, or
    the first alone when there is one and a list otherwise.
    """
    hashed = user.hashed.get(rules, {})
    out: dict[str, Any] = {}
    for entry in keys:
        key, name = (entry, entry) if isinstance(entry, str) else entry
        values = hashed.get(key)
        if not values:
            continue
        if form == "list":
            out[name] = list(values)
        elif form == "first" or len(values) == 1:
            out[name] = values[0]
        else:
            out[name] = list(values)
    return out


def chosen_test_code(event: Event, configured: str | None) -> str:
    """Return the event's own test code, else the configured one, else "" (a real event)."""
    return event.test_code or configured or ""


def reason_text(parts: Iterable[str], text: str | None, limit: int = 500) -> str:
    """Return "part, part: text" (no colon without text), cut to `limit` characters."""
    return (", ".join(parts) + (f": {text}" if text else ""))[:limit]


def put_truthy(out: dict[str, Any], pairs: Iterable[tuple[str, Any]]) -> None:
    """Set each `(key, value)` pair in `out`, in order, skipping empty values ("" or None)."""
    for key, value in pairs:
        if value:
            out[key] = value
