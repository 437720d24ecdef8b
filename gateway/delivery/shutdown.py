"""Stopping the delivery workers without stranding leases.

A worker asked to stop finishes the request it is sending (its rows get their fate as usual)
and hands back the rows it leased but has not sent. Whatever still runs at the deadline is
cancelled and its leased rows are handed back as well: due again at once, for this process'
successor, instead of after `delivery.lease_seconds`. A row whose request was cut off mid-send
may reach the platform twice; delivery is at-least-once and platforms deduplicate by event_id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence

from gateway.delivery.worker import Worker
from gateway.store.availability import StoreUnavailableError

log = logging.getLogger("signalgate.delivery")


async def stop_workers(
    workers: Iterable[Worker],
    tasks: Sequence[asyncio.Task[None]],
    timeout: float,  # noqa: ASYNC109 - a deadline shared by several waits
) -> int:
    """Stop the workers within `timeout` seconds (then cancel); return rows handed back."""
    workers = list(workers)
    for worker in workers:
        worker.stop()
    if tasks:
        _, late = await asyncio.wait(tasks, timeout=max(0.0, timeout))
        for task in late:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    released = 0
    for worker in workers:
        try:
            released += await worker.release()
        except (StoreUnavailableError, RuntimeError):
            # The store cannot write (logged once) or is closed: those leases expire by
            # themselves after lease_seconds, as after a crash.
            log.warning("Leases could not be handed back.", extra={"route": worker.route})
    if released:
        log.info("Handed back leased rows.", extra={"rows": released})
    return released
