"""The dashboard's figures come from the stored per-minute rollups (issue #12 items 2 and 3):
the consent and latency panels (and the rest of the signal page) read the same after a restart
on the same store file, and GET /v1/admin/stats answers the consent and dedup-pair metrics."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN_TOKEN
from dashboard_run import Run, dashboard_run

from gateway.web.dashboard import DASHBOARD, Providers
from gateway.web.dashboard.auth import COOKIE
from gateway.web.rollups import ROLLUPS

LATENCY_S = 40.0
"""Event time → acceptance in the run: every delivery lands in the (30 s, 60 s] bucket."""


@pytest.fixture
async def run(tmp_path: Path) -> Any:
    async with dashboard_run(tmp_path) as r:
        yield r


async def main_of(run: Run, path: str) -> str:
    """Log in and return the page's <main> (the nav's CSRF token differs per session)."""
    resp = await run.client.post(
        "/admin/login", data={"token": ADMIN_TOKEN, "next": "./"}, allow_redirects=False
    )
    assert resp.status == 303
    cookie = {"Cookie": f"{COOKIE}={resp.cookies[COOKIE].value}"}
    run.client.session.cookie_jar.clear()
    page = await run.client.get(path, headers=cookie, allow_redirects=False)
    assert page.status == 200, (path, page.status)
    found = re.search(r"<main>.*</main>", await page.text(), re.S)
    assert found is not None
    return found.group(0)


def cells(html: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is `first`."""
    row = re.search(rf"<tr><td>{re.escape(first)}</td>(.*?)</tr>", html, re.S)
    assert row is not None, first
    return re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))


async def played(run: Run) -> None:
    await run.play()
    run.clock.advance(LATENCY_S)
    await run.deliver()


async def test_consent_and_latency_panels_read_the_same_after_a_restart(run: Run) -> None:
    await played(run)
    before = {path: await main_of(run, path) for path in ("/admin/consent", "/admin/signal")}
    consent, signal = before["/admin/consent"], before["/admin/signal"]
    # The scripted mix: 16 queued / 2 consent-dropped at meta; two loader hits (full, GPC).
    assert cells(consent, "shop:meta")[:3] == ["16", "2", "11.1%"]
    assert "last 24h" in consent
    assert ">analytics<" in consent
    assert ">full<" in consent
    assert ">gpc<" in consent
    # Meta accepted 13 events, each 40 s after its time: p50 and p95 inside (30 s, 60 s].
    assert cells(signal, "shop:meta")[:3] == ["13", "45.0 s", "58.5 s"]
    assert "api+api" in signal
    errors = await main_of(run, "/admin/errors")
    assert "Dead-lettered (last 24h)" in errors

    await run.restart()  # the graceful stop flushes; the new process starts with zero counters
    assert run.runtime.workers["shop:meta"].tally.delivered == {}
    assert run.runtime.collect is not None
    assert run.runtime.collect.stats.by_tier == {}
    after = {path: await main_of(run, path) for path in before}
    assert after == before
    assert "Dead-lettered (last 24h)" in await main_of(run, "/admin/errors")

    # Traffic after the restart adds to the stored figures.
    await run.loader({"event": "PageView", "url": "https://www.shop.test/c"})
    more = await main_of(run, "/admin/consent")
    assert cells(more, "shop:meta")[0] == "17"


async def test_a_range_without_the_traffic_shows_none_of_it(run: Run) -> None:
    await played(run)
    await run.client.app[ROLLUPS].flush()
    run.clock.advance(2 * 3600.0)
    hour = await main_of(run, "/admin/consent?range=1h")
    assert cells(hour, "shop:meta")[:3] == ["0", "0", "-"]
    day = await main_of(run, "/admin/consent?range=24h")
    assert cells(day, "shop:meta")[:3] == ["16", "2", "11.1%"]
    signal = await main_of(run, "/admin/signal?range=1h")
    assert cells(signal, "shop:meta")[:3] == ["0", "-", "-"]


async def test_without_the_window_provider_the_pages_say_they_show_live_counters(
    run: Run,
) -> None:
    await played(run)
    board = run.client.app[DASHBOARD]
    board.providers = Providers(gap=board.providers.gap, events=board.providers.events)
    consent = await main_of(run, "/admin/consent")
    assert "live counters since start" in consent
    assert cells(consent, "shop:meta")[:3] == ["16", "2", "11.1%"]
    signal = await main_of(run, "/admin/signal")
    assert cells(signal, "shop:meta")[:3] == ["13", "45.0 s", "58.5 s"]
    assert "api+api" in signal  # from the store's pair counters


async def test_stats_answer_the_consent_and_dedup_pair_metrics(run: Run) -> None:
    await played(run)
    assert await run.client.app[ROLLUPS].flush() > 0
    resp = await run.client.get(
        "/v1/admin/stats",
        params={"metric": "consent_tier,consent_reason,dedup_pair", "step": "3600"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert resp.status == 200, await resp.text()
    doc = await resp.json()
    got = {
        (s["destination"], s["metric"], s["detail"]): sum(s["values"])
        for s in doc["series"]
        if s["site"] == "shop"
    }
    assert got == {
        (None, "consent_tier", "full"): 1,
        (None, "consent_tier", "analytics"): 1,
        (None, "consent_reason", "default"): 1,
        (None, "consent_reason", "gpc"): 1,
        ("meta", "dedup_pair", "api+api"): 1,
        ("tiktok", "dedup_pair", "api+api"): 1,
    }
    bad = await run.client.get(
        "/v1/admin/stats",
        params={"metric": "consent_tier,nope"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert bad.status == 400
    assert "consent_tier" in (await bad.json())["errors"][0]["reason"]
