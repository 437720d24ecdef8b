"""Run a round's request groups a few at a time (one route's worker, one event loop).

GA4 puts the user at request level, so a round of 500 rows is up to 500 one-event requests;
sent one after another, the route waits a full round trip per user. `each_bounded` keeps up to
`limit` of them in flight. It stops starting new ones once `stop()` says so (the worker checks
shutdown there; a pause or an open circuit is checked by the send itself, which then hands its
rows back untouched). When one send raises, no new one starts, the ones in flight finish, and
the first exception is raised as it is (the worker's error handling sees the same types as
with one request at a time).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


async def each_bounded(
    items: Iterable[T],
    send: Callable[[T], Awaitable[None]],
    limit: int,
    stop: Callable[[], bool],
) -> None:
    """Await `send(item)` for every item, at most `limit` at once, in order of starting."""
    pending = iter(items)
    failures: list[Exception] = []

    async def lane() -> None:
        for item in pending:  # one shared iterator: each item is taken by one lane
            if failures or stop():
                return
            try:
                await send(item)
            except Exception as exc:  # handed to the caller once the others have finished
                failures.append(exc)
                return

    await asyncio.gather(*(lane() for _ in range(max(1, limit))))
    if failures:
        raise failures[0]
