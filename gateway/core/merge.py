"""Union of signals for duplicates of one (destination, event name, event id).

The same conversion often arrives twice: from the browser (loader or proxied pixel hit) and from
the shop backend. Within the merge window the copies become one delivery:

* identifiers: union (hashed sets per rule set, click ids); plain browser ids (ip, user agent,
  fbc, fbp) come from the browser copy when it has them, since a backend often sees its own
  server's address;
* value, currency, contents, order id: the backend's copy wins (it knows what was paid);
* everything else: the first copy's value, gaps filled from the other;
* event time: the earliest.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from gateway.core.event import Data, Event, User
from gateway.core.profile import union_hashed

BACKEND: Final = "api"
"""Channel of events posted by the shop backend to /v1/events."""


def source_pair(first: str, second: str) -> str:
    """Return the dedup counter key of two channels, e.g. "api+loader" (order-free)."""
    return "+".join(sorted((first, second)))


def merge(a: Event, b: Event, a_channel: str, b_channel: str) -> Event:
    """Return one event carrying the union of two copies of the same conversion."""
    if (b_channel, b.time) < (a_channel, a.time):
        # A canonical order makes the result independent of which copy arrived first.
        a, b, a_channel, b_channel = b, a, b_channel, a_channel
    backend: Event | None = None
    browser: Event | None = None
    if a_channel == BACKEND and b_channel != BACKEND:
        backend, browser = a, b
    elif b_channel == BACKEND and a_channel != BACKEND:
        backend, browser = b, a
    user = _merge_user(a.user, b.user, browser.user if browser is not None else None)
    data = _merge_data(a.data, b.data, backend.data if backend is not None else None)
    return replace(
        a,
        time=min(a.time, b.time),
        url=a.url or b.url,
        referrer=a.referrer or b.referrer,
        user=user,
        data=data,
        consent=a.consent or b.consent,
        test_code=a.test_code or b.test_code,
        ldu=a.ldu or b.ldu,
    )


def _merge_user(a: User, b: User, browser: User | None) -> User:
    first = browser if browser is not None else a
    other = b if first is a else a
    return User(
        pii={},
        hashed=union_hashed(a.hashed, b.hashed),
        ip=first.ip or other.ip,
        user_agent=first.user_agent or other.user_agent,
        visitor_id=a.visitor_id or b.visitor_id,
        fbc=first.fbc or other.fbc,
        fbp=first.fbp or other.fbp,
        click_ids={**b.click_ids, **a.click_ids},
    )


def _merge_data(a: Data, b: Data, backend: Data | None) -> Data:
    merged = replace(
        a,
        value=a.value if a.value is not None else b.value,
        currency=a.currency or b.currency,
        order_id=a.order_id or b.order_id,
        contents=a.contents or b.contents,
        content_type=a.content_type or b.content_type,
        content_name=a.content_name or b.content_name,
        content_category=a.content_category or b.content_category,
        num_items=a.num_items if a.num_items is not None else b.num_items,
        search_string=a.search_string or b.search_string,
        status=a.status or b.status,
        predicted_ltv=a.predicted_ltv if a.predicted_ltv is not None else b.predicted_ltv,
        custom={**b.custom, **a.custom},
    )
    if backend is None:
        return merged
    return replace(
        merged,
        value=backend.value if backend.value is not None else merged.value,
        currency=backend.currency or merged.currency,
        contents=backend.contents or merged.contents,
        order_id=backend.order_id or merged.order_id,
    )
