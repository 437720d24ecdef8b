"""Lifting a route's credentials pause: by the operator in this process (`resume`), or by a
resume another process recorded in the store (`_resumed_elsewhere`).

`signalgate resume` (``POST /v1/admin/resume``) reaches one process: one worker of `run
--workers N`, one replica behind a load balancer. That process records the resume in the store
(`Store.lift_pause`) and lifts its own worker's pause at once. Every other process's worker of
the route, while paused, asks the store at most every `WorkerSettings.resume_check` seconds
(2 s by default) whether the route was resumed after its pause began, and if so lifts its own
pause exactly as a local resume does: the same log line, the held rows due at once. A worker
that is not paused reads nothing: the check costs nothing while deliveries flow.

`Resuming` is a mixin of `Worker` (gateway/delivery/worker.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.delivery.settings import WorkerSettings
from gateway.store.base import Store

log = logging.getLogger("signalgate.delivery")


class Resuming:
    """Lifts the route's pause, locally or after a resume recorded elsewhere: a mixin of
    `Worker`."""

    route: str
    store: Store
    clock: Callable[[], float]
    settings: WorkerSettings
    resume_at: float
    paused_reason: str | None
    paused_at: float
    """When the route's latest refusal paused it (a resume recorded before then is stale)."""
    _resume_checked: float
    """When the store was last asked whether the route was resumed elsewhere."""
    _resume_check_failed: bool
    """The last check failed (logged once until one succeeds)."""
    _wake: asyncio.Event

    def resume(self) -> str | None:
        """Lift the route's pause now (an operator fixed the credentials) and wake `run`;
        return the pause's reason, None if it was not paused. The rows the pause made wait
        are due again once the caller releases them (`Store.release_waiting`)."""
        paused = self.paused_reason is not None and self.clock() < self.resume_at
        reason = self.paused_reason if paused else None
        if reason is not None:
            log.info("Route resumed by the operator.", extra={"route": self.route})
        self.paused_reason = None
        self.resume_at = 0.0
        self._wake.set()
        return reason

    def _credentials_paused(self, now: float) -> bool:
        return self.paused_reason is not None and now < self.resume_at

    def _pause_sleep(self, now: float, delay: float) -> float:
        """`delay` cut, while the route is paused, to the time of its next store check."""
        if not self._credentials_paused(now):
            return delay
        due = self._resume_checked + self.settings.resume_check - now
        return min(delay, max(due, self.settings.poll_interval))

    async def _resumed_elsewhere(self, now: float) -> bool:
        """While paused, and at most every `resume_check` seconds: if the store says another
        process resumed the route after its pause began, lift the pause as `resume` does,
        make the held rows due now and return True."""
        if not self._credentials_paused(now):
            return False
        if now - self._resume_checked < self.settings.resume_check:
            return False
        self._resume_checked = now
        try:
            found = await self.store.resumed_since([self.route], self.paused_at)
        except Exception as exc:  # the store's trouble: the pause holds, the next check retries
            if not self._resume_check_failed:
                log.warning(
                    "Could not read resumes from the store; the route stays paused meanwhile.",
                    extra={"route": self.route, "error": type(exc).__name__},
                )
            self._resume_check_failed = True
            return False
        self._resume_check_failed = False
        if self.route not in found:
            return False
        self.resume()
        await self.store.release_waiting(self.route, now)
        return True
