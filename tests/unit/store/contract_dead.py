"""The dead-letter part of the store contract: evidence, the filtered listing and replay.

Subclass `DeadLetterContract` and override `make_store` (a factory of unopened GatewayStores),
as for `contract_outbox.StoreContract`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from contract import LEASE, T0, ContractSuite, ev

from gateway.store.base import (
    DeadEvidence,
    DeadQuery,
    DeadReason,
    DeliveryState,
    GatewayStore,
    ReplaySelection,
)

DeadStoreFactory = Callable[[], GatewayStore]
ROUTE = "shop:meta"


async def dead_rows(
    store: GatewayStore,
    reasons: Sequence[DeadReason],
    *,
    route: str = ROUTE,
    first: int = 0,
    at: float = T0,
) -> list[int]:
    """Append one event per reason, lease them and give each up with its reason (at `at` + i);
    return the delivery ids in order."""
    events = [ev(f"{route}-{first + i}", route) for i in range(len(reasons))]
    await store.append(events, at)
    leased = await store.lease(route, len(reasons), at, LEASE)
    assert len(leased) == len(reasons)
    for i, (row, reason) in enumerate(zip(leased, reasons, strict=True)):
        evidence = {row.id: DeadEvidence(400, f"HTTP 400: bad {i}", b'{"data":[{"n":%d}]}' % i)}
        await store.mark_dead([row.id], reason, f"detail {i}", at + i, evidence=evidence)
    return [row.id for row in leased]


class DeadLetterContract(ContractSuite[GatewayStore]):
    async def test_a_dead_letter_keeps_what_was_sent_and_the_answer(
        self, store: GatewayStore
    ) -> None:
        (a, b) = await dead_rows(store, [DeadReason.INVALID_FIELD, DeadReason.TOO_OLD])
        page = await store.dead_page(DeadQuery(route=ROUTE))
        assert [d.info.id for d in page.letters] == [a, b]
        first = page.letters[0]
        assert first.info.reason == "invalid_field: detail 0"
        assert first.info.state is DeliveryState.DEAD
        assert first.event_time == T0 - 5
        assert first.evidence == DeadEvidence(400, "HTTP 400: bad 0", b'{"data":[{"n":0}]}')
        assert page.next_after is None

    async def test_a_late_mark_keeps_no_evidence_for_a_row_it_did_not_kill(
        self, store: GatewayStore
    ) -> None:
        await store.append([ev("x")], T0)
        (row,) = await store.lease(ROUTE, 1, T0, LEASE)
        await store.mark_done([row.id], T0)
        evidence = {row.id: DeadEvidence(400, "late", b"{}")}
        await store.mark_dead([row.id], DeadReason.INTERNAL, "late", T0, evidence=evidence)
        assert (await store.dead_page(DeadQuery())).letters == ()

    async def test_filters_and_pages(self, store: GatewayStore) -> None:
        reasons = [DeadReason.INVALID_FIELD, DeadReason.PLATFORM_REJECTED] * 5
        meta = await dead_rows(store, reasons, at=T0)
        other = await dead_rows(store, [DeadReason.INVALID_FIELD], route="shop:tiktok", at=T0)
        everything = await store.dead_page(DeadQuery(limit=50))
        assert [d.info.id for d in everything.letters] == sorted([*meta, *other])
        invalid = await store.dead_page(DeadQuery(route=ROUTE, reason="invalid_field"))
        assert [d.info.id for d in invalid.letters] == meta[0::2]
        late = await store.dead_page(DeadQuery(route=ROUTE, since=T0 + 7))
        assert [d.info.id for d in late.letters] == meta[7:]
        # Pages of 3 in id order; the cursor of the last page is None.
        seen: list[int] = []
        after, pages = 0, 0
        while True:
            page = await store.dead_page(DeadQuery(route=ROUTE, after=after, limit=3))
            seen += [d.info.id for d in page.letters]
            pages += 1
            if page.next_after is None:
                break
            after = page.next_after
        assert seen == meta
        assert pages == 4
        assert (await store.dead_page(DeadQuery(route="shop:none"))).letters == ()

    async def test_replay_by_ids_makes_rows_pending_due_now_and_is_idempotent(
        self, store: GatewayStore
    ) -> None:
        a, b, c = await dead_rows(store, [DeadReason.INVALID_FIELD] * 3)
        result = await store.replay(ReplaySelection(ROUTE, ids=(a, c, 999_999)), T0 + 10)
        assert (result.replayed, result.skipped, result.remaining) == (2, 1, 0)
        leased = await store.lease(ROUTE, 10, T0 + 10, LEASE)
        assert [r.id for r in leased] == [a, c]
        assert all(r.attempts == 0 for r in leased)
        await store.mark_done([a, c], T0 + 11)
        again = await store.replay(ReplaySelection(ROUTE, ids=(a, c)), T0 + 12)
        assert (again.replayed, again.skipped) == (0, 2)  # delivered since: nothing to send
        assert await store.lease(ROUTE, 10, T0 + 12, LEASE) == []
        (left,) = (await store.dead_page(DeadQuery(route=ROUTE))).letters
        assert left.info.id == b
        assert left.evidence is not None

    async def test_replay_of_a_route_in_pages_with_a_reason(self, store: GatewayStore) -> None:
        reasons = [DeadReason.INVALID_FIELD, DeadReason.PLATFORM_REJECTED] * 5
        ids = await dead_rows(store, reasons)
        await dead_rows(store, [DeadReason.INVALID_FIELD], route="shop:tiktok")
        first = await store.replay(ReplaySelection(ROUTE, reason="invalid_field", limit=3), T0 + 20)
        assert (first.replayed, first.remaining, first.last_id) == (3, 2, ids[4])
        second = await store.replay(
            ReplaySelection(ROUTE, reason="invalid_field", after=ids[4], limit=3), T0 + 20
        )
        assert (second.replayed, second.remaining, second.last_id) == (2, 0, ids[8])
        left = await store.dead_page(DeadQuery(limit=50))
        assert {d.info.route for d in left.letters if d.info.reason.startswith("invalid")} == {
            "shop:tiktok"
        }
        assert len(left.letters) == 6  # 5 platform_rejected + the other route's
        rest = await store.replay(ReplaySelection(ROUTE), T0 + 21)
        assert (rest.replayed, rest.remaining) == (5, 0)
        nothing = await store.replay(ReplaySelection(ROUTE), T0 + 22)
        assert (nothing.replayed, nothing.remaining, nothing.last_id) == (0, 0, None)

    async def test_consent_and_erasure_dead_letters_are_never_replayed(
        self, store: GatewayStore
    ) -> None:
        ids = await dead_rows(
            store, [DeadReason.CONSENT_DENIED, DeadReason.ERASED, DeadReason.AUTH]
        )
        by_ids = await store.replay(ReplaySelection(ROUTE, ids=tuple(ids)), T0 + 5)
        assert (by_ids.replayed, by_ids.skipped) == (1, 2)
        every = await store.replay(ReplaySelection(ROUTE), T0 + 5)
        assert every.replayed == 0
        assert [r.id for r in await store.lease(ROUTE, 10, T0 + 5, LEASE)] == [ids[2]]

    async def test_erasure_blanks_dead_letters_and_their_evidence(
        self, store: GatewayStore
    ) -> None:
        record = b'{"u":{"vid":"v1"}}'
        await store.append([ev("e1", record=record)], T0)
        (row,) = await store.lease(ROUTE, 1, T0, LEASE)
        evidence = {row.id: DeadEvidence(400, "bad", b'{"em":"hash"}')}
        await store.mark_dead([row.id], DeadReason.INVALID_FIELD, "x", T0, evidence=evidence)
        await store.erase("shop", visitor_id="v1", keys=(), now=T0 + 1)
        (letter,) = (await store.dead_page(DeadQuery())).letters
        assert letter.info.reason is not None
        assert letter.info.reason.startswith("erased")
        assert letter.evidence is None
        assert (await store.replay(ReplaySelection(ROUTE, ids=(row.id,)), T0 + 2)).replayed == 0
