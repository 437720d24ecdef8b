"""Feed the ingest counters (gateway/core/tally.py) from what the store did with a batch.

Kept apart from the pipeline so the request path adds one call; the common batch (every event
won every route) costs one dict increment per event.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.core.event import STANDARD_EVENTS, Event
from gateway.core.tally import CUSTOM, IngestTally
from gateway.store.base import AppendResult, NewEvent


def count_appends(
    tally: IngestTally, batch: Sequence[NewEvent], results: Sequence[AppendResult]
) -> None:
    """Count the delivery rows `append` created and the routes it skipped as duplicates."""
    plain: dict[tuple[str, ...], dict[str, int]] = {}
    for event, result in zip(batch, results, strict=True):
        name = event.event_name
        if result.deduplicated == 0:
            names = plain.get(event.routes)
            if names is None:
                names = plain[event.routes] = {}
            names[name] = names.get(name, 0) + 1
        elif result.created == 0:
            tally.appended(name, event.routes, event.routes)
        else:
            tally.appended(name, event.routes, result.duplicates)
    queued = tally.queued
    for routes, names in plain.items():
        for name, n in names.items():
            label = name if name in STANDARD_EVENTS else CUSTOM
            for route in routes:
                key = (route, label)
                queued[key] = queued.get(key, 0) + n


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
        tally.accepted_names(site, source, (event.event,))


_HIT_SOURCES: dict[str, str] = {}


def hit_source(vendor: str) -> str:
    """Return the source label of a proxied hit of `vendor` (``hit:meta``), built once."""
    source = _HIT_SOURCES.get(vendor)
    if source is None:
        source = _HIT_SOURCES[vendor] = f"hit:{vendor}"
    return source
