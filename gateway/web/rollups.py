"""The stats flusher: every `audit.flush_seconds` (and on stop) it books the live counters'
increases into per-minute rows (gateway/core/rollup.py) and adds them to the store; once an
hour it deletes the minutes older than `audit.retention_days`.

Nothing here runs on the request or delivery paths: a flush reads the same plain counters a
`/metrics` scrape reads. A store that refuses a write costs nothing but a log line: the rows
stay pending and go with the next flush (up to `MAX_PENDING_MINUTES` minutes of them).

Counters the store itself keeps (`sample`: the per-route dedup pair counts) are read once more
per flush; their value when the flusher starts is the reference, so what happened before it
started is not booked again after a restart. A failed sample books nothing for them until the
next good one. A known limit: several gateway processes sharing one store each book the
shared counters' increase (README "Stats history").

`window` answers the dashboard (gateway/web/dashboard/): the store's rows of a time range plus
what a flush now would add, so the pages show the current minute and, after a restart, the same
figures as before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Final

from aiohttp import web

from gateway.config import AuditConfig
from gateway.core.rollup import Key, Rollup, StatRow, minute_of
from gateway.store.base import StatsQuery, StatsStore

log = logging.getLogger("signalgate.rollups")

COMPACT_EVERY: Final = 3600.0
"""Seconds between retention compactions (the first runs at the first flush)."""
WRITE_CHUNK: Final = 500
"""Rows per store write: with the loop writer a write holds the event loop, so a big flush
goes in several short transactions with requests served in between."""
TICK_SLACK: Final = 0.05
"""Flushes run this long after a multiple of `flush_seconds`, safely past a minute boundary."""


class Flusher:
    """Writes the counters' per-minute rollups to the store (see the module docstring)."""

    def __init__(
        self,
        store: StatsStore,
        read: Callable[[], Mapping[Key, int]],
        clock: Callable[[], float],
        config: AuditConfig,
        sample: Callable[[], Awaitable[Mapping[Key, int]]] | None = None,
    ) -> None:
        self.store = store
        self.read = read
        """Every counter's value now (`gateway.core.rollup.snapshot` of the live tallies)."""
        self.clock = clock
        self.config = config
        self.sample = sample
        """Counters the store keeps (`gateway.core.rollup.pair_counts`), read per flush."""
        self.rollup = Rollup(since=clock())
        self._lock = asyncio.Lock()
        self._compacted_at: float | None = None
        self._sampled: dict[Key, int] | None = None
        """The last good sample (None: none yet, the next one is the reference)."""

    def start(self) -> None:
        """Begin the first interval now (counters before this moment are not booked)."""
        self.rollup = Rollup(since=self.clock())
        self.rollup.last = dict(self.read())
        self._sampled = None

    async def prime(self) -> None:
        """Take the store-kept counters' reference now (after `start`)."""
        async with self._lock:
            await self._counts()

    async def _counts(self) -> dict[Key, int]:
        """Every counter now: the live ones and the last good sample of the store's ones. The
        first good sample becomes the reference (set in `rollup.last`: nothing is booked)."""
        counts = dict(self.read())
        if self.sample is None:
            return counts
        try:
            got: dict[Key, int] | None = dict(await self.sample())
        except Exception as exc:
            log.warning(
                "Store counters not read for the rollups; will try again.",
                extra={"reason": type(exc).__name__},
            )
            got = None
        if got is not None:
            if self._sampled is None:
                self.rollup.last.update(got)
            self._sampled = got
        counts.update(self._sampled or {})
        return counts

    async def window(self, query: StatsQuery) -> list[StatRow]:
        """Return the store's rows of `query` and what a flush now would add to them (rows of
        `query`'s minutes only; the unflushed ones keep their minute, not the query's step)."""
        async with self._lock:
            rows = await self.store.read_stats(query)
            extra = self.rollup.preview(await self._counts())
        return rows + [r for r in extra if _wanted(query, r)]

    async def flush(self) -> int:
        """Book the increases since the last flush and write every pending row, WRITE_CHUNK
        rows a transaction; return the rows written (rows the store refused wait for the next
        flush)."""
        async with self._lock:
            rollup = self.rollup
            rollup.add(await self._counts(), self.clock())
            rows = rollup.rows()
            if not rows:
                return 0
            written = 0
            for at in range(0, len(rows), WRITE_CHUNK):
                chunk = rows[at : at + WRITE_CHUNK]
                try:
                    await self.store.write_stats(chunk)
                except Exception as exc:
                    log.warning(
                        "Stats rollup not written; will try again.",
                        extra={"reason": type(exc).__name__, "rows": len(rows) - written},
                    )
                    break
                rollup.written(chunk)
                written += len(chunk)
            return written

    async def compact(self) -> int:
        """Delete the minutes older than the retention; return the rows deleted."""
        now = self.clock()
        self._compacted_at = now
        before = minute_of(now - self.config.retention_days * 86400)
        return await self.store.compact_stats(before)

    async def run(self) -> None:
        """Flush on every tick of `flush_seconds` and compact once an hour, until cancelled."""
        every = self.config.flush_seconds
        while True:
            await asyncio.sleep(every - self.clock() % every + TICK_SLACK)
            await self.flush()
            last = self._compacted_at
            if last is None or self.clock() - last >= COMPACT_EVERY:
                try:
                    await self.compact()
                except Exception as exc:
                    log.warning(
                        "Stats retention compaction failed; will try again.",
                        extra={"reason": type(exc).__name__},
                    )
                    self._compacted_at = None


def _wanted(query: StatsQuery, row: StatRow) -> bool:
    """Whether the store's read of `query` would include `row` (site-wide rows come with a
    destination filter, as there)."""
    return (
        query.start <= row.minute < query.end
        and (query.site is None or row.site == query.site)
        and (query.destination is None or row.destination in (query.destination, ""))
        and (not query.metrics or row.metric in query.metrics)
    )


ROLLUPS = web.AppKey("rollups", Flusher)


def rollups_ctx(flusher: Flusher) -> Callable[[web.Application], AsyncIterator[None]]:
    """An app cleanup context running the flusher; it flushes once more on stop. Install it
    after the store's context and before the workers' one: it then stops after the workers
    (their last deliveries are booked) and before the store closes."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        flusher.start()
        await flusher.prime()
        task = asyncio.create_task(flusher.run(), name="stats rollups")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await flusher.flush()

    return ctx
