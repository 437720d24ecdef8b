"""The contract every `Store` backend passes: subclass `StoreContract`, override `make_store`.

`make_store` is a fixture returning a factory of *unopened* stores that all share the same
underlying storage (so `reopen` tests can close one store and open a fresh one on the same data).
Tests here speak only the `gateway.store.base` protocol and pass `now` explicitly, so they are
deterministic and clock-free.

Behaviour pinned down here beyond the protocol's docstrings:

* `mark_done` / `mark_retry` / `mark_dead` change only rows that are currently leased; other ids
  are ignored (a late worker must not resurrect a done or dead row).
* Pending rows are due at any `now`; retry rows when `now >= at`; leased rows when
  `now >= lease_until`.
* Dedup is per (route, event_name, event_id) with the window `dedup_seconds` of the store the
  factory builds (48 h by default); a key seen exactly `dedup_seconds` ago is accepted again.
* `compact` returns delivery rows plus dedup keys deleted.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from gateway.core.orders import Fate, OrderEntry
from gateway.core.profile import MAX_LINKED_VISITORS, ProfileUpdate, VisitorProfile
from gateway.core.rollup import StatRow
from gateway.store.base import (
    AppendResult,
    DeadReason,
    Delivery,
    DeliveryState,
    EraseResult,
    GatewayStore,
    Identity,
    NewEvent,
    ProfileQuery,
    StatsQuery,
    Store,
)

StoreFactory = Callable[[], Store]

T0 = 1_700_000_000.0
LEASE = 30.0
ALL_STATES = tuple(DeliveryState)


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


class StoreContract:
    """Base class of the contract tests; a backend's test module subclasses it."""

    dedup_seconds: float = 172800.0
    """The dedup window of the stores `make_store` builds."""

    @pytest.fixture
    def make_store(self) -> StoreFactory:
        """Return a factory of unopened stores sharing one storage. Subclasses override."""
        raise NotImplementedError("a backend's test class must provide make_store")

    @pytest.fixture
    async def store(self, make_store: StoreFactory) -> AsyncIterator[Store]:
        store = make_store()
        await store.open()
        try:
            yield store
        finally:
            await store.close()

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

    # -- dedup ---------------------------------------------------------------------------------

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

    async def test_compact_drops_old_dedup_keys(self, store: Store) -> None:
        await store.append([ev("a"), ev("b", "shop:meta", "shop:ga4")], T0)
        assert await store.compact(T0 + 100, keep_done_seconds=0, dedup_seconds=3600) == 0
        assert await store.compact(T0 + 3601, keep_done_seconds=0, dedup_seconds=3600) == 3
        # the key is gone, so the same event is accepted again although the store window is 48 h
        assert await store.append([ev("a")], T0 + 3602) == [AppendResult(1, 0)]
        leased = await store.lease("shop:meta", 10, T0 + 3602, LEASE)
        assert [d.event_id for d in leased] == ["a", "b", "a"]

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


# -- visitor profiles ----------------------------------------------------------------------------

EM = "e" * 64
XID = "f" * 64


class ProfileContract:
    """Contract of the visitor-profile half of a backend (`ProfileStore`)."""

    @pytest.fixture
    def make_store(self) -> Callable[[], GatewayStore]:
        """Return a factory of unopened stores sharing one storage. Subclasses override."""
        raise NotImplementedError("a backend's test class must provide make_store")

    @pytest.fixture
    async def store(self, make_store: Callable[[], GatewayStore]) -> AsyncIterator[GatewayStore]:
        store = make_store()
        await store.open()
        try:
            yield store
        finally:
            await store.close()

    async def test_touch_creates_then_merges(self, store: GatewayStore) -> None:
        first = await store.touch_profile(
            "shop", "v1", ProfileUpdate(click_ids={"fbclid": "A"}, ip="1.1.1.1"), T0
        )
        assert first.first_seen == T0
        second = await store.touch_profile(
            "shop",
            "v1",
            ProfileUpdate(
                click_ids={"fbclid": "A", "gclid": "G"}, browser_ids={"_fbp": "fb.1.1.2"}
            ),
            T0 + 10,
        )
        assert second.first_seen == T0
        assert second.last_seen == T0 + 10
        assert second.click_ids["fbclid"] == ("A", T0)
        assert second.click_ids["gclid"] == ("G", T0 + 10)
        assert second.ip == "1.1.1.1"
        assert second.browser_ids == {"_fbp": "fb.1.1.2"}

    async def test_new_click_id_value_takes_new_time(self, store: GatewayStore) -> None:
        await store.touch_profile("shop", "v1", ProfileUpdate(click_ids={"fbclid": "A"}), T0)
        p = await store.touch_profile(
            "shop", "v1", ProfileUpdate(click_ids={"fbclid": "B"}), T0 + 5
        )
        assert p.click_ids["fbclid"] == ("B", T0 + 5)

    async def test_touch_and_append_enriches_from_the_touched_profile(
        self, store: GatewayStore
    ) -> None:
        await store.touch_profile("shop", "v1", ProfileUpdate(click_ids={"fbclid": "A"}), T0)
        seen: list[dict[str, tuple[str, float]]] = []

        def events_for(profile: VisitorProfile) -> list[NewEvent]:
            seen.append(dict(profile.click_ids))
            return [ev("hit-1", record=f'{{"fbclid":"{profile.click_ids["fbclid"][0]}"}}'.encode())]

        profile, results = await store.touch_and_append(
            "shop", "v1", ProfileUpdate(click_ids={"gclid": "G"}), T0 + 1, events_for
        )
        assert seen == [{"fbclid": ("A", T0), "gclid": ("G", T0 + 1)}]  # after this hit's merge
        assert profile.click_ids == seen[0]
        assert results == [AppendResult(1, 0)]
        (lease,) = await store.lease("shop:meta", 10, T0 + 10, LEASE)
        assert (lease.event_id, lease.record) == ("hit-1", b'{"fbclid":"A"}')
        _, again = await store.touch_and_append(
            "shop", "v1", ProfileUpdate(), T0 + 2, lambda p: [ev("hit-1")]
        )
        assert again == [AppendResult(0, 1)]  # deduplicated like any append
        _, none = await store.touch_and_append("shop", "v2", ProfileUpdate(), T0 + 2, lambda p: [])
        assert none == []
        (v2,) = await store.find_profiles("shop", [ProfileQuery(visitor_id="v2")])
        assert v2 is not None  # the touch happened even with nothing to append

    async def test_concurrent_touches_lose_nothing(self, store: GatewayStore) -> None:
        await asyncio.gather(
            *(
                store.touch_profile("shop", "v1", ProfileUpdate(browser_ids={f"c{i}": str(i)}), T0)
                for i in range(50)
            )
        )
        (found,) = await store.find_profiles("shop", [ProfileQuery(visitor_id="v1")])
        assert found is not None
        assert len(found.browser_ids) == 50

    async def test_find_by_visitor_or_lookup_key_and_sites_are_separate(
        self, store: GatewayStore
    ) -> None:
        hashed = {"meta": {"em": (EM,), "external_id": (XID,)}}
        await store.touch_profile("shop", "v1", ProfileUpdate(hashed=hashed), T0)
        found = await store.find_profiles(
            "shop",
            [
                ProfileQuery(visitor_id="v1"),
                ProfileQuery(keys=(f"em:{EM}",)),
                ProfileQuery(keys=("em:nope", f"external_id:{XID}")),
                ProfileQuery(visitor_id="missing"),
            ],
        )
        assert [p.visitor_id if p else None for p in found] == ["v1", "v1", "v1", None]
        (other,) = await store.find_profiles("other", [ProfileQuery(keys=(f"em:{EM}",))])
        assert other is None

    async def test_erase_removes_profile_and_undelivered_events(self, store: GatewayStore) -> None:
        hashed = {"meta": {"em": (EM,)}}
        await store.touch_profile("shop", "v1", ProfileUpdate(hashed=hashed), T0)
        carrying = b'{"id":"a","u":{"vid":"v1"}}'
        by_email = f'{{"id":"b","u":{{"h":{{"meta":{{"em":["{EM}"]}}}}}}}}'.encode()
        other = b'{"id":"c","u":{"vid":"v2"}}'
        await store.append(
            [ev("a", record=carrying), ev("b", record=by_email), ev("c", record=other)], T0
        )
        result = await store.erase("shop", visitor_id=None, keys=[f"em:{EM}"], now=T0 + 1)
        assert result == EraseResult(profiles=1, deliveries=2)
        assert await store.find_profiles("shop", [ProfileQuery(visitor_id="v1")]) == [None]
        leased = await store.lease("shop:meta", 10, T0 + 2, LEASE)
        assert [d.event_id for d in leased] == ["c"]
        dead = await store.dead_letters("shop:meta", 10)
        assert {d.event_id for d in dead} == {"a", "b"}
        assert all((d.reason or "").startswith("erased") for d in dead)

    async def test_expire_profiles_by_last_seen(self, store: GatewayStore) -> None:
        await store.touch_profile("shop", "old", ProfileUpdate(), T0)
        await store.touch_profile("shop", "new", ProfileUpdate(), T0 + 100)
        assert await store.expire_profiles(T0 + 150, 100) == 1
        found = await store.find_profiles(
            "shop", [ProfileQuery(visitor_id="old"), ProfileQuery(visitor_id="new")]
        )
        assert [p.visitor_id if p else None for p in found] == [None, "new"]

    # -- cross-device links (every visitor a lookup key was seen with) -------------------------

    @staticmethod
    def linked_ids(identity: Identity) -> list[str]:
        return sorted(p.visitor_id for p in identity.linked)

    async def test_a_key_links_every_visitor_it_was_seen_with(self, store: GatewayStore) -> None:
        em = {"meta": {"em": (EM,)}}
        await store.touch_profile("shop", "phone", ProfileUpdate(hashed=em), T0)
        await store.touch_profile("shop", "laptop", ProfileUpdate(hashed=em), T0 + 10)
        await store.touch_profile("shop", "tablet", ProfileUpdate(), T0 + 20)
        await store.touch_profile("other", "elsewhere", ProfileUpdate(hashed=em), T0)
        by_key, by_named, by_both, unknown = await store.find_identities(
            "shop",
            [
                ProfileQuery(keys=(f"em:{EM}",)),
                ProfileQuery(visitor_id="laptop"),  # its own keys lead to the phone
                ProfileQuery(visitor_id="tablet", keys=(f"em:{EM}",)),
                ProfileQuery(visitor_id="nobody", keys=("em:nope",)),
            ],
        )
        assert by_key.named is None
        assert self.linked_ids(by_key) == ["laptop", "phone"]
        assert by_named.named is not None
        assert by_named.named.visitor_id == "laptop"
        assert self.linked_ids(by_named) == ["phone"]
        assert by_both.named is not None
        assert self.linked_ids(by_both) == ["laptop", "phone"]
        assert unknown == Identity(None, ())
        assert await store.find_identities("shop", []) == []

    async def test_a_key_keeps_only_its_most_recent_visitors(self, store: GatewayStore) -> None:
        em = {"meta": {"em": (EM,)}}
        extra = 5
        for i in range(MAX_LINKED_VISITORS + extra):
            await store.touch_profile("shop", f"v{i:02d}", ProfileUpdate(hashed=em), T0 + i)
        (identity,) = await store.find_identities("shop", [ProfileQuery(keys=(f"em:{EM}",))])
        expected = [f"v{i:02d}" for i in range(extra, MAX_LINKED_VISITORS + extra)]
        assert self.linked_ids(identity) == expected
        # Seen again with the key, an old visitor is recent again; the oldest link now goes.
        await store.touch_profile("shop", "v00", ProfileUpdate(hashed=em), T0 + 100)
        (identity,) = await store.find_identities("shop", [ProfileQuery(keys=(f"em:{EM}",))])
        assert self.linked_ids(identity) == ["v00", *expected[1:]]
        # A profile merged without the key (a page view) does not refresh the link's time.
        await store.touch_profile("shop", f"v{extra + 1:02d}", ProfileUpdate(), T0 + 200)
        await store.touch_profile("shop", "new", ProfileUpdate(hashed=em), T0 + 300)
        (identity,) = await store.find_identities("shop", [ProfileQuery(keys=(f"em:{EM}",))])
        assert f"v{extra + 1:02d}" not in self.linked_ids(identity)
        assert len(identity.linked) == MAX_LINKED_VISITORS

    async def test_links_expire_with_their_profiles(self, store: GatewayStore) -> None:
        em = {"meta": {"em": (EM,)}}
        await store.touch_profile("shop", "old", ProfileUpdate(hashed=em), T0)
        await store.touch_profile("shop", "new", ProfileUpdate(hashed=em), T0 + 100)
        assert await store.expire_profiles(T0 + 150, 100) == 1
        (identity,) = await store.find_identities("shop", [ProfileQuery(keys=(f"em:{EM}",))])
        assert self.linked_ids(identity) == ["new"]
        # A visitor whose profile expired and comes back is linked afresh, not resurrected.
        await store.touch_profile("shop", "old", ProfileUpdate(), T0 + 200)
        (identity,) = await store.find_identities("shop", [ProfileQuery(visitor_id="new")])
        assert self.linked_ids(identity) == []
        assert await store.expire_profiles(T0 + 1000, 100) == 2
        (identity,) = await store.find_identities("shop", [ProfileQuery(keys=(f"em:{EM}",))])
        assert identity == Identity(None, ())

    async def test_erasing_a_key_removes_every_visitor_linked_to_it(
        self, store: GatewayStore
    ) -> None:
        em = {"meta": {"em": (EM,)}}
        both = {"meta": {"em": (EM,), "external_id": (XID,)}}
        await store.touch_profile("shop", "phone", ProfileUpdate(hashed=em), T0)
        await store.touch_profile("shop", "laptop", ProfileUpdate(hashed=both), T0 + 1)
        await store.touch_profile("shop", "stranger", ProfileUpdate(), T0 + 2)
        result = await store.erase("shop", visitor_id=None, keys=[f"em:{EM}"], now=T0 + 3)
        assert result.profiles == 2
        found = await store.find_identities(
            "shop",
            [
                ProfileQuery(keys=(f"em:{EM}",)),
                ProfileQuery(keys=(f"external_id:{XID}",)),
                ProfileQuery(visitor_id="stranger"),
            ],
        )
        assert found[0] == Identity(None, ())
        assert found[1] == Identity(None, ())  # the erased visitor's other keys went too
        assert found[2].named is not None
        # Erasing one visitor removes its links; the key still finds the others.
        await store.touch_profile("shop", "a", ProfileUpdate(hashed=em), T0 + 4)
        await store.touch_profile("shop", "b", ProfileUpdate(hashed=em), T0 + 5)
        await store.erase("shop", visitor_id="a", keys=(), now=T0 + 6)
        (identity,) = await store.find_identities("shop", [ProfileQuery(keys=(f"em:{EM}",))])
        assert self.linked_ids(identity) == ["b"]


# -- the order ledger (OrderStore) -------------------------------------------------------------


def order(
    order_id: str,
    routes: tuple[str, ...] = ("shop:meta",),
    *,
    denied: tuple[str, ...] = (),
    away: tuple[str, ...] = (),
    event_id: str | None = None,
    site: str = "shop",
    email: bool = True,
) -> OrderEntry:
    """A ledger entry of a Purchase whose event id is the order id (unless given), sent to the
    `routes` not `denied` or routed `away`."""
    return OrderEntry(
        site,
        order_id,
        event_id or order_id,
        "Purchase",
        T0 - 5,
        routes,
        denied,
        away,
        email,
        True,
        True,
    )


def loader_record(event_id: str) -> bytes:
    return f'{{"id":"{event_id}","ch":"loader"}}'.encode()


class OrderContract:
    """Contract of the order-ledger half of a backend (`OrderStore`)."""

    @pytest.fixture
    def make_store(self) -> Callable[[], GatewayStore]:
        """Return a factory of unopened stores sharing one storage. Subclasses override."""
        raise NotImplementedError("a backend's test class must provide make_store")

    @pytest.fixture
    async def store(self, make_store: Callable[[], GatewayStore]) -> AsyncIterator[GatewayStore]:
        store = make_store()
        await store.open()
        try:
            yield store
        finally:
            await store.close()

    async def test_each_fate_is_read_back_with_its_delivery_state(
        self, store: GatewayStore
    ) -> None:
        routes = ("shop:meta", "shop:tiktok")
        results = await store.append_orders(
            [ev("o1", *routes), ev("o2", "shop:meta")],
            [
                order("o1", routes),
                order("o2", routes, away=("shop:tiktok",)),
                order("o3", routes, denied=routes, email=False),
            ],
            T0,
        )
        assert results == [AppendResult(2, 0), AppendResult(1, 0)]
        meta = await store.lease("shop:meta", 10, T0, LEASE)
        by_id = {d.event_id: d.id for d in meta}
        await store.mark_done([by_id["o1"]], T0 + 1)
        await store.mark_dead([by_id["o2"]], DeadReason.INVALID_FIELD, "bad value", T0 + 1)
        tiktok = await store.lease("shop:tiktok", 10, T0, LEASE)
        await store.mark_retry(ids_of(tiktok), T0 + 60, "HTTP 503", T0 + 1)

        rows = await store.order_rows("shop", T0 - 10, T0, 100)
        got = {(r.order_id, r.route): r for r in rows}
        assert set(got) == {(o, r) for o in ("o1", "o2", "o3") for r in routes}
        assert got["o1", "shop:meta"].state == "done"
        assert got["o1", "shop:meta"].updated_at == T0 + 1
        dead = got["o2", "shop:meta"]
        assert (dead.state, dead.reason) == ("dead", "invalid_field: bad value")
        waiting = got["o1", "shop:tiktok"]
        assert (waiting.state, waiting.attempts, waiting.not_before) == ("retry", 1, T0 + 60)
        assert waiting.reason == "HTTP 503"
        assert got["o2", "shop:tiktok"].fate == "routed_away"
        assert got["o2", "shop:tiktok"].state is None
        denied = got["o3", "shop:meta"]
        assert (denied.fate, denied.state, denied.has_email) == ("consent_denied", None, False)
        assert got["o1", "shop:meta"].has_email
        assert got["o1", "shop:meta"].has_value
        assert not any(r.paired for r in rows)

    async def test_period_site_and_limit_bound_the_rows(self, store: GatewayStore) -> None:
        await store.append_orders((), [order("a", denied=("shop:meta",))], T0)
        await store.append_orders(
            (), [order("b", ("other:meta",), denied=("other:meta",), site="other")], T0
        )
        assert [r.order_id for r in await store.order_rows("shop", T0 - 5, T0, 10)] == ["a"]
        assert await store.order_rows("shop", T0 - 4, T0, 10) == []  # since is inclusive only
        assert await store.order_rows("shop", T0 - 10, T0 - 5, 10) == []  # until is exclusive
        assert await store.order_rows("shop", T0 - 10, T0, 0) == []
        assert [r.order_id for r in await store.order_rows("other", 0, T0, 10)] == ["b"]

    async def test_a_ledger_with_no_events_appends_nothing(self, store: GatewayStore) -> None:
        assert await store.append_orders((), [order("x", away=("shop:meta",))], T0) == []
        assert await store.lease("shop:meta", 10, T0, LEASE) == []
        # the same row again is kept once
        await store.append_orders((), [order("x", away=("shop:meta",))], T0)
        assert len(await store.order_rows("shop", 0, T0, 10)) == 1

    async def test_a_deduplicated_order_follows_the_copy_that_holds_its_delivery(
        self, store: GatewayStore
    ) -> None:
        """The browser's copy came first: the backend's order is deduplicated into it, is
        paired, and is delivered when that copy is."""
        browser = NewEvent("shop", "Purchase", "p1", T0 - 5, loader_record("p1"), ("shop:meta",))
        await store.append([browser], T0)
        results = await store.append_orders([ev("p1")], [order("p1")], T0 + 1)
        assert results == [AppendResult(0, 1)]
        (row,) = await store.order_rows("shop", 0, T0, 10)
        assert row.paired
        assert row.state == "pending"
        (leased,) = await store.lease("shop:meta", 10, T0 + 2, LEASE)
        await store.mark_done([leased.id], T0 + 3)
        (row,) = await store.order_rows("shop", 0, T0, 10)
        assert row.state == "done"

    async def test_a_browser_copy_arriving_later_pairs_the_order(self, store: GatewayStore) -> None:
        await store.append_orders([ev("p2")], [order("p2")], T0)
        (row,) = await store.order_rows("shop", 0, T0, 10)
        assert not row.paired
        browser = NewEvent("shop", "Purchase", "p2", T0 - 5, loader_record("p2"), ("shop:meta",))
        assert await store.append([browser], T0 + 1) == [AppendResult(0, 1)]
        (row,) = await store.order_rows("shop", 0, T0, 10)
        assert row.paired

    async def test_the_ledger_expires_with_the_outbox_memory(self, store: GatewayStore) -> None:
        await store.append_orders([ev("old")], [order("old")], T0)
        await store.append_orders([ev("new")], [order("new")], T0 + 100)
        await store.compact(T0 + 150, keep_done_seconds=100, dedup_seconds=10)
        assert [r.order_id for r in await store.order_rows("shop", 0, T0 + 1, 10)] == ["new"]

    async def test_an_order_stays_delivered_after_its_row_is_compacted(
        self, store: GatewayStore
    ) -> None:
        await store.append_orders([ev("d1"), ev("d2")], [order("d1")], T0)
        leased = await store.lease("shop:meta", 10, T0, LEASE)
        await store.mark_done(ids_of(leased), T0 + 1)
        assert await store.compact(T0 + 200, keep_done_seconds=100, dedup_seconds=1000) >= 2
        assert await store.recent(10) == []
        (row,) = await store.order_rows("shop", 0, T0, 10)
        assert (row.order_id, row.state, row.updated_at) == ("d1", "done", T0 + 1)

    async def test_a_deduplicated_order_stays_delivered_after_the_copy_is_compacted(
        self, store: GatewayStore
    ) -> None:
        """The order's delivery is held by the browser copy it was deduplicated into; when
        that copy's delivered row is compacted, the order keeps its delivery time."""
        browser = NewEvent("shop", "Purchase", "c1", T0 - 5, loader_record("c1"), ("shop:meta",))
        await store.append([browser], T0)
        await store.append_orders([ev("c1")], [order("c1")], T0 + 1)
        (leased,) = await store.lease("shop:meta", 10, T0 + 2, LEASE)
        await store.mark_done([leased.id], T0 + 3)
        assert await store.compact(T0 + 200, keep_done_seconds=100, dedup_seconds=1000) >= 1
        assert await store.recent(10) == []
        (row,) = await store.order_rows("shop", 0, T0, 10)
        assert (row.state, row.updated_at, row.paired) == ("done", T0 + 3, True)

    async def test_an_entry_reads_back_one_row_per_route_and_the_limit_counts_rows(
        self, store: GatewayStore
    ) -> None:
        routes = ("shop:tiktok", "shop:meta", "shop:snap")
        await store.append_orders(
            [ev("r1", "shop:tiktok", "shop:meta"), ev("r2", "shop:meta")],
            [
                order("r1", routes, denied=("shop:snap",)),
                order("r2", routes, away=("shop:tiktok",), denied=("shop:snap",)),
            ],
            T0,
        )
        rows = await store.order_rows("shop", 0, T0, 100)
        assert [(r.order_id, r.route, r.fate, r.state) for r in rows] == [
            ("r1", "shop:meta", Fate.SENT.value, "pending"),
            ("r1", "shop:snap", Fate.CONSENT_DENIED.value, None),
            ("r1", "shop:tiktok", Fate.SENT.value, "pending"),
            ("r2", "shop:meta", Fate.SENT.value, "pending"),
            ("r2", "shop:snap", Fate.CONSENT_DENIED.value, None),
            ("r2", "shop:tiktok", Fate.ROUTED_AWAY.value, None),
        ]
        assert await store.order_rows("shop", 0, T0, 4) == rows[:4]
        # the same order event again (a retried request) is kept once
        await store.append_orders([ev("r1", "shop:tiktok", "shop:meta")], [order("r1")], T0 + 1)
        assert await store.order_rows("shop", 0, T0, 100) == rows

    async def test_erasure_removes_the_orders_of_the_erased_events(
        self, store: GatewayStore
    ) -> None:
        digest = "a" * 64
        record = (
            f'{{"id":"e1","u":{{"h":{{"meta":{{"em":["{digest}"]}}}}}},"d":{{"order_id":"e1"}}}}'
        ).encode()
        await store.append_orders(
            [ev("e1", "shop:meta", record=record), ev("e2")],
            [
                order("e1", ("shop:meta", "shop:tiktok"), denied=("shop:tiktok",)),
                order("e2"),
            ],
            T0,
        )
        erased = await store.erase("shop", visitor_id=None, keys=[f"em:{digest}"], now=T0 + 1)
        assert erased.deliveries == 1
        assert [r.order_id for r in await store.order_rows("shop", 0, T0, 10)] == ["e2"]


# -- per-minute stats rollups (StatsStore, issue #12 item 2) ------------------------------------

M0 = 1_700_000_040
"""A minute start (divisible by 60)."""


def stat(minute: int, metric: str, value: int, **key: str) -> StatRow:
    """A StatRow of site "shop", destination "meta" and event "Purchase" unless `key` says."""
    return StatRow(
        minute,
        key.get("site", "shop"),
        key.get("destination", "meta"),
        key.get("event", "Purchase"),
        metric,
        key.get("detail", ""),
        value,
    )


class StatsContract:
    """Contract of the stats half of a backend (`StatsStore`): subclass, override make_store."""

    @pytest.fixture
    def make_store(self) -> Callable[[], GatewayStore]:
        raise NotImplementedError("a backend's test class must provide make_store")

    @pytest.fixture
    async def store(self, make_store: Callable[[], GatewayStore]) -> AsyncIterator[GatewayStore]:
        store = make_store()
        await store.open()
        try:
            yield store
        finally:
            await store.close()

    async def test_rows_read_back_per_minute_and_writes_add_up(self, store: GatewayStore) -> None:
        await store.write_stats([stat(M0, "delivered", 2), stat(M0 + 60, "delivered", 1)])
        await store.write_stats([stat(M0, "delivered", 3)])  # a second flush of the same minute
        await store.write_stats([])
        rows = await store.read_stats(StatsQuery(M0, M0 + 120))
        assert rows == [stat(M0, "delivered", 5), stat(M0 + 60, "delivered", 1)]

    async def test_the_range_is_half_open(self, store: GatewayStore) -> None:
        await store.write_stats([stat(M0 + 60 * i, "queued", i + 1) for i in range(4)])
        rows = await store.read_stats(StatsQuery(M0 + 60, M0 + 180))
        assert [(r.minute, r.value) for r in rows] == [(M0 + 60, 2), (M0 + 120, 3)]
        assert await store.read_stats(StatsQuery(M0 + 60, M0 + 60)) == []

    async def test_steps_sum_minutes_from_the_range_start(self, store: GatewayStore) -> None:
        await store.write_stats([stat(M0 + 60 * i, "queued", 1 << i) for i in range(5)])
        rows = await store.read_stats(StatsQuery(M0, M0 + 360, step=120))
        assert [(r.minute, r.value) for r in rows] == [(M0, 3), (M0 + 120, 12), (M0 + 240, 16)]

    async def test_site_and_destination_filters(self, store: GatewayStore) -> None:
        received = stat(M0, "received", 7, destination="", event="", detail="backend")
        await store.write_stats(
            [
                stat(M0, "delivered", 1),
                stat(M0, "delivered", 2, destination="tiktok"),
                stat(M0, "delivered", 4, site="blog"),
                received,
                stat(M0, "dead", 1, detail="invalid_field"),
            ]
        )
        every = await store.read_stats(StatsQuery(M0, M0 + 60))
        assert len(every) == 5
        shop = await store.read_stats(StatsQuery(M0, M0 + 60, site="shop"))
        assert {(r.destination, r.metric, r.value) for r in shop} == {
            ("meta", "delivered", 1),
            ("tiktok", "delivered", 2),
            ("", "received", 7),
            ("meta", "dead", 1),
        }
        meta = await store.read_stats(StatsQuery(M0, M0 + 60, site="shop", destination="meta"))
        assert sorted(meta) == sorted(
            [stat(M0, "delivered", 1), received, stat(M0, "dead", 1, detail="invalid_field")]
        )
        assert await store.read_stats(StatsQuery(M0, M0 + 60, site="nowhere")) == []
        picked = await store.read_stats(StatsQuery(M0, M0 + 60, metrics=("dead", "received")))
        assert sorted(picked) == sorted([stat(M0, "dead", 1, detail="invalid_field"), received])

    async def test_compact_deletes_the_minutes_before(self, store: GatewayStore) -> None:
        await store.write_stats(
            [stat(M0 + 60 * i, "queued", 1) for i in range(3)]
            + [stat(M0, "delivered", 1, destination="tiktok")]
        )
        assert await store.compact_stats(M0 + 60) == 2
        assert await store.compact_stats(M0 + 60) == 0
        rows = await store.read_stats(StatsQuery(M0 - 600, M0 + 600))
        assert [(r.minute, r.value) for r in rows] == [(M0 + 60, 1), (M0 + 120, 1)]

    async def test_reopen_keeps_the_stats(self, make_store: Callable[[], GatewayStore]) -> None:
        first = make_store()
        await first.open()
        try:
            await first.write_stats([stat(M0, "delivered", 3)])
        finally:
            await first.close()
        second = make_store()
        await second.open()
        try:
            await second.write_stats([stat(M0, "delivered", 1)])
            assert await second.read_stats(StatsQuery(M0, M0 + 60)) == [stat(M0, "delivered", 4)]
        finally:
            await second.close()

    # -- the dedup_pair booking (book_pairs): once whatever the number of processes -----------

    @staticmethod
    async def duplicates(store: GatewayStore, name: str, copies: int) -> None:
        """Append `copies` copies of one event: `copies - 1` "api+api" duplicates at meta."""
        for i in range(copies):
            await store.append([ev(name)], T0 + i)

    @staticmethod
    def pairs(n: int, minute: int = M0) -> StatRow:
        return stat(minute, "dedup_pair", n, event="", detail="api+api")

    async def test_the_first_booking_takes_the_counters_as_they_are(
        self, store: GatewayStore
    ) -> None:
        await self.duplicates(store, "before", 3)  # 2 duplicates before any booking
        assert await store.unbooked_pairs(M0, M0 - 3600) == []
        assert await store.book_pairs(M0, M0 - 3600) == []  # the reference: nothing booked
        await self.duplicates(store, "after", 4)  # 3 more
        assert await store.unbooked_pairs(M0 + 60, M0) == [self.pairs(3, M0 + 60)]
        assert await store.unbooked_pairs(M0 + 60, M0) == [self.pairs(3, M0 + 60)]  # a read
        assert await store.book_pairs(M0 + 60, M0) == [self.pairs(3, M0 + 60)]
        assert await store.book_pairs(M0 + 120, M0) == []
        assert await store.unbooked_pairs(M0 + 120, M0) == []
        rows = await store.read_stats(StatsQuery(M0 - 600, M0 + 600, metrics=("dedup_pair",)))
        assert rows == [self.pairs(3, M0 + 60)]
        assert sorted((await store.dedup_counts()).items()) == [(("shop:meta", "api+api"), 5)]

    async def test_a_stale_copy_is_only_replaced(self, store: GatewayStore) -> None:
        await store.book_pairs(M0, M0 - 3600)
        await self.duplicates(store, "a", 2)
        # the last booking (M0) is before stale_before: nobody booked for too long
        assert await store.unbooked_pairs(M0 + 7200, M0 + 60) == []
        assert await store.book_pairs(M0 + 7200, M0 + 60) == []
        await self.duplicates(store, "b", 2)
        assert await store.book_pairs(M0 + 7260, M0 + 60) == [self.pairs(1, M0 + 7260)]
        # a booking of an earlier minute (another process' clock) keeps the later time
        assert await store.book_pairs(M0 + 7200, M0 + 7230) == []
        await self.duplicates(store, "c", 2)
        assert await store.book_pairs(M0 + 7320, M0 + 7260) == [self.pairs(1, M0 + 7320)]

    async def test_two_stores_on_one_storage_book_each_duplicate_once(
        self, make_store: Callable[[], GatewayStore]
    ) -> None:
        """Two processes on the same file / database flush after the same duplicates, at
        once and in turns: the figure is the number of duplicates, not twice it."""
        a, b = make_store(), make_store()
        await a.open()
        await b.open()
        try:
            await asyncio.gather(a.book_pairs(M0, M0 - 3600), b.book_pairs(M0, M0 - 3600))
            sent = 0
            for round_ in range(6):
                minute = M0 + 60 * (round_ + 1)
                await self.duplicates(a if round_ % 2 else b, f"o{round_}", round_ + 2)
                sent += round_ + 1
                booked = await asyncio.wait_for(
                    asyncio.gather(a.book_pairs(minute, M0), b.book_pairs(minute, M0)), 30
                )
                # exactly one of the two found the increase
                assert sorted(len(rows) for rows in booked) == [0, 1], booked
                assert sum(r.value for rows in booked for r in rows) == round_ + 1
            await self.duplicates(a, "late", 2)  # booked by whichever flushes next
            assert await b.book_pairs(M0 + 600, M0) == [self.pairs(1, M0 + 600)]
            assert await a.book_pairs(M0 + 600, M0) == []
            sent += 1
            rows = await a.read_stats(StatsQuery(M0, M0 + 3600, 3600, metrics=("dedup_pair",)))
            assert rows == [self.pairs(sent)]
            assert await b.read_stats(StatsQuery(M0, M0 + 3600, 3600)) == rows
        finally:
            await a.close()
            await b.close()

    async def test_a_restart_books_nothing_twice(
        self, make_store: Callable[[], GatewayStore]
    ) -> None:
        first = make_store()
        await first.open()
        try:
            await first.book_pairs(M0, M0 - 3600)
            await self.duplicates(first, "a", 3)
            assert await first.book_pairs(M0 + 60, M0) == [self.pairs(2, M0 + 60)]
            await self.duplicates(first, "b", 2)  # not booked before the stop
        finally:
            await first.close()
        second = make_store()
        await second.open()
        try:
            # the new process' first booking books what the old one left, and only that
            assert await second.book_pairs(M0 + 120, M0) == [self.pairs(1, M0 + 120)]
            assert await second.book_pairs(M0 + 180, M0) == []
            rows = await second.read_stats(StatsQuery(M0, M0 + 3600, 3600))
            assert rows == [self.pairs(3)]
        finally:
            await second.close()
