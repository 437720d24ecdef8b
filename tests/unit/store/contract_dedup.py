"""The dedup part of the outbox contract (`Store.append` and `Store.compact`): a key is taken
once within the window, and is free again once the window passes or compaction drops it.

Behaviour pinned down here beyond the protocol's docstrings:

* Dedup is per (route, event_name, event_id) with the window `dedup_seconds` of the store the
  factory builds (48 h by default); a key seen exactly `dedup_seconds` ago is accepted again.
"""

from __future__ import annotations

from contract import LEASE, T0, ContractSuite, ev, ids_of

from gateway.store.base import AppendResult, DeliveryState, Store


class DedupContract(ContractSuite[Store]):
    """Dedup of the outbox; `contract_outbox.StoreContract` runs it with the rest."""

    dedup_seconds: float = 172800.0
    """The dedup window of the stores `make_store` builds."""

    async def test_dedup_within_window(self, store: Store) -> None:
        assert await store.append([ev("a", "shop:meta", "shop:ga4")], T0) == [AppendResult(2, 0)]
        results = await store.append(
            [ev("a", "shop:ga4", "shop:tiktok"), ev("a", name="Lead"), ev("b")], T0 + 60
        )
        assert results == [AppendResult(1, 1), AppendResult(1, 0), AppendResult(1, 0)]
        # duplicates inside one call are caught too
        assert await store.append([ev("z"), ev("z")], T0 + 61) == [
            AppendResult(1, 0),
            AppendResult(0, 1),
        ]
        counts = await store.counts()
        assert counts[("shop:meta", DeliveryState.PENDING)] == 4
        assert counts[("shop:ga4", DeliveryState.PENDING)] == 1
        assert counts[("shop:tiktok", DeliveryState.PENDING)] == 1

    async def test_a_partial_duplicate_names_the_routes_it_was_skipped_on(
        self, store: Store
    ) -> None:
        await store.append([ev("a", "shop:meta", "shop:ga4")], T0)
        [partial] = await store.append([ev("a", "shop:ga4", "shop:tiktok", "shop:meta")], T0 + 1)
        assert (partial.created, partial.deduplicated) == (1, 2)
        assert sorted(partial.duplicates) == ["shop:ga4", "shop:meta"]
        [whole] = await store.append([ev("a", "shop:meta")], T0 + 2)
        assert (whole.created, whole.deduplicated) == (0, 1)  # all or none: no list needed

    async def test_dedup_survives_delivery(self, store: Store) -> None:
        await store.append([ev("a")], T0)
        leased = await store.lease("shop:meta", 10, T0, LEASE)
        await store.mark_done(ids_of(leased), T0 + 1)
        assert await store.append([ev("a")], T0 + 3600) == [AppendResult(0, 1)]

    async def test_dedup_window_expires(self, store: Store) -> None:
        window = self.dedup_seconds
        await store.append([ev("a")], T0)
        assert await store.append([ev("a")], T0 + window - 1) == [AppendResult(0, 1)]
        assert await store.append([ev("a")], T0 + window) == [AppendResult(1, 0)]
        # the key now counts from its new first sighting
        assert await store.append([ev("a")], T0 + window + 10) == [AppendResult(0, 1)]
        leased = await store.lease("shop:meta", 10, T0 + window + 10, LEASE)
        assert [d.event_id for d in leased] == ["a", "a"]
        assert leased[1].created_at == T0 + window

    async def test_compact_drops_old_dedup_keys(self, store: Store) -> None:
        await store.append([ev("a"), ev("b", "shop:meta", "shop:ga4")], T0)
        assert await store.compact(T0 + 100, keep_done_seconds=0, dedup_seconds=3600) == 0
        assert await store.compact(T0 + 3601, keep_done_seconds=0, dedup_seconds=3600) == 3
        # the key is gone, so the same event is accepted again although the store window is 48 h
        assert await store.append([ev("a")], T0 + 3602) == [AppendResult(1, 0)]
        leased = await store.lease("shop:meta", 10, T0 + 3602, LEASE)
        assert [d.event_id for d in leased] == ["a", "b", "a"]
