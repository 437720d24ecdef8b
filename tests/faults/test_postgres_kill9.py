"""PostgreSQL under kill -9, at two levels.

Gateways (issue #13's acceptance, the last test): two `signalgate run` processes on two ports
share one PostgreSQL; one is SIGKILLed under load and the other finishes its work (the order
load and the checks after it: tests/faults/orderload.py).

Store (the first test): every append that returned survives, and the leases of the killed
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
import contextlib
import os
import re
import signal
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from orderload import (
    TIKTOK_TOKEN,
    Load,
    await_delivered,
    check_deliveries,
    check_merged,
    posted_ids,
    tiktok_section,
)
from test_gateway_crash import free_port, wait_exit
from test_store_kill9 import run_until_killed
from test_workers import (
    COOKIE_SECRET,
    GRACE,
    STOP_MARGIN,
    Supervised,
    postgres_storage,
    q,
    workers_config,
)

from gateway.sandbox.tiktok import TikTokSandbox
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


# --- issue #13's acceptance: two gateway processes on one PostgreSQL, one kill -9ed ---

ORDERS = 3400
"""Orders posted; each is 3 events (Purchase from the backend and the loader, a Lead)."""
CLIENTS = 8
KILL_AT = 5000
"""Acknowledged events after which gateway A is SIGKILLed (it is not restarted)."""
MAX_BATCH = 50
GATEWAY_LEASE = 10.0
MERGE = 3.0
LOAD_TIMEOUT = 240.0
DRAIN_TIMEOUT = 120.0
LATENCY = 0.05
"""Seconds each sandbox takes per request: requests are in flight while the load runs."""
SLOW = 1.0
"""TikTok's latency for half of it before the kill: the batch A leased and sent in that time
(rows come out of their merge window all the time) is in flight at the kill, so A surely dies
holding leases. (A request cut before the sandbox read its body is not recorded; Meta's short
latency lets some of A's last batch land before A could mark it: sent again by B.)"""
IN_FLIGHT = 3.0
"""Seconds after the kill by which A's in-flight requests reached the sandboxes (answered
after SLOW; B sends A's leased rows again only after GATEWAY_LEASE)."""
LOG_LEVEL = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (ERROR|CRITICAL) ", re.M)


def error_lines(log: str) -> list[str]:
    """ERROR and CRITICAL lines of a gateway's log (key=value format), and tracebacks."""
    return [
        line for line in log.splitlines() if LOG_LEVEL.match(line) or line.startswith("Traceback")
    ]


async def leased_rows(dsn: str, until: float) -> dict[int, tuple[str, str]]:
    """The rows leased until `until` or earlier, as id → (route, event id): read less than a
    lease after the kill with `until` = kill + lease, the dead gateway's (and any the survivor
    leased before the kill and has not marked yet), which only the survivor can finish."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT d.id, d.route, e.event_id FROM deliveries d JOIN events e"
            " ON e.id = d.event_ref WHERE d.state = 'leased' AND d.lease_until <= $1",
            until,
        )
    finally:
        await conn.close()
    return {int(row["id"]): (str(row["route"]), str(row["event_id"])) for row in rows}


async def row_states(dsn: str, ids: list[int]) -> dict[int, str]:
    """The state of each of the delivery rows `ids` still stored."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT id, state FROM deliveries WHERE id = ANY($1::int8[])", ids)
    finally:
        await conn.close()
    return {int(row["id"]): str(row["state"]) for row in rows}


async def rows_and_events(dsn: str) -> dict[str, tuple[int, int]]:
    """Per route: delivery rows, and distinct (event name, event id) among them. Equal: each
    copy after the first was merged into the first or counted, whichever process it reached
    (a post tried again at the survivor after the kill is such a copy)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT d.route, count(*) AS n, count(DISTINCT (e.event_name, e.event_id)) AS k"
            " FROM deliveries d JOIN events e ON e.id = d.event_ref GROUP BY d.route"
        )
    finally:
        await conn.close()
    return {str(r["route"]): (int(r["n"]), int(r["k"])) for r in rows}


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_kill9_of_one_of_two_gateways_on_postgres_loses_and_doubles_nothing(
    tmp_path: Path, meta_sandbox: Any, pg_dsn: str
) -> None:
    """Gateways A and B (`signalgate run`, two ports) share one PostgreSQL database. Clients post
    ~10,000 events alternately to both: each chunk's backend batch to one gateway and the same
    orders' loader hits to the other, so every order's two copies merge across processes.
    Midway A is SIGKILLed and stays dead; posts A no longer answers go to B (as a load
    balancer fails over). B alone then delivers everything: the rows A had not leased at once,
    the rows A had leased once their lease (10 s) expires. Every acknowledged event reaches Meta
    and TikTok, each order merged once with both parts, nothing nobody posted, nothing twice
    but (at most) A's in-flight batch per destination, no error line in B's log."""
    sandbox, sandbox_url = meta_sandbox
    tiktok = TikTokSandbox(access_tokens={TIKTOK_TOKEN}, seed=99)
    tiktok_server = TestServer(tiktok.app(), host="127.0.0.1")
    await tiktok_server.start_server()
    tiktok_url = str(tiktok_server.make_url("")).rstrip("/")
    gateways: list[Supervised] = []
    for name in ("a", "b"):
        home = tmp_path / name
        home.mkdir()
        port = free_port()
        config = workers_config(
            home,
            port,
            sandbox_url,
            merge_seconds=MERGE,
            lease_seconds=GATEWAY_LEASE,
            max_batch=MAX_BATCH,
            extra=tiktok_section(tiktok_url, MAX_BATCH),
            storage=postgres_storage(pg_dsn),
            server_extra=f"cookie_secret = {q(COOKIE_SECRET)}\n",
        )
        gateways.append(Supervised(config, port, home / "gateway.log", workers=1))
    victim, survivor = gateways
    platforms = {"meta": sandbox, "tiktok": tiktok}
    began = time.monotonic()
    async with aiohttp.ClientSession() as session:
        try:
            # Both start together: their migrations meet on the advisory lock.
            started = await asyncio.gather(*(g.start(session) for g in gateways))
            (victim_pid,), (survivor_pid,) = started
            assert victim.proc is not None
            assert victim.proc.pid == victim_pid
            load = Load([g.url for g in gateways], ORDERS, clients=CLIENTS)
            for platform in platforms.values():
                platform.faults.latency = LATENCY
            clients = [asyncio.create_task(load.client(c)) for c in range(CLIENTS)]
            loading = time.monotonic()
            deadline = loading + LOAD_TIMEOUT
            # Midway, and once rows have come out of their merge window for a while.
            while load.acked_events < KILL_AT or time.monotonic() < loading + MERGE + 1:
                if time.monotonic() > deadline or all(t.done() for t in clients):
                    pytest.fail(f"{load.acked_events} acknowledged:\n{victim.tail()}")
                await asyncio.sleep(0.01)
            tiktok.faults.latency = SLOW  # A's next TikTok batch is in flight at the kill
            await asyncio.sleep(SLOW / 2)
            killed_at = load.acked_events
            before_kill = dict(load.by_url)
            killed_wall = time.time()
            os.kill(victim_pid, signal.SIGKILL)
            tiktok.faults.latency = LATENCY
            assert await wait_exit(victim.proc, 30) == -signal.SIGKILL
            killed = time.monotonic()
            await asyncio.sleep(IN_FLIGHT)  # A's last requests land (or not) at the sandboxes
            at_kill = {name: len(p.recorder.accepted) for name, p in platforms.items()}
            orphans = await leased_rows(pg_dsn, killed_wall + GATEWAY_LEASE)
            read_after = time.time() - killed_wall
            assert read_after < GATEWAY_LEASE - 1, f"leases read {read_after:.1f}s after the kill"
            done, _ = await asyncio.wait(clients, timeout=max(1.0, deadline - time.monotonic()))
            assert len(done) == CLIENTS, f"load not done in {LOAD_TIMEOUT}s:\n{survivor.tail()}"
            for task in clients:
                task.result()
            sandbox.faults.reset()
            tiktok.faults.reset()
            loaded = time.monotonic()

            assert set(load.statuses) <= {202, 204}, f"answers {dict(load.statuses)}"
            assert load.acked_events >= 0.95 * ORDERS * 3, (load.acked_events, load.unanswered)
            assert before_kill.get(victim.url, 0) > 0.3 * sum(before_kill.values()), before_kill
            assert load.failovers > 0, "no post reached the killed gateway after the kill"

            async def outbox(route: str) -> dict[str, int] | None:
                return await survivor.outbox(session, route)

            await await_delivered(load, platforms, outbox, survivor.tail, DRAIN_TIMEOUT)
            drained = time.monotonic()

            report, twice = check_deliveries(platforms, posted_ids(ORDERS), MAX_BATCH)
            for name, platform in platforms.items():
                sent_by_then = {e["event_id"] for e in platform.recorder.accepted[: at_kill[name]]}
                again = Counter(e["event_id"] for e in platform.recorder.accepted[at_kill[name] :])
                held = {event_id for route, event_id in orphans.values() if route == f"shop:{name}"}
                for event_id in twice[name]:  # A's send, then B's once A's lease expired
                    assert event_id in held, f"{name}: {event_id} twice, not leased by A"
                    assert event_id in sent_by_then, f"{name}: {event_id} twice by B"
                    assert again[event_id] == 1, f"{name}: {event_id} twice by B"
            assert orphans, "A held no lease at the kill: nothing for B to take over"
            states = await row_states(pg_dsn, list(orphans))
            assert set(states.values()) <= {"done"}, states  # only B can have marked them
            stored = await rows_and_events(pg_dsn)
            assert set(stored) == {"shop:meta", "shop:tiktok"}, stored
            for route, (n_rows, n_events) in stored.items():
                assert n_rows == n_events, f"{route}: {n_rows} rows for {n_events} events"
                assert n_events >= len(load.acked), f"{route}: {n_events} events stored"
            check_merged(sandbox, load.both)
            assert len(load.both) >= 0.9 * ORDERS, len(load.both)

            code, took = await survivor.terminate()
            assert code == 0, f"exit {code}:\n{survivor.tail()}"
            assert took < GRACE + STOP_MARGIN, f"took {took:.1f}s:\n{survivor.tail()}"
            log = survivor.text()
            assert not error_lines(log), "\n".join(error_lines(log)[:20])
            assert log.count("signalgate stopped in") == 1, survivor.tail()
            print(
                f"\npostgres kill -9: {load.acked_events} events acknowledged"
                f" ({len(load.both)} orders with both copies), posts acknowledged by A"
                f" {load.by_url[victim.url]} (before the kill), by B {load.by_url[survivor.url]};"
                f" {load.unanswered} unanswered,"
                f" {load.failovers} failed over, statuses {dict(load.statuses)}; gateway A"
                f" (pid {victim_pid}) killed at {killed_at} acknowledged, B (pid {survivor_pid})"
                f" alone after it; {len(orphans)} rows A held leased, done by B; one row per event"
                f" and route ({', '.join(f'{r}: {n}' for r, (n, _) in stored.items())}); load"
                f" {loaded - began:.1f}s ({loaded - killed:.1f}s after the kill), drained by B"
                f" {drained - loaded:.1f}s later; {'; '.join(report)} (twice: A's batch in"
                f" flight at the kill); B's SIGTERM exit {code} in {took:.2f}s"
            )
        finally:
            for gateway in gateways:
                with contextlib.suppress(Exception):
                    await gateway.stop()
            await tiktok_server.close()
