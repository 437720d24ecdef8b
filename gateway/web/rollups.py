"""The stats flusher: every `audit.flush_seconds` (and on stop) it books the live counters'
increases into per-minute rows (gateway/core/rollup.py) and adds them to the store; once an
hour it deletes the minutes older than `audit.retention_days`.

Nothing here runs on the request or delivery paths: a flush reads the same plain counters a
`/metrics` scrape reads. A store that refuses a write costs nothing but a log line: the rows
stay pending and go with the next flush (up to `MAX_PENDING_MINUTES` minutes of them).

The counters the store itself keeps (the per-route dedup pair counts, shared by every process
on the store) are booked by the store: each flush (and the start) asks it to book their
increase since the last booking by any process (`StatsStore.book_pairs`, one transaction), so
with `run --workers N` or several replicas on one database every duplicate is booked once.
The interval's minute is the flush's, as for the live counters. A failed booking loses
nothing: the increase stays in the store for the next one. When nobody booked for
`PAIRS_STALE` seconds (rollups were off, say), the counters become the new reference instead,
so what happened meanwhile is not piled into one minute.

`window` answers the dashboard (gateway/web/dashboard/): the store's rows of a time range plus
what a flush now would add, so the pages show the current minute and, after a restart, the same
figures as before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Final

from aiohttp import web

from gateway.config import AuditConfig
from gateway.core.rollup import MAX_PENDING_MINUTES, MINUTE, Key, Rollup, StatRow, minute_of
from gateway.store.base import StatsQuery, StatsStore

log = logging.getLogger("signalgate.rollups")

COMPACT_EVERY: Final = 3600.0
"""Seconds between retention compactions (the first runs at the first flush)."""
WRITE_CHUNK: Final = 500
"""Rows per store write: with the loop writer a write holds the event loop, so a big flush
goes in several short transactions with requests served in between."""
TICK_SLACK: Final = 0.05
"""Flushes run this long after a multiple of `flush_seconds`, safely past a minute boundary."""
PAIRS_STALE: Final = MAX_PENDING_MINUTES * MINUTE
"""Seconds after which the store's last pair booking is too old to book from (as long as
the flusher keeps rows the store refuses)."""


class Flusher:
    """Writes the counters' per-minute rollups to the store (see the module docstring)."""

    def __init__(
        self,
        store: StatsStore,
        read: Callable[[], Mapping[Key, int]],
        clock: Callable[[], float],
        config: AuditConfig,
    ) -> None:
        self.store = store
        self.read = read
        """Every counter's value now (`gateway.core.rollup.snapshot` of the live tallies)."""
        self.clock = clock
        self.config = config
        self.rollup = Rollup(since=clock())
        self._lock = asyncio.Lock()
        self._compacted_at: float | None = None

    def start(self) -> None:
        """Begin the first interval now (counters before this moment are not booked)."""
        self.rollup = Rollup(since=self.clock())
        self.rollup.last = dict(self.read())

    async def prime(self) -> None:
        """Book the store's pair counters now (after `start`): what a process that stopped
        without its last flush left, or on a store that never booked, the reference."""
        async with self._lock:
            await self._book_pairs(minute_of(self.clock()))

    async def _book_pairs(self, minute: int) -> int:
        """Have the store book its pair counters' increase to `minute`; return the rows."""
        try:
            rows = await self.store.book_pairs(minute, minute - PAIRS_STALE)
        except Exception as exc:
            log.warning(
                "Dedup pair counters not booked; will try again.",
                extra={"reason": type(exc).__name__},
            )
            return 0
        return len(rows)

    async def window(self, query: StatsQuery) -> list[StatRow]:
        """Return the store's rows of `query` and what a flush now would add to them (rows of
        `query`'s minutes only; the unflushed ones keep their minute, not the query's step)."""
        async with self._lock:
            rows = await self.store.read_stats(query)
            extra = self.rollup.preview(self.read())
            minute = minute_of(self.rollup.since)
            try:
                extra += await self.store.unbooked_pairs(minute, minute - PAIRS_STALE)
            except Exception as exc:
                log.warning(
                    "Dedup pair counters not read for the window.",
                    extra={"reason": type(exc).__name__},
                )
        return rows + [r for r in extra if _wanted(query, r)]

    async def flush(self) -> int:
        """Book the increases since the last flush and write every pending row, WRITE_CHUNK
        rows a transaction, then have the store book its pair counters; return the rows
        written (rows the store refused wait for the next flush)."""
        async with self._lock:
            rollup = self.rollup
            minute = minute_of(rollup.since)
            rollup.add(self.read(), self.clock())
            rows = rollup.rows()
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
            return written + await self._book_pairs(minute)

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
