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
from gateway.config import parse
from gateway.sandbox.meta import MetaSandbox
from gateway.sandbox.tiktok import TikTokSandbox

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
    app = create_app(parse(doc, {}, tmp_path), clock=clock, run_workers=False)
    client: Client = TestClient(GatewayTestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield Run(client, app[RUNTIME], meta, tiktok, clock)
    finally:
        await client.close()
        for s in servers:
            await s.close()


__all__ = ["ADMIN_TOKEN", "META_REJECTS", "Run", "dashboard_run", "lead", "purchase"]
