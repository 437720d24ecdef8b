"""The visitor-profile part of the store contract (`ProfileStore`): merges, lookups by visitor
or key, cross-device links, erasure and expiry."""

from __future__ import annotations

import asyncio

from contract import LEASE, T0, ContractSuite, ev

from gateway.core.profile import MAX_LINKED_VISITORS, ProfileUpdate, VisitorProfile
from gateway.store.base import (
    AppendResult,
    EraseResult,
    GatewayStore,
    Identity,
    NewEvent,
    ProfileQuery,
)

EM = "e" * 64
XID = "f" * 64


class ProfileContract(ContractSuite[GatewayStore]):
    """Contract of the visitor-profile half of a backend (`ProfileStore`)."""

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
