"""The order load of issue #13's kill -9 acceptance tests, and the checks after it.

Shared by tests/faults/test_workers_kill9.py (`run --workers 2` on SQLite, one port) and
tests/faults/test_postgres_kill9.py (two `run` processes on two ports, one PostgreSQL).

Per chunk of orders a client posts a backend batch (each order's Purchase plus as many Lead
events) and, for the same orders, one loader `/e` event each (the browser's copy: its `fbclid`
becomes `fbc`), the loader first for every other chunk of each client. With several gateway
URLs the two copies of a chunk go to different gateways (chunk k: backend to URL k, browser to
URL k + 1), so their merge happens across processes; a post nobody answered (a killed gateway)
is tried once more at the next URL, as a load balancer fails over.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import pytest
from conftest import auth
from test_workers import lead

ORIGIN = "https://www.shop.test"
LOADER_HEADERS = {
    "Host": "track.shop.test",
    "Origin": ORIGIN,
    "Content-Type": "text/plain",
    "User-Agent": "Mozilla/5.0 (kill -9 acceptance test)",
}
TIMEOUT = aiohttp.ClientTimeout(total=10)
TIKTOK_TOKEN = "tiktok-test-token"
TIKTOK_PIXEL = "CABCDEFGHIJ1234567KL"


def posted_ids(orders: int) -> set[str]:
    """Every event id the load can post for `orders` orders."""
    return {f"{kind}-{i}" for kind in ("order", "lead") for i in range(orders)}


def tiktok_section(api_base: str, max_batch: int) -> str:
    """The TikTok destination of the shop (TOML, appended to the test's config)."""
    return f"""
[sites.destinations.tiktok]
pixel_code = "{TIKTOK_PIXEL}"
access_token = "{TIKTOK_TOKEN}"
api_base = "{api_base}"
max_batch = {max_batch}
"""


def backend_purchase(i: int) -> dict[str, Any]:
    return {
        "event": "Purchase",
        "source": "website",
        "url": f"https://www.shop.test/o/{i}",
        "user": {
            "email": f"buyer{i}@example.com",
            "ip": "10.0.0.1",
            "user_agent": "Mozilla/5.0 (shop backend)",
        },
        "data": {"value": 40 + i % 50, "currency": "USD", "order_id": f"order-{i}"},
    }


def browser_purchase(i: int) -> str:
    return json.dumps(
        {
            "event": "Purchase",
            "url": f"https://www.shop.test/thank-you?order={i}&fbclid=Click{i}",
            "data": {"value": 1, "currency": "EUR", "order_id": f"order-{i}"},
        }
    )


class Load:
    """Clients posting chunks of orders to one or more gateways; remembers what was
    acknowledged (202 / 204)."""

    def __init__(
        self, urls: Sequence[str], orders: int, *, clients: int = 8, chunk: int = 10
    ) -> None:
        self.urls = list(urls)
        self.orders = orders
        self.clients = clients
        self.chunk_size = chunk
        self.acked: set[str] = set()
        """Event ids of acknowledged events (lead-i, order-i)."""
        self.acked_events = 0
        self.both: set[int] = set()
        """Orders whose backend and browser copies were both acknowledged."""
        self.statuses: Counter[int] = Counter()
        self.unanswered = 0
        """Posts nobody answered (a killed gateway's connections: not acknowledged)."""
        self.failovers = 0
        """Unanswered posts tried again at the next gateway."""
        self.by_url: Counter[str] = Counter()
        """Acknowledged posts per gateway URL."""

    async def post(self, session: aiohttp.ClientSession, at: int, path: str, **kwargs: Any) -> int:
        """POST to gateway `at`; unanswered, once more to the next one (if there is another)."""
        tries = 2 if len(self.urls) > 1 else 1
        for attempt in range(tries):
            url = self.urls[(at + attempt) % len(self.urls)]
            try:
                async with session.post(f"{url}{path}", timeout=TIMEOUT, **kwargs) as resp:
                    await resp.read()
                    self.statuses[resp.status] += 1
                    if resp.status in (202, 204):
                        self.by_url[url] += 1
                    return resp.status
            except (TimeoutError, aiohttp.ClientError):
                self.unanswered += 1
                if attempt + 1 < tries:
                    self.failovers += 1
        return 0

    async def client(self, c: int) -> None:
        connector = aiohttp.TCPConnector(limit=2)
        async with aiohttp.ClientSession(connector=connector) as session:
            step = self.clients * self.chunk_size
            for start in range(c * self.chunk_size, self.orders, step):
                orders = range(start, min(start + self.chunk_size, self.orders))
                k = start // self.chunk_size  # gateways: k % 2 fixed per client (8 clients)
                browser_first = bool((k // self.clients) % 2)  # every other chunk of a client
                await self.chunk(session, orders, k, browser_first=browser_first)

    async def chunk(
        self, session: aiohttp.ClientSession, orders: range, k: int, *, browser_first: bool
    ) -> None:
        """Post the orders' backend batch (to gateway k) and their browser copies (to gateway
        k + 1), in either order."""
        backend_ok: set[int] = set()
        browser_ok: set[int] = set()
        for step in ("browser", "backend") if browser_first else ("backend", "browser"):
            if step == "backend":
                events = [backend_purchase(i) for i in orders] + [lead(i) for i in orders]
                body = {"events": events}
                if await self.post(session, k, "/v1/events", json=body, headers=auth()) == 202:
                    backend_ok.update(orders)
                    self.acked.update(f"lead-{i}" for i in orders)
                    self.acked_events += len(events)
                continue
            for i in orders:
                data = browser_purchase(i)
                status = await self.post(session, k + 1, "/e", data=data, headers=LOADER_HEADERS)
                if status == 204:
                    browser_ok.add(i)
                    self.acked_events += 1
        self.acked.update(f"order-{i}" for i in backend_ok | browser_ok)
        self.both.update(backend_ok & browser_ok)


Outbox = Callable[[str], Awaitable[dict[str, int] | None]]
"""The rows per state of a route (`shop:meta`), read from the store by a live gateway."""


async def await_delivered(
    load: Load, platforms: dict[str, Any], outbox: Outbox, tail: Callable[[], str], timeout: float
) -> None:
    """Wait until every acknowledged event reached each platform's sandbox and no row of its
    route waits; fail naming what is missing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    for name, platform in platforms.items():
        while True:
            rows = await outbox(f"shop:{name}")
            delivered = {e["event_id"] for e in platform.recorder.accepted}
            waiting = sum(n for state, n in (rows or {}).items() if state != "done")
            if rows is not None and not waiting and load.acked <= delivered:
                break
            if time.monotonic() > deadline:
                missing = load.acked - delivered
                pytest.fail(
                    f"{name}: {len(missing)} acknowledged events not delivered in"
                    f" {timeout}s (e.g. {sorted(missing)[:5]}); outbox {rows}\n{tail()}"
                )
            await asyncio.sleep(0.1)


def check_deliveries(
    platforms: dict[str, Any], posted: set[str], max_twice: int
) -> tuple[list[str], dict[str, dict[str, int]]]:
    """Per platform: nothing nobody posted, nothing sent more than twice, at most `max_twice`
    ids sent twice (one batch leased by the killed process and in flight at the kill). Return
    a report line per platform and the ids sent twice per platform."""
    report: list[str] = []
    twice_by: dict[str, dict[str, int]] = {}
    for name, platform in platforms.items():
        accepted = platform.recorder.accepted
        counts = Counter(e["event_id"] for e in accepted)
        twice = {event_id: n for event_id, n in counts.items() if n > 1}
        assert len(twice) <= max_twice, f"{name}: {len(twice)} ids sent twice: {sorted(twice)}"
        assert max(twice.values(), default=1) <= 2, twice
        assert set(counts) <= posted, f"{name}: ids nobody posted {sorted(set(counts) - posted)}"
        shown = ", ".join(sorted(twice)[:8]) + (" …" if len(twice) > 8 else "")
        report.append(
            f"{name}: {len(counts)} ids in {len(accepted)} events, {len(twice)} twice"
            + (f" ({shown})" if twice else "")
        )
        twice_by[name] = twice
    return report, twice_by


def check_merged(meta: Any, both: set[int]) -> None:
    """Every order both copies of which were acknowledged reached Meta merged: the browser's
    click id (fbc) and the backend's e-mail hash and value."""
    purchases = {e["event_id"]: e for e in meta.recorder.accepted if e["event_name"] == "Purchase"}
    for i in sorted(both):
        event = purchases[f"order-{i}"]
        user = event["user_data"]
        assert user.get("fbc", "").endswith(f".Click{i}"), f"order-{i}: browser part"
        assert "em" in user, f"order-{i}: backend part"
        assert event["custom_data"]["currency"] == "USD", f"order-{i}: backend's value"
