"""Feed the ingest counters (gateway/core/tally.py) from what the store did with a batch.

Kept apart from the pipeline so the request path adds one call; the common batch (one routes
tuple, every event new on every route) is counted by name in C, then one key per name and route.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter, itemgetter
from typing import Final

from gateway.core.event import Event
from gateway.core.tally import IngestTally, name_counts
from gateway.store.base import AppendResult, NewEvent

_NAME: Final = itemgetter(1)
"""NewEvent.event_name (a NamedTuple field, read in C)."""
EVENT_NAMES: Final = attrgetter("event")
"""Event.event, for `name_counts(events, EVENT_NAMES)`."""
STORED_NAMES: Final = attrgetter("e")
"""Stored.e (the stored form's event name)."""


def count_appends(
    tally: IngestTally,
    routes: tuple[str, ...],
    batch: Sequence[NewEvent],
    results: Sequence[AppendResult],
) -> None:
    """Count the delivery rows `append` created and the routes it skipped as duplicates, for
    a batch whose events all name `routes` (one pipeline commit)."""
    if not results:
        return
    first = results[0]
    if first.deduplicated == 0 and results.count(first) == len(results):
        tally.queued_names(
            routes, name_counts(batch, _NAME)
        )  # the usual batch: every event new everywhere
        return
    for event, result in zip(batch, results, strict=True):
        count_appended(tally, event.event_name, routes, result)


def count_appended(
    tally: IngestTally, name: str, routes: tuple[str, ...], result: AppendResult
) -> None:
    """`count_appends` for one event."""
    duplicates = routes if result.created == 0 else result.duplicates
    tally.appended(name, routes, duplicates if result.deduplicated else ())


def count_offered(tally: IngestTally, site: str, source: str, event: Event | None) -> None:
    """Count one event of `source` that passed validation (`event`) or was refused (None)."""
    if event is None:
        tally.refused(site, source, "invalid")
    else:
        tally.accepted_one(site, source, event.event)


_HIT_SOURCES: dict[str, str] = {}


def hit_source(vendor: str) -> str:
    """Return the source label of a proxied hit of `vendor` (``hit:meta``), built once."""
    source = _HIT_SOURCES.get(vendor)
    if source is None:
        source = _HIT_SOURCES[vendor] = f"hit:{vendor}"
    return source
