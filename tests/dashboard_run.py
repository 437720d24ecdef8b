"""A scripted run for the admin dashboard tests (tests/integration/test_dashboard*.py and
tests/browser/test_browser_dashboard.py): a gateway with Meta and TikTok destinations at their
sandboxes on 127.0.0.1, then a known traffic mix.

The mix: purchases 1-10 and leads 1-4 from the backend (e-mail, phone, IP, UA; purchases carry
fbclid/ttclid), purchase 11 with consent denied, purchase 1 again (a duplicate), two loader
PageViews (one under GPC). Meta rejects order-3 and order-7 (dead letters with the platform's
answer); TikTok refuses its token (the route pauses). Nothing is delivered until `deliver`.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import (
    ADMIN_TOKEN,
    PLANTED_EMAIL,
    PLANTED_PHONE,
    FakeClock,
    GatewayTestServer,
    auth,
    base_doc,
)

from gateway.app import RUNTIME, Runtime, create_app
from gateway.config import Config, parse
from gateway.sandbox.meta import MetaSandbox
from gateway.sandbox.tiktok import TikTokSandbox
from gateway.store.base import DeadQuery
from gateway.web.dashboard import DASHBOARD
from gateway.web.dashboard.providers import (
    GapLine,
    GapReport,
    MissingOrder,
    Providers,
    RecentEvent,
    SentCopy,
    SeriesPoint,
    SeriesQuery,
)

HOST = "www.shop.test"
ORIGIN = f"https://{HOST}"
UA = "Mozilla/5.0 (dashboard test)"
TIKTOK_TOKEN = "tiktok-dashboard-token"
TIKTOK_PIXEL = "CABCDEFGHIJ1234567KL"
META_REJECTS = ("order-3", "order-7")
DENIED = {"ad_storage": False, "analytics_storage": False, "ad_user_data": False,
          "ad_personalization": False}  # fmt: skip
Client = TestClient[web.Request, web.Application]


def purchase(i: int, **extra: Any) -> dict[str, Any]:
    email = PLANTED_EMAIL if i == 1 else f"Buyer.{i}@Example.com"
    return {
        "event": "Purchase",
        "url": f"{ORIGIN}/thanks/{i}",
        "user": {
            "email": email,
            "phone": PLANTED_PHONE if i == 1 else f"+1 650 555 {i:04d}",
            "ip": "203.0.113.7",
            "user_agent": UA,
            "click_ids": {"fbclid": f"fb-click-{i}", "ttclid": f"tt-click-{i}"},
        },
        "data": {"value": 10 + i, "currency": "EUR", "order_id": f"order-{i}"},
        **extra,
    }


def lead(i: int) -> dict[str, Any]:
    user = {"email": f"lead.{i}@example.com", "ip": "203.0.113.8", "user_agent": UA}
    return {"event": "Lead", "event_id": f"lead-{i}", "url": f"{ORIGIN}/form", "user": user}


@dataclass
class Run:
    client: Client
    runtime: Runtime
    meta: MetaSandbox
    tiktok: TikTokSandbox
    clock: FakeClock
    config: Config | None = None

    async def restart(self) -> None:
        """Stop the gateway gracefully (its last rollups are flushed) and start a new one on the
        same config and store file; the sandboxes keep running."""
        assert self.config is not None
        await self.client.close()
        app = create_app(self.config, clock=self.clock, run_workers=False)
        self.client = TestClient(GatewayTestServer(app, host="127.0.0.1"))
        await self.client.start_server()
        self.runtime = app[RUNTIME]

    @property
    def url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    async def backend(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        resp = await self.client.post("/v1/events", json={"events": events}, headers=auth())
        body: dict[str, Any] = await resp.json()
        assert resp.status == 202, body
        return body

    async def loader(self, doc: dict[str, Any], **headers: str) -> None:
        resp = await self.client.post(
            "/e",
            data=json.dumps(doc),
            headers={"Host": HOST, "Origin": ORIGIN, "Content-Type": "text/plain",
                     "User-Agent": UA, **headers},
        )  # fmt: skip
        assert resp.status == 204, await resp.text()

    async def play(self) -> None:
        """The scripted mix (module docstring)."""
        self.meta.faults.reject_event_ids = set(META_REJECTS)
        self.tiktok.faults.token_expired = True
        first = await self.backend(
            [purchase(i) for i in range(1, 11)] + [lead(i) for i in range(1, 5)]
        )
        assert first["accepted"] == 14
        assert (await self.backend([purchase(11, consent=DENIED)]))["accepted"] == 1
        assert (await self.backend([purchase(1)]))["deduplicated"] == 1
        await self.loader({"event": "PageView", "url": f"{ORIGIN}/a"})
        await self.loader({"event": "PageView", "url": f"{ORIGIN}/b"}, **{"Sec-GPC": "1"})

    async def deliver(self) -> None:
        """Run every route's worker until nothing is due (TikTok pauses after one request)."""
        for worker in self.runtime.workers.values():
            for _ in range(20):
                if await worker.drain() == 0:
                    break

    def providers(self) -> Providers:
        """Stand-ins for the seams built elsewhere (rollups, order ledger, debug ring), computed
        from this run's sandboxes and store, so the pages behind them render real figures; the
        window figures stay the app's own (the stored rollups)."""
        window = self.client.app[DASHBOARD].providers.window
        return Providers(stats=self._series, gap=self._gap, events=self._events, window=window)

    def _accepted(self, destination: str) -> list[dict[str, Any]]:
        sandbox = self.meta if destination == "meta" else self.tiktok
        return list(sandbox.recorder.accepted)

    async def _series(self, query: SeriesQuery) -> list[SeriesPoint]:
        steps = int((query.until - query.since) // query.step)
        routes = [query.route] if query.route else sorted(self.runtime.workers)
        delivered = sum(self.runtime.workers[r].stats.delivered for r in routes)
        dead = sum(self.runtime.workers[r].stats.dead for r in routes)
        return [
            SeriesPoint(
                query.since + i * query.step, delivered * (i % 5) // 4, i % 3, dead * (i % 7 == 0)
            )
            for i in range(steps)
        ]

    async def _gap(self, site: str, since: float, until: float) -> GapReport:
        orders = [f"order-{i}" for i in range(1, 12)]
        lines = []
        for destination in ("meta", "tiktok"):
            route = f"{site}:{destination}"
            got = {e.get("event_id") for e in self._accepted(destination)}
            dead = {
                d.info.event_id: d.info.reason or ""
                for d in (await self.runtime.store.dead_page(DeadQuery(route=route))).letters
            }
            missing = tuple(
                MissingOrder(
                    order,
                    order,
                    "consent"
                    if order == "order-11"
                    else "dead_letter"
                    if order in dead
                    else "queued",
                    dead.get(order, "").partition(":")[0],
                )
                for order in orders
                if order not in got
            )
            lines.append(GapLine(destination, len(orders), len(orders) - len(missing), missing))
        return GapReport(site, since, until, tuple(lines))

    async def _events(
        self, site: str | None, destination: str | None, limit: int
    ) -> list[RecentEvent]:
        return [
            RecentEvent(
                self.clock.now,
                "shop",
                str(e.get("event_name")),
                str(e.get("event_id")),
                "backend",
                {"event": e.get("event_name"), "event_id": e.get("event_id")},
                (SentCopy("meta", 200, e),),
            )
            for e in self._accepted("meta")[-limit:][::-1]
        ]


@asynccontextmanager
async def dashboard_run(
    tmp_path: Path, *, server: dict[str, Any] | None = None, admin: bool = True
) -> AsyncIterator[Run]:
    """Start both sandboxes and the gateway (no background workers); yield the Run."""
    meta = MetaSandbox(access_tokens={"meta-test-token"}, seed=99)
    tiktok = TikTokSandbox(access_tokens={TIKTOK_TOKEN}, seed=98)
    servers = [TestServer(meta.app(), host="127.0.0.1"), TestServer(tiktok.app(), host="127.0.0.1")]
    for s in servers:
        await s.start_server()
    meta_base, tiktok_base = (str(s.make_url("")).rstrip("/") for s in servers)
    doc = copy.deepcopy(base_doc(tmp_path, meta_base))
    doc["server"].update({"trusted_proxies": ["127.0.0.1/32"], **(server or {})})
    if not admin:
        del doc["server"]["admin_token"]
    site = doc["sites"][0]
    site.update({"hosts": [HOST], "allowed_origins": [ORIGIN]})
    site["destinations"]["tiktok"] = {
        "pixel_code": TIKTOK_PIXEL,
        "access_token": TIKTOK_TOKEN,
        "api_base": tiktok_base,
    }
    clock = FakeClock(float(int(time.time()) - 120))  # the sandboxes check times on real time
    config = parse(doc, {}, tmp_path)
    app = create_app(config, clock=clock, run_workers=False)
    client: Client = TestClient(GatewayTestServer(app, host="127.0.0.1"))
    await client.start_server()
    run = Run(client, app[RUNTIME], meta, tiktok, clock, config)
    try:
        yield run
    finally:
        await run.client.close()
        for s in servers:
            await s.close()


__all__ = ["ADMIN_TOKEN", "META_REJECTS", "Run", "dashboard_run", "lead", "purchase"]
