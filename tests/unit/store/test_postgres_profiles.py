"""PostgresStore visitor profiles: the contract on a real PostgreSQL, and what only a shared
database has: two stores (two gateway processes) merging, linking, erasing and expiring the
same visitors at once stay consistent."""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from pathlib import Path

import asyncpg
import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("contract", "contract_profiles")

from contract import LEASE, T0, ev  # noqa: E402
from contract_profiles import EM, ProfileContract  # noqa: E402
from pg_database import index_plan  # noqa: E402
from store_backends import OnPostgres, Pair  # noqa: E402
from store_fixtures import two_stores  # noqa: E402, F401 - a fixture

from gateway.core.jsoncodec import dumps  # noqa: E402
from gateway.core.profile import MAX_LINKED_VISITORS, ProfileUpdate  # noqa: E402
from gateway.store import postgres_profiles  # noqa: E402
from gateway.store.base import AppendResult, ProfileQuery  # noqa: E402
from gateway.store.postgres import PostgresStore  # noqa: E402
from gateway.store.postgres_tx import retrying  # noqa: E402


class TestPostgresProfiles(OnPostgres, ProfileContract):
    pass


def em(i: int) -> dict[str, dict[str, tuple[str, ...]]]:
    return {"meta": {"em": (f"{i:064d}",)}}


async def test_merges_of_one_visitor_on_two_replicas_lose_nothing(two: Pair) -> None:
    updates = [ProfileUpdate(browser_ids={f"c{i}": str(i)}, hashed=em(i % 3)) for i in range(40)]
    await asyncio.wait_for(
        asyncio.gather(
            *(two[i % 2].touch_profile("shop", "v1", u, T0 + i) for i, u in enumerate(updates))
        ),
        timeout=60,
    )
    (found,) = await two[1].find_profiles("shop", [ProfileQuery(visitor_id="v1")])
    assert found is not None
    assert len(found.browser_ids) == 40
    assert found.last_seen == T0 + 39
    assert sorted(found.hashed["meta"]["em"]) == [f"{i:064d}" for i in range(3)]
    for i in range(3):  # each key links the visitor once
        (identity,) = await two[0].find_identities("shop", [ProfileQuery(keys=(f"em:{i:064d}",))])
        assert [p.visitor_id for p in identity.linked] == ["v1"]


async def test_a_key_keeps_its_bound_under_concurrent_links(two: Pair) -> None:
    """Visitors seen with one e-mail on both replicas at once: the links of the key are
    inserted and trimmed one transaction at a time, so exactly the newest remain."""
    n = MAX_LINKED_VISITORS + 15
    order = list(range(n))
    random.Random(7).shuffle(order)
    await asyncio.wait_for(
        asyncio.gather(
            *(
                two[i % 2].touch_profile("shop", f"v{i:02d}", ProfileUpdate(hashed=em(0)), T0 + i)
                for i in order
            )
        ),
        timeout=60,
    )
    (identity,) = await two[0].find_identities("shop", [ProfileQuery(keys=(f"em:{0:064d}",))])
    assert sorted(p.visitor_id for p in identity.linked) == [
        f"v{i:02d}" for i in range(n - MAX_LINKED_VISITORS, n)
    ]


async def test_touch_and_append_on_two_replicas_merges_once_and_appends_once(
    two: Pair,
) -> None:
    async def hit(store: PostgresStore, i: int) -> list[AppendResult]:
        update = ProfileUpdate(click_ids={f"k{i}": "x"})
        _, results = await store.touch_and_append(
            "shop", "v1", update, T0 + i, lambda p: [ev("same-hit")]
        )
        return results

    results = await asyncio.wait_for(
        asyncio.gather(*(hit(two[i % 2], i) for i in range(10))), timeout=60
    )
    firsts = sorted((r[0] for r in results), key=lambda r: r.created)
    assert firsts == [AppendResult(0, 1)] * 9 + [AppendResult(1, 0)]
    (found,) = await two[0].find_profiles("shop", [ProfileQuery(visitor_id="v1")])
    assert found is not None
    assert set(found.click_ids) == {f"k{i}" for i in range(10)}
    assert len(await two[1].lease("shop:meta", 10, T0 + 20, LEASE)) == 1


async def test_links_never_outlive_their_profiles_under_mixed_concurrent_writes(
    pg_dsn: str, two: Pair
) -> None:
    """Merges, erasures and expiries of overlapping visitors and keys on two replicas at once:
    afterwards every link names a stored profile, every profile's keys link it, and no key has
    more than its bound of links."""
    rng = random.Random(11)
    jobs = []
    for step in range(400):
        store = two[step % 2]
        vid = f"v{rng.randrange(5)}"
        kind = rng.random()
        now = T0 + step
        if kind < 0.75:
            update = ProfileUpdate(hashed=em(rng.randrange(40)), browser_ids={"s": str(step)})
            jobs.append(store.touch_profile("shop", vid, update, now))
        elif kind < 0.9:
            jobs.append(store.erase("shop", visitor_id=vid, keys=(), now=now))
        elif kind < 0.95:
            jobs.append(store.erase("shop", visitor_id=None, keys=[f"em:{1:064d}"], now=now))
        else:
            jobs.append(store.expire_profiles(now, 30))
    await asyncio.wait_for(asyncio.gather(*jobs), timeout=120)
    conn = await asyncpg.connect(pg_dsn)
    try:
        orphans = await conn.fetchval(
            "SELECT count(*) FROM profile_links l WHERE NOT EXISTS (SELECT 1 FROM profiles p"
            " WHERE p.site = l.site AND p.visitor_id = l.visitor_id)"
        )
        assert orphans == 0
        widest = await conn.fetchval(
            "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM profile_links"
            " GROUP BY site, key) AS k"
        )
        assert widest <= MAX_LINKED_VISITORS
        stored = [r[0] for r in await conn.fetch("SELECT visitor_id FROM profiles")]
    finally:
        await conn.close()
    found = await two[0].find_profiles("shop", [ProfileQuery(visitor_id=v) for v in stored])
    identities = await two[1].find_identities(
        "shop", [ProfileQuery(keys=(k,)) for p in found if p for k in p.lookup_keys()]
    )
    keyed = [(p.visitor_id, k) for p in found if p for k in p.lookup_keys()]
    for (vid, _key), identity in zip(keyed, identities, strict=True):
        assert vid in {p.visitor_id for p in identity.linked}


async def test_erasure_by_key_on_one_replica_wins_over_merges_on_the_other(two: Pair) -> None:
    """After an erasure of a key returns, no profile that was linked to it remains, even while
    the other replica merged those visitors right up to it."""
    key = f"em:{EM}"
    hashed = {"meta": {"em": (EM,)}}
    for i in range(5):
        await two[0].touch_profile("shop", f"d{i}", ProfileUpdate(hashed=hashed), T0)
    merges = [
        two[1].touch_profile("shop", f"d{i % 5}", ProfileUpdate(browser_ids={"n": str(i)}), T0 + i)
        for i in range(20)
    ]
    erased = asyncio.ensure_future(two[0].erase("shop", visitor_id=None, keys=[key], now=T0 + 50))
    await asyncio.wait_for(asyncio.gather(*merges, erased), timeout=60)
    assert erased.result().profiles >= 1
    (identity,) = await two[1].find_identities("shop", [ProfileQuery(keys=(key,))])
    assert identity.linked == ()
    survivors = [
        p
        for p in await two[1].find_profiles(
            "shop", [ProfileQuery(visitor_id=f"d{i}") for i in range(5)]
        )
        if p is not None
    ]
    assert all(key not in p.lookup_keys() for p in survivors)  # merged after: a new profile


async def test_has_profiles_sees_a_site_another_replica_created_within_seconds(
    two: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(postgres_profiles, "_clock", lambda: clock[0])
    assert not await two[0].has_profiles("shop")
    await two[1].touch_profile("shop", "v1", ProfileUpdate(), T0)
    assert await two[1].has_profiles("shop")  # its own merge: known at once
    assert not await two[0].has_profiles("shop")  # a "no" is trusted for a few seconds
    clock[0] += postgres_profiles.NO_PROFILES_SECONDS + 0.1
    assert await two[0].has_profiles("shop")
    await two[1].erase("shop", visitor_id="v1", keys=(), now=T0 + 1)
    assert await two[0].has_profiles("shop")  # a "yes" stays (profiles come back)


class _Deadlock(asyncpg.exceptions.DeadlockDetectedError):
    pass


async def test_a_transaction_aborted_for_a_deadlock_runs_again(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    calls = 0

    class Tx:
        async def __aenter__(self) -> asyncpg.Connection:
            return conn

        async def __aexit__(self, *exc: object) -> None:
            return None

    async def flaky(c: object) -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise _Deadlock("deadlock detected")
        return 42

    async def refused(c: object) -> int:
        nonlocal calls
        calls += 1
        raise asyncpg.exceptions.UniqueViolationError("duplicate key")

    try:
        assert await retrying(Tx, flaky) == 42
        assert calls == 3
        calls = -10
        with pytest.raises(asyncpg.exceptions.DeadlockDetectedError):
            await retrying(Tx, flaky, attempts=2)
        with pytest.raises(asyncpg.exceptions.UniqueViolationError):
            await retrying(Tx, refused)  # any other refusal is the caller's
    finally:
        await conn.close()


async def test_erasure_finds_records_whatever_characters_the_visitor_id_holds(
    two: Pair,
) -> None:
    odd = 'v"1\\ü'
    record = dumps({"id": "q", "u": {"vid": odd}})
    await two[0].append([ev("q", record=record), ev("r", record=b'{"u":{"vid":"v1"}}')], T0)
    result = await two[1].erase("shop", visitor_id=odd, keys=(), now=T0 + 1)
    assert result.deliveries == 1
    (left,) = await two[0].lease("shop:meta", 10, T0 + 2, LEASE)
    assert left.event_id == "r"


async def test_group_commits_merging_the_same_visitors_in_opposite_orders_all_land(
    two: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    """Each replica merges its hits in groups, several visitors in one transaction; the hits
    reach the two replicas in opposite orders, yet every group locks its visitors in key
    order, so none waits in a circle (nothing is run again) and every merge and every append
    lands once."""
    caplog.set_level(logging.DEBUG, logger="gateway.store.postgres_tx")
    visitors = [f"v{i}" for i in range(6)]

    async def hits(store: PostgresStore, order: list[str], tag: str) -> None:
        await asyncio.gather(
            *(
                store.touch_and_append(
                    "shop",
                    vid,
                    ProfileUpdate(browser_ids={tag: "1"}),
                    T0 + k,
                    lambda p, vid=vid, tag=tag: [ev(f"{vid}-{tag}")],
                )
                for k, vid in enumerate(order)
            )
        )

    rounds = 3
    for r in range(rounds):
        await asyncio.wait_for(
            asyncio.gather(hits(two[0], visitors, f"a{r}"), hits(two[1], visitors[::-1], f"b{r}")),
            timeout=60,
        )
    found = await two[0].find_profiles("shop", [ProfileQuery(visitor_id=v) for v in visitors])
    for profile in found:  # (no lookup keys: their locks would order the two batches)
        assert profile is not None
        assert set(profile.browser_ids) == {f"{t}{r}" for t in "ab" for r in range(rounds)}
    leased = await two[1].lease("shop:meta", 1000, T0 + 100, LEASE)
    assert len(leased) == len(visitors) * 2 * rounds
    assert not [r for r in caplog.records if "running it again" in r.getMessage()]


async def test_identities_read_through_indexes_only(pg_dsn: str) -> None:
    plan = await index_plan(pg_dsn, postgres_profiles._IDENTITIES, "shop", ["v1"], ["em:x"])
    assert "Seq Scan" not in plan, plan
    assert "profile_links_visitor" in plan, plan


async def test_hits_arriving_together_are_merged_and_appended_in_one_group(two: Pair) -> None:
    store = two[0]
    before = store.commits
    hits = 50
    outcomes = await asyncio.gather(
        *(
            store.touch_and_append(
                "shop",
                f"v{i % 10}",
                ProfileUpdate(browser_ids={f"n{i}": "1"}, hashed=em(i % 3)),
                T0 + i,
                lambda p, i=i: [ev(f"hit-{i}"), ev(f"hit-{i}", "shop:tiktok")],
            )
            for i in range(hits)
        )
    )
    assert store.commits - before <= 3  # a handful of group commits, not one per hit
    for i, (profile, results) in enumerate(outcomes):
        assert profile.visitor_id == f"v{i % 10}"
        assert f"n{i}" in profile.browser_ids  # the profile right after its own merge
        assert results == [AppendResult(1, 0), AppendResult(1, 0)]
    (last,) = await two[1].find_profiles("shop", [ProfileQuery(visitor_id="v9")])
    assert last is not None
    assert set(last.browser_ids) == {f"n{i}" for i in range(9, hits, 10)}
    assert len(await two[1].lease("shop:tiktok", 100, T0 + 100, LEASE)) == hits


async def test_a_hit_the_database_refuses_fails_alone(two: Pair) -> None:
    store = two[0]

    async def hit(vid: str) -> object:
        return await store.touch_and_append(
            "shop", vid, ProfileUpdate(), T0, lambda p, vid=vid: [ev(f"e-{vid}")]
        )

    outcomes = await asyncio.gather(
        *(hit(vid) for vid in ("a", "b", "bad\x00id", "c")), return_exceptions=True
    )
    assert isinstance(outcomes[2], asyncpg.PostgresError)
    assert [type(o) for i, o in enumerate(outcomes) if i != 2] == [tuple] * 3
    found = await two[1].find_profiles("shop", [ProfileQuery(visitor_id=v) for v in "abc"])
    assert all(p is not None for p in found)
    assert len(await two[1].lease("shop:meta", 10, T0, LEASE)) == 3
