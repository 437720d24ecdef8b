"""The shared-resume part of the store contract (`Store.lift_pause` / `resumed_since`): an
operator's resume recorded by one process and read by every other one sharing the store."""

from __future__ import annotations

from collections.abc import Callable

from contract import T0, ContractSuite

from gateway.store.base import Store


class PauseContract(ContractSuite[Store]):
    """Contract of shared resumes: subclass, override make_store."""

    async def test_a_resume_reads_back_after_the_pause_began(self, store: Store) -> None:
        await store.lift_pause("shop:meta", T0)
        assert await store.resumed_since(["shop:meta"], T0 - 10) == {"shop:meta": T0}
        assert await store.resumed_since(["shop:meta"], T0) == {}  # not after: still paused
        assert await store.resumed_since(["shop:meta"], T0 + 1) == {}

    async def test_unknown_routes_and_no_routes_give_nothing(self, store: Store) -> None:
        assert await store.resumed_since(["shop:meta"], 0.0) == {}
        await store.lift_pause("shop:meta", T0)
        assert await store.resumed_since(["shop:tiktok", "other:meta"], 0.0) == {}
        assert await store.resumed_since([], 0.0) == {}

    async def test_the_newest_resume_wins_whatever_the_order(self, store: Store) -> None:
        await store.lift_pause("shop:meta", T0 + 5)
        await store.lift_pause("shop:meta", T0)  # a late write of an older resume
        await store.lift_pause("shop:tiktok", T0)
        await store.lift_pause("shop:tiktok", T0 + 9)
        found = await store.resumed_since(["shop:meta", "shop:tiktok", "shop:x"], T0 + 1)
        assert found == {"shop:meta": T0 + 5, "shop:tiktok": T0 + 9}

    async def test_another_store_on_the_same_storage_sees_the_resume(
        self, make_store: Callable[[], Store]
    ) -> None:
        """Two processes (workers or replicas) on one storage, then a restarted one."""
        first, second = make_store(), make_store()
        await first.open()
        await second.open()
        try:
            await first.lift_pause("shop:meta", T0)
            assert await second.resumed_since(["shop:meta"], T0 - 1) == {"shop:meta": T0}
        finally:
            await second.close()
            await first.close()
        third = make_store()
        await third.open()
        try:  # durable: a restarted process still finds it
            assert await third.resumed_since(["shop:meta"], T0 - 1) == {"shop:meta": T0}
        finally:
            await third.close()
