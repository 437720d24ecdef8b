"""The order-ledger part of the store contract (`OrderStore`): each order's fate and delivery
state, pairing with browser copies, compaction and expiry."""

from __future__ import annotations

from contract import LEASE, T0, ContractSuite, ev, ids_of

from gateway.core.orders import Fate, OrderEntry
from gateway.store.base import (
    AppendResult,
    DeadReason,
    GatewayStore,
    NewEvent,
)


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


class OrderContract(ContractSuite[GatewayStore]):
    """Contract of the order-ledger half of a backend (`OrderStore`)."""

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
