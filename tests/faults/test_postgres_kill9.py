"""PostgreSQL under kill -9: every append that returned survives, and the leases of the killed
process come back to the survivor once they expire (no row lost, none leased twice).

A child process appends from many concurrent tasks to a PostgresStore and prints each event_id
only after its `append` returned (the moment the HTTP layer would answer 2xx); one task leases
rows and never marks them, as a worker killed mid-delivery. The parent SIGKILLs the child at
several points (each time with appends and leases in flight), restarts it with fresh ids, then
checks through its own store that every acknowledged event has exactly one row per route, that
the rows the dead children leased stay leased until their lease expires, and then come back.
"""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path

import pytest
from test_store_kill9 import run_until_killed

from gateway.store.base import DeliveryState
from gateway.store.postgres import PostgresStore

ROUTES = ("shop:meta", "shop:ga4")
KILL_POINTS = (50, 400, 1200)
LEASE = 30.0

CHILD = textwrap.dedent(
    """
    import asyncio
    import sys
    import time

    from gateway.store.base import NewEvent
    from gateway.store.postgres import PostgresStore

    ROUTES = {routes!r}


    async def main(dsn: str, prefix: str, workers: int) -> None:
        store = PostgresStore(dsn, pool_min=2, pool_max=4)
        await store.open()
        out = sys.stdout

        async def worker(w: int) -> None:
            n = 0
            while True:
                event_id = f"{{prefix}}-{{w}}-{{n}}"
                n += 1
                record = ('{{"id": "%s"}}' % event_id).encode()
                event = NewEvent("shop", "Purchase", event_id, time.time(), record, ROUTES)
                await store.append([event], time.time())
                out.write(event_id + "\\n")  # acknowledged: the 2xx moment
                out.flush()

        async def leaser() -> None:  # a delivery worker that dies before it marks anything
            while True:
                await store.lease(ROUTES[0], 20, time.time(), {lease})
                await asyncio.sleep(0.005)

        await asyncio.gather(leaser(), *(worker(w) for w in range(workers)))


    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
).format(routes=ROUTES, lease=LEASE)


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_acknowledged_appends_and_dead_leases_survive_kill9(
    tmp_path: Path, pg_dsn: str
) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    log = tmp_path / "child.log"
    acked: set[str] = set()
    for phase, kill_after in enumerate(KILL_POINTS):
        acked |= await asyncio.to_thread(
            run_until_killed, script, pg_dsn, f"p{phase}", kill_after, log
        )
    store = PostgresStore(pg_dsn, pool_min=1, pool_max=2)
    await store.open()
    try:
        now = time.time()
        counts = await store.counts()
        orphaned = counts.get((ROUTES[0], DeliveryState.LEASED), 0)
        assert orphaned > 0, "the killed children held leases"
        early = await store.lease(ROUTES[0], 1_000_000, now, LEASE)
        assert len(early) == counts.get((ROUTES[0], DeliveryState.PENDING), 0)  # leased rows wait
        later = await store.lease(ROUTES[0], 1_000_000, now + LEASE + 1, LEASE)
        assert len(later) == orphaned + len(early)  # expired: every orphan, and ours again
        for route, rows in ((ROUTES[0], later), (ROUTES[1], None)):
            if rows is None:
                rows = await store.lease(route, 1_000_000, now, LEASE)
            ids = [d.event_id for d in rows]
            assert len(ids) == len(set(ids)), f"{route}: duplicate rows"
            missing = acked - set(ids)
            assert not missing, f"{route}: {len(missing)} acknowledged events lost"
            assert all(d.record == f'{{"id": "{d.event_id}"}}'.encode() for d in rows)
    finally:
        await store.close()
