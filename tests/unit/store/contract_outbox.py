"""The outbox part of the store contract (`Store`): append, lease, marks, compaction, and
its dedup part (`contract_dedup.DedupContract`), which `StoreContract` runs with the rest.

Behaviour pinned down here beyond the protocol's docstrings:

* `mark_done` / `mark_retry` / `mark_dead` change only rows that are currently leased; other ids
  are ignored (a late worker must not resurrect a done or dead row).
* Pending rows are due at any `now`; retry rows when `now >= at`; leased rows when
  `now >= lease_until`.
* `compact` returns delivery rows plus dedup keys deleted.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from contract import LEASE, T0, ContractSuite, StoreFactory, ev, ids_of
from contract_dedup import DedupContract

from gateway.store.base import (
    AppendResult,
    DeadReason,
    DeliveryState,
    NewEvent,
    Store,
)

ALL_STATES = tuple(DeliveryState)


class OutboxReadContract(ContractSuite[Store]):
    """What the outbox tells about its rows: recent deliveries, the backlog, the counts, and
    compaction (which keeps the counts)."""

    async def test_recent_newest_first_and_route_filter(self, store: Store) -> None:
        await store.append([ev("a"), ev("b", "shop:ga4"), ev("c")], T0)
        meta = await store.lease("shop:meta", 10, T0 + 1, LEASE)
        await store.mark_done([meta[1].id], T0 + 5)
        recent = await store.recent(10)
        assert recent[0].event_id == "c"
        assert recent[0].state is DeliveryState.DONE
        assert recent[0].updated_at == T0 + 5
        assert {r.event_id for r in recent} == {"a", "b", "c"}
        assert [r.updated_at for r in recent] == sorted(
            (r.updated_at for r in recent), reverse=True
        )
        assert len(await store.recent(2)) == 2
        assert [r.event_id for r in await store.recent(10, route="shop:ga4")] == ["b"]

    # -- backlog (outbox depth for /metrics) -----------------------------------------------------

    async def test_backlog_counts_waiting_rows_and_their_oldest_append(self, store: Store) -> None:
        await store.append([ev("a"), ev("b", "shop:meta", "shop:ga4")], T0)
        await store.append([ev("c"), ev("d")], T0 + 10)
        leased = await store.lease("shop:meta", 2, T0 + 20, LEASE)  # a and b
        await store.mark_done([leased[0].id], T0 + 21)  # a delivered: not waiting any more
        backlog = await store.backlog(["shop:meta", "shop:ga4", "shop:none"], 1000)
        assert backlog["shop:meta"] == (3, T0)  # b (leased), c and d
        assert backlog["shop:ga4"] == (1, T0)
        assert backlog["shop:none"] == (0, None)
        later = await store.lease("shop:meta", 10, T0 + 30, LEASE)
        assert [d.event_id for d in later] == ["c", "d"]  # b's lease has not expired
        await store.mark_retry([later[0].id], T0 + 99, "later", T0 + 31)
        await store.mark_dead([later[1].id], DeadReason.AUTH, "no", T0 + 31)
        # b (leased) and c (retry) wait; d is dead
        assert (await store.backlog(["shop:meta"], 1000))["shop:meta"] == (2, T0)
        leased = await store.lease("shop:meta", 10, T0 + 60, LEASE)  # b again (lease expired)
        await store.mark_done([d.id for d in leased if d.event_id == "b"], T0 + 61)
        assert (await store.backlog(["shop:meta"], 1000))["shop:meta"] == (1, T0 + 10)
        capped = await store.backlog(["shop:meta", "shop:ga4"], 1)
        assert capped["shop:meta"].depth == 1
        assert await store.backlog([], 10) == {}

    async def test_backlog_reads_at_most_the_limit(self, store: Store) -> None:
        await store.append([ev(f"e{i}") for i in range(50)], T0)
        assert (await store.backlog(["shop:meta"], 20))["shop:meta"].depth == 20
        assert (await store.backlog(["shop:meta"], 100))["shop:meta"].depth == 50

    # -- compaction ----------------------------------------------------------------------------

    async def test_compact_removes_old_done_rows_but_counts_keep_them(self, store: Store) -> None:
        await store.append([ev(f"e{i}") for i in range(6)], T0)
        rows = await store.lease("shop:meta", 10, T0, LEASE)
        await store.mark_done(ids_of(rows[:2]), T0 + 10)
        await store.mark_done(ids_of(rows[2:3]), T0 + 500)
        await store.mark_dead(ids_of(rows[3:4]), DeadReason.AUTH, "x", T0 + 10)
        await store.mark_retry(ids_of(rows[4:5]), T0 + 10_000, "later", T0 + 10)
        await store.mark_done(ids_of(rows[5:]), T0 + 900)
        before = await store.counts()

        deleted = await store.compact(T0 + 1000, keep_done_seconds=600, dedup_seconds=1e9)
        assert deleted == 2
        assert await store.counts() == before
        assert await store.compact(T0 + 1000, keep_done_seconds=600, dedup_seconds=1e9) == 0
        assert await store.compact(T0 + 2000, keep_done_seconds=600, dedup_seconds=1e9) == 2
        assert await store.counts() == before
        assert before[("shop:meta", DeliveryState.DONE)] == 4

        visible = {r.event_id for r in await store.recent(100)}
        assert visible == {"e3", "e4"}
        assert [d.reason for d in await store.dead_letters("shop:meta", 10)] == ["auth: x"]
        # rows in other states are untouched and still work
        (retry,) = await store.lease("shop:meta", 10, T0 + 10_000, LEASE)
        assert retry.event_id == "e4"
        assert retry.record == b'{"id":"e4"}'
        await store.mark_done([retry.id], T0 + 10_001)
        counts = await store.counts()
        assert counts[("shop:meta", DeliveryState.DONE)] == 5
        assert ("shop:meta", DeliveryState.RETRY) not in counts


class StoreContract(DedupContract, OutboxReadContract):
    """Base class of the contract tests; a backend's test module subclasses it: a row's life
    (append, lease, marks), the counts under random operations, concurrency and reopening,
    plus the dedup and read contracts."""

    # -- append & lease ------------------------------------------------------------------------

    async def test_append_then_lease_returns_rows_once(self, store: Store) -> None:
        record = b'{"value": 1.5}\x00\xff'
        results = await store.append(
            [ev("a", record=record), ev("b"), ev("c", "shop:meta", "shop:ga4")], T0
        )
        assert results == [AppendResult(1, 0), AppendResult(1, 0), AppendResult(2, 0)]

        leased = await store.lease("shop:meta", 10, T0 + 1, LEASE)
        assert [d.event_id for d in leased] == ["a", "b", "c"]
        first = leased[0]
        assert first.route == "shop:meta"
        assert first.event_name == "Purchase"
        assert first.event_time == T0 - 5
        assert first.record == record
        assert first.attempts == 0
        assert first.created_at == T0
        assert len(set(ids_of(leased))) == 3

        assert await store.lease("shop:meta", 10, T0 + 1, LEASE) == []
        ga4 = await store.lease("shop:ga4", 10, T0 + 1, LEASE)
        assert [d.event_id for d in ga4] == ["c"]
        assert ga4[0].id not in ids_of(leased)

    async def test_empty_inputs(self, store: Store) -> None:
        assert await store.append([], T0) == []
        no_routes = NewEvent("shop", "Lead", "y", T0, b"{}", ())
        assert await store.append([no_routes], T0) == [AppendResult(0, 0)]
        assert await store.lease("shop:meta", 0, T0, LEASE) == []
        await store.mark_done([], T0)
        await store.mark_retry([], T0, "x", T0)
        await store.mark_dead([], DeadReason.INTERNAL, "x", T0)
        assert await store.recent(0) == []
        assert await store.dead_letters("shop:meta", 0) == []

    async def test_lease_respects_limit_route_and_age(self, store: Store) -> None:
        await store.append([ev(f"m{i}") for i in range(5)], T0)
        await store.append([ev(f"g{i}", "shop:ga4") for i in range(2)], T0)

        first = await store.lease("shop:meta", 3, T0, LEASE)
        assert [d.event_id for d in first] == ["m0", "m1", "m2"]
        rest = await store.lease("shop:meta", 10, T0, LEASE)
        assert [d.event_id for d in rest] == ["m3", "m4"]
        assert await store.lease("shop:nope", 10, T0, LEASE) == []
        ga4 = await store.lease("shop:ga4", 10, T0, LEASE)
        assert [d.event_id for d in ga4] == ["g0", "g1"]
        assert all(d.route == "shop:ga4" for d in ga4)

    async def test_expired_lease_comes_back(self, store: Store) -> None:
        await store.append([ev("a"), ev("b")], T0)
        leased = await store.lease("shop:meta", 10, T0, LEASE)
        assert len(leased) == 2
        assert await store.lease("shop:meta", 10, T0 + LEASE - 0.5, LEASE) == []
        again = await store.lease("shop:meta", 10, T0 + LEASE, LEASE)
        assert ids_of(again) == ids_of(leased)
        assert [d.attempts for d in again] == [0, 0]
        # the new lease runs from the new `now`
        assert await store.lease("shop:meta", 10, T0 + LEASE + 1, LEASE) == []
        third = await store.lease("shop:meta", 10, T0 + 2 * LEASE, LEASE)
        assert ids_of(third) == ids_of(leased)

    # -- marks ---------------------------------------------------------------------------------

    async def test_mark_done_is_final(self, store: Store) -> None:
        await store.append([ev("a"), ev("b")], T0)
        leased = await store.lease("shop:meta", 10, T0, LEASE)
        await store.mark_done([leased[0].id], T0 + 1)
        later = await store.lease("shop:meta", 10, T0 + 10 * LEASE, LEASE)
        assert ids_of(later) == [leased[1].id]
        counts = await store.counts()
        assert counts.get(("shop:meta", DeliveryState.DONE)) == 1
        assert counts.get(("shop:meta", DeliveryState.LEASED)) == 1

    async def test_mark_retry_hides_until_at_and_counts_attempts(self, store: Store) -> None:
        await store.append([ev("a"), ev("b")], T0)
        a, b = await store.lease("shop:meta", 10, T0, LEASE)
        await store.mark_retry([a.id], T0 + 100, "http_503", T0 + 1)
        await store.mark_retry([b.id], T0 + 100, "paused", T0 + 1, count_attempt=False)

        assert await store.lease("shop:meta", 10, T0 + 99, LEASE) == []
        back = await store.lease("shop:meta", 10, T0 + 100, LEASE)
        assert ids_of(back) == [a.id, b.id]
        assert [d.attempts for d in back] == [1, 0]

        await store.mark_retry([a.id, b.id], T0 + 200, "http_503", T0 + 101)
        again = await store.lease("shop:meta", 10, T0 + 250, LEASE)
        assert [d.attempts for d in again] == [2, 1]

        info = {i.id: i for i in await store.recent(10)}
        assert info[a.id].state is DeliveryState.LEASED
        assert info[a.id].attempts == 2

    async def test_release_waiting_makes_one_routes_retry_rows_due_now(self, store: Store) -> None:
        await store.append([ev("a", "shop:meta", "shop:ga4"), ev("b"), ev("c")], T0)
        meta = await store.lease("shop:meta", 10, T0, LEASE)
        ga4 = await store.lease("shop:ga4", 10, T0, LEASE)
        a, b, c = meta
        await store.mark_retry([a.id, b.id], T0 + 500, "http_503", T0 + 1)
        await store.mark_done([c.id], T0 + 1)
        await store.mark_retry([g.id for g in ga4], T0 + 500, "http_503", T0 + 1)

        assert await store.release_waiting("shop:meta", T0 + 2) == 2
        back = await store.lease("shop:meta", 10, T0 + 2, LEASE)
        assert ids_of(back) == [a.id, b.id]
        assert [d.attempts for d in back] == [1, 1]  # the wait itself counts no attempt
        assert await store.lease("shop:ga4", 10, T0 + 2, LEASE) == []  # other routes keep theirs
        assert await store.release_waiting("shop:meta", T0 + 3) == 0  # leased/done rows stay

    async def test_retry_reason_visible(self, store: Store) -> None:
        await store.append([ev("a")], T0)
        (a,) = await store.lease("shop:meta", 10, T0, LEASE)
        await store.mark_retry([a.id], T0 + 60, "http_503", T0 + 1)
        (info,) = await store.recent(5)
        assert info.state is DeliveryState.RETRY
        assert info.reason is not None
        assert "http_503" in info.reason
        assert info.updated_at == T0 + 1

    async def test_mark_dead_keeps_reason(self, store: Store) -> None:
        await store.append([ev("a"), ev("b"), ev("c", "shop:ga4")], T0)
        a, b = await store.lease("shop:meta", 10, T0, LEASE)
        (c,) = await store.lease("shop:ga4", 10, T0, LEASE)
        await store.mark_dead([a.id], DeadReason.INVALID_FIELD, "currency must be ISO 4217", T0 + 1)
        await store.mark_dead([b.id], DeadReason.TOO_OLD, "older than 7 days", T0 + 2)
        await store.mark_dead([c.id], DeadReason.AUTH, "bad token", T0 + 3)

        dead = await store.dead_letters("shop:meta", 10)
        assert [d.id for d in dead] == [b.id, a.id]  # newest first
        assert dead[1].reason == "invalid_field: currency must be ISO 4217"
        assert dead[1].state is DeliveryState.DEAD
        assert dead[1].event_id == "a"
        assert dead[1].event_name == "Purchase"
        assert dead[1].route == "shop:meta"
        assert [d.id for d in await store.dead_letters("shop:meta", 1)] == [b.id]
        assert [d.id for d in await store.dead_letters("shop:ga4", 10)] == [c.id]

        recent = await store.recent(10, route="shop:meta")
        assert [r.id for r in recent] == [b.id, a.id]
        assert recent[1].reason == "invalid_field: currency must be ISO 4217"
        assert await store.lease("shop:meta", 10, T0 + 10 * LEASE, LEASE) == []

    async def test_marks_ignore_rows_not_leased(self, store: Store) -> None:
        await store.append([ev("a"), ev("b"), ev("c")], T0)
        a, b, c = await store.lease("shop:meta", 10, T0, LEASE)
        await store.mark_done([a.id], T0 + 1)
        await store.mark_dead([b.id], DeadReason.PLATFORM_REJECTED, "no", T0 + 1)
        await store.mark_retry([c.id], T0 + 1000, "http_503", T0 + 1)
        before = await store.counts()

        # late workers: none of these rows is leased any more
        await store.mark_retry([a.id, b.id], T0 + 2, "late", T0 + 2)
        await store.mark_dead([a.id, c.id], DeadReason.INTERNAL, "late", T0 + 2)
        await store.mark_done([b.id, c.id, 10**9], T0 + 2)
        assert await store.counts() == before
        (dead,) = await store.dead_letters("shop:meta", 10)
        assert dead.reason == "platform_rejected: no"

        # a pending row is not leased either
        await store.append([ev("d")], T0 + 3)
        await store.mark_done([c.id + 1000], T0 + 3)
        assert [x.event_id for x in await store.lease("shop:meta", 10, T0 + 3, LEASE)] == ["d"]

    # -- invariants under random operations ----------------------------------------------------

    @pytest.mark.parametrize("seed", [1, 2, 3])
    async def test_counts_match_a_model_under_random_operations(
        self, store: Store, seed: int
    ) -> None:
        rng = random.Random(seed)
        routes = ("s:a", "s:b", "s:c")
        now = T0
        created: Counter[str] = Counter()
        known: dict[int, tuple[str, DeliveryState, float]] = {}  # id -> route, state, due
        dedup_keys: set[tuple[str, str]] = set()  # time stays far inside the dedup window
        for _ in range(160):
            op = rng.choice(["append", "append", "lease", "lease", "mark", "mark", "tick", "gc"])
            if op == "append":
                events = [
                    ev(f"e{rng.randrange(60)}", *rng.sample(routes, rng.randint(1, 3)))
                    for _ in range(rng.randint(1, 4))
                ]
                expected_results = []
                for event in events:
                    fresh = [r for r in event.routes if (r, event.event_id) not in dedup_keys]
                    dedup_keys.update((r, event.event_id) for r in fresh)
                    created.update(fresh)
                    expected_results.append(
                        AppendResult(len(fresh), len(event.routes) - len(fresh))
                    )
                assert await store.append(events, now) == expected_results
            elif op == "lease":
                route = rng.choice(routes)
                leased = await store.lease(route, rng.randint(1, 5), now, LEASE)
                for d in leased:
                    assert d.route == route
                    if d.id in known:
                        _, state, due = known[d.id]
                        assert state in (DeliveryState.RETRY, DeliveryState.LEASED)
                        assert due <= now
                    known[d.id] = (route, DeliveryState.LEASED, now + LEASE)
            elif op == "mark" and known:
                chosen = rng.sample(sorted(known), min(len(known), rng.randint(1, 3)))
                kind = rng.choice(["done", "retry", "dead"])
                if kind == "done":
                    await store.mark_done(chosen, now)
                    new, due = DeliveryState.DONE, float("inf")
                elif kind == "retry":
                    due = now + rng.choice([0.0, 5.0, 50.0])
                    await store.mark_retry(chosen, due, "r", now, count_attempt=rng.random() < 0.5)
                    new = DeliveryState.RETRY
                else:
                    await store.mark_dead(chosen, DeadReason.INTERNAL, "d", now)
                    new, due = DeliveryState.DEAD, float("inf")
                for i in chosen:
                    route, state, _ = known[i]
                    if state is DeliveryState.LEASED:
                        known[i] = (route, new, due)
            elif op == "tick":
                now += rng.choice([1.0, 10.0, LEASE])
            elif op == "gc":
                await store.compact(
                    now, keep_done_seconds=rng.choice([0.0, 20.0]), dedup_seconds=1e9
                )

            expected: Counter[tuple[str, DeliveryState]] = Counter()
            for route, state, _ in known.values():
                expected[(route, state)] += 1
            for route in routes:
                seen = sum(1 for r, _, _ in known.values() if r == route)
                expected[(route, DeliveryState.PENDING)] += created[route] - seen
            counts = await store.counts()
            assert {k: v for k, v in counts.items() if v} == {
                k: v for k, v in expected.items() if v
            }
            for route in routes:
                assert sum(counts.get((route, s), 0) for s in ALL_STATES) == created[route]

    # -- concurrency & persistence -------------------------------------------------------------

    async def test_concurrent_appends_all_land(self, store: Store) -> None:
        async def one(i: int) -> list[AppendResult]:
            return await store.append([ev(f"c{i}", "shop:meta", "shop:ga4")], T0)

        results = await asyncio.gather(*(one(i) for i in range(500)))
        assert all(r == [AppendResult(2, 0)] for r in results)
        counts = await store.counts()
        assert counts[("shop:meta", DeliveryState.PENDING)] == 500
        assert counts[("shop:ga4", DeliveryState.PENDING)] == 500
        leased = await store.lease("shop:meta", 1000, T0, LEASE)
        assert sorted(d.event_id for d in leased) == sorted(f"c{i}" for i in range(500))

    async def test_concurrent_leases_never_share_a_row(self, store: Store) -> None:
        await store.append([ev(f"e{i}") for i in range(200)], T0)
        batches = await asyncio.gather(*(store.lease("shop:meta", 7, T0, LEASE) for _ in range(40)))
        ids = [i for batch in batches for i in ids_of(batch)]
        assert len(ids) == 200
        assert len(set(ids)) == 200

    async def test_reopen_keeps_everything(self, make_store: StoreFactory) -> None:
        first = make_store()
        await first.open()
        try:
            await first.append([ev(f"e{i}") for i in range(5)], T0)
            rows = await first.lease("shop:meta", 3, T0, LEASE)
            await first.mark_done([rows[0].id], T0 + 1)
            await first.mark_dead([rows[1].id], DeadReason.INVALID_FIELD, "bad value", T0 + 1)
            await first.mark_retry([rows[2].id], T0 + 50, "http_503", T0 + 1)
            counts = await first.counts()
        finally:
            await first.close()

        second = make_store()
        await second.open()
        try:
            await second.ping()
            assert await second.counts() == counts
            (dead,) = await second.dead_letters("shop:meta", 10)
            assert dead.reason == "invalid_field: bad value"
            assert await second.append([ev("e0")], T0 + 2) == [AppendResult(0, 1)]
            due = await second.lease("shop:meta", 10, T0 + 50, LEASE)
            assert [(d.event_id, d.attempts) for d in due] == [("e2", 1), ("e3", 0), ("e4", 0)]
            assert due[1].record == b'{"id":"e3"}'
        finally:
            await second.close()

    async def test_ping(self, store: Store) -> None:
        await store.ping()
        await store.ping()
