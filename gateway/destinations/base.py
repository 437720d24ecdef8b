"""The Destination protocol, delivery outcomes, and the shared HTTP answer mapping.

A destination is pure: it maps events to one `httpx.Request` (a value object) and classifies
the `httpx.Response`. Only `gateway.delivery.worker` owns a client and sends.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import httpx

from gateway.core.event import Event
from gateway.store.base import DeadReason


@dataclass(frozen=True, slots=True)
class Delivered:
    """The platform accepted the event."""


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again later; `after` is the platform's own wait (Retry-After), if it gave one."""

    reason: str
    after: float | None = None


@dataclass(frozen=True, slots=True)
class Permanent:
    """Give up: resending the same event cannot succeed."""

    reason: DeadReason
    detail: str


@dataclass(frozen=True, slots=True)
class Paused:
    """Credentials or configuration are broken: stop sending to this route until fixed."""

    reason: str


Outcome = Delivered | Retry | Permanent | Paused


@dataclass(frozen=True, slots=True)
class BatchVerdict:
    """The fate of one request: one outcome for all events, or one per event.

    `bisect` means the platform rejected the whole request because of some event in it (Meta
    rejects a batch for one bad event, platforms.md §1.8): the worker splits the batch and
    resends the halves until the bad event stands alone, and `outcome` then applies to it.
    """

    outcome: Outcome
    per_event: tuple[Outcome, ...] | None = None
    bisect: bool = False


class Destination(Protocol):
    """One ad platform's server API, seen as a pure request builder and answer classifier."""

    name: ClassVar[str]
    hash_rules: ClassVar[str]
    """Which normalisation rule set (gateway.core.normalize.RULESETS) its identifiers use."""

    @property
    def max_batch(self) -> int:
        """Return the most events one request may carry."""

    def batch_key(self, event: Event) -> str:
        """Return a key; only events with equal keys may share a request."""

    def validate(self, event: Event) -> str | None:
        """Return why the platform would refuse this event, or None if it can be sent."""

    def too_old(self, event: Event, now: float) -> bool:
        """Return whether the event has left the platform's accepted time window."""

    def build_request(self, events: Sequence[Event]) -> httpx.Request:
        """Return the one HTTP request that delivers these events."""

    def classify(
        self, events: Sequence[Event], response: httpx.Response, now: float
    ) -> BatchVerdict:
        """Return the fate of the events from the platform's answer."""


@runtime_checkable
class UsesClock(Protocol):
    """A destination whose requests carry the time (e.g. a signed OAuth timestamp).

    The app hands it its own clock (`bind_clock`) so that requests use the gateway's time.
    """

    def with_clock(self, clock: Callable[[], float]) -> Destination:
        """Return the same destination, reading the time from `clock`."""


def bind_clock(destination: Destination, clock: Callable[[], float]) -> Destination:
    """Return `destination` using `clock` if its requests carry the time, else unchanged."""
    return destination.with_clock(clock) if isinstance(destination, UsesClock) else destination


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Return the seconds to wait from a Retry-After header (seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - now
    if seconds != seconds:  # NaN
        return None
    return max(0.0, min(seconds, 86400.0))


def default_verdict(response: httpx.Response, now: float) -> BatchVerdict:
    """Map an HTTP status to a verdict the way most APIs mean it.

    2xx delivered; 408, 429 and 5xx (but 501) retry, honouring Retry-After; 401/403 pause the
    route (credentials); any other 4xx is a permanent rejection of something in the batch.
    """
    status = response.status_code
    after = parse_retry_after(response.headers.get("retry-after"), now)
    if 200 <= status < 300:
        return BatchVerdict(Delivered())
    if status in (408, 429) or (status >= 500 and status != 501):
        return BatchVerdict(Retry(f"HTTP {status}", after))
    if status in (401, 403):
        return BatchVerdict(Paused(f"HTTP {status}: credentials refused"))
    return BatchVerdict(Permanent(DeadReason.PLATFORM_REJECTED, f"HTTP {status}"), bisect=True)
