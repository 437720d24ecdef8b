"""The contract every `Store` backend passes, in suites of one idea each, and what they share.

The suites: `contract_outbox.StoreContract` (the outbox, with its dedup part
`contract_dedup.DedupContract`), `contract_profiles.ProfileContract` (visitor profiles),
`contract_orders.OrderContract` (the order ledger), `contract_stats.StatsContract` (stats
rollups), `contract_dead.DeadLetterContract` (dead letters) and `contract_pauses.PauseContract`
(operator resumes shared by every process). A backend's test module subclasses each and provides
`make_store` (store_backends.py: `OnSqlite`, `OnPostgres`).

`make_store` is a fixture returning a factory of *unopened* stores that all share the same
underlying storage (so `reopen` tests can close one store and open a fresh one on the same data).
Tests here speak only the `gateway.store.base` protocol and pass `now` explicitly, so they are
deterministic and clock-free.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Generic, TypeVar

import pytest

from gateway.store.base import Delivery, NewEvent, Store

StoreFactory = Callable[[], Store]

T0 = 1_700_000_000.0
LEASE = 30.0

S = TypeVar("S", bound=Store)


def ev(
    event_id: str,
    *routes: str,
    name: str = "Purchase",
    site: str = "shop",
    record: bytes | None = None,
) -> NewEvent:
    """A NewEvent for the given routes (default one route "shop:meta")."""
    return NewEvent(
        site=site,
        event_name=name,
        event_id=event_id,
        event_time=T0 - 5,
        record=record if record is not None else f'{{"id":"{event_id}"}}'.encode(),
        routes=routes or ("shop:meta",),
    )


def ids_of(deliveries: Sequence[Delivery]) -> list[int]:
    return [d.id for d in deliveries]


class ContractSuite(Generic[S]):
    """Base class of the contract suites; a backend's test class subclasses a suite."""

    @pytest.fixture
    def make_store(self) -> Callable[[], S]:
        """Return a factory of unopened stores sharing one storage. Subclasses override."""
        raise NotImplementedError("a backend's test class must provide make_store")

    @pytest.fixture
    async def store(self, make_store: Callable[[], S]) -> AsyncIterator[S]:
        store = make_store()
        await store.open()
        try:
            yield store
        finally:
            await store.close()
