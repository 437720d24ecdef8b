"""The admin dashboard through the real app: sessions, CSRF, the login limit, every page's
figures after the scripted run (tests/dashboard_run.py), replay and resume, the seams."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
from conftest import ADMIN_TOKEN, PLANTED_EMAIL, PLANTED_PHONE
from dashboard_run import META_REJECTS, Run, dashboard_run

from gateway.store.base import DeliveryState
from gateway.web.dashboard import DASHBOARD, Providers
from gateway.web.dashboard.auth import COOKIE
from gateway.web.dashboard.layout import NAV
from gateway.web.dashboard.providers import (
    GapLine,
    GapReport,
    MissingOrder,
    RecentEvent,
    SentCopy,
    SeriesPoint,
    SeriesQuery,
)

PAGES = ["/admin/" + href.strip("./") for href, _ in NAV]


@pytest.fixture
async def run(tmp_path: Path) -> Any:
    async with dashboard_run(tmp_path) as r:
        yield r


async def login(run: Run, token: str = ADMIN_TOKEN, **headers: str) -> Any:
    """POST the login form; the session cookie is not kept by the client's jar."""
    resp = await run.client.post(
        "/admin/login",
        data={"token": token, "next": "dead"},
        headers=headers,
        allow_redirects=False,
    )
    run.client.session.cookie_jar.clear()
    return resp


async def session(run: Run) -> dict[str, str]:
    resp = await login(run)
    assert resp.status == 303, await resp.text()
    value = resp.cookies[COOKIE].value
    return {"Cookie": f"{COOKIE}={value}"}


async def get(run: Run, path: str, headers: dict[str, str]) -> str:
    resp = await run.client.get(path, headers=headers, allow_redirects=False)
    assert resp.status == 200, (path, resp.status)
    assert resp.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    return await resp.text()


def done_of(resp: Any) -> str:
    """The message an action's redirect carries (`done=`)."""
    return parse_qs(urlsplit(resp.headers["Location"]).query)["done"][0]


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


async def test_pages_refuse_requests_without_a_session(run: Run) -> None:
    for path in PAGES:
        resp = await run.client.get(path, allow_redirects=False)
        assert resp.status == 303, path
        assert resp.headers["Location"].startswith("login")
    resp = await run.client.get("/admin/dead?route=shop:meta", allow_redirects=False)
    location = urlsplit(resp.headers["Location"])
    assert location.path == "login"
    assert parse_qs(location.query)["next"] == ["dead?route=shop:meta"]
    resp = await run.client.get("/admin", allow_redirects=False)
    assert resp.status == 301
    assert resp.headers["Location"] == "admin/"  # relative: a path prefix in front is kept
    for path in ("/admin/replay", "/admin/resume", "/admin/logout"):
        resp = await run.client.post(path, data={"csrf": "x"}, allow_redirects=False)
        assert resp.status == 401, path
    forged = {"Cookie": f"{COOKIE}=v1.9999999999.AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA"}
    resp = await run.client.get("/admin/", headers=forged, allow_redirects=False)
    assert resp.status == 303


async def test_login_sets_a_signed_strict_http_only_cookie(run: Run) -> None:
    resp = await login(run)
    assert resp.status == 303
    assert resp.headers["Location"] == "dead"
    header = resp.headers["Set-Cookie"]
    assert "HttpOnly" in header
    assert "SameSite=Strict" in header
    assert "Path=" not in header  # the browser scopes it to /admin (or /t/admin behind a prefix)
    assert "Secure" not in header  # plain HTTP
    assert ADMIN_TOKEN not in header
    secure = await login(run, **{"X-Forwarded-Proto": "https"})  # from a trusted proxy
    assert "; Secure" in secure.headers["Set-Cookie"]
    wrong = await login(run, "not-the-token")
    assert wrong.status == 401
    assert COOKIE not in wrong.cookies
    assert "Wrong token" in await wrong.text()


async def test_login_is_rate_limited_per_client(run: Run) -> None:
    for _ in range(5):
        assert (await login(run, "wrong")).status == 401
    blocked = await login(run)  # even the right token waits
    assert blocked.status == 429
    assert 1 <= int(blocked.headers["Retry-After"]) <= 61
    other = await login(run, **{"X-Forwarded-For": "198.51.100.4"})  # another client
    assert other.status == 303
    run.clock.advance(61)
    assert (await login(run)).status == 303


async def test_a_session_expires_and_logout_revokes_it(run: Run) -> None:
    headers = await session(run)
    html = await get(run, "/admin/", headers)
    bad = await run.client.post(
        "/admin/logout", data={"csrf": "wrong"}, headers=headers, allow_redirects=False
    )
    assert bad.status == 403
    out = await run.client.post(
        "/admin/logout", data={"csrf": csrf_of(html)}, headers=headers, allow_redirects=False
    )
    assert out.status == 303
    assert "Max-Age=0" in out.headers["Set-Cookie"]
    assert (await run.client.get("/admin/", headers=headers, allow_redirects=False)).status == 303
    later = await session(run)
    run.clock.advance(8 * 3600 + 1)
    assert (await run.client.get("/admin/", headers=later, allow_redirects=False)).status == 303


async def test_actions_need_the_csrf_token_and_the_same_origin(run: Run) -> None:
    await run.play()
    await run.deliver()
    headers = await session(run)
    html = await get(run, "/admin/dead?route=shop:meta", headers)
    form = {"csrf": "forged", "route": "shop:meta", "all": "1"}
    resp = await run.client.post("/admin/replay", data=form, headers=headers)
    assert resp.status == 403
    form["csrf"] = csrf_of(html)
    evil = {**headers, "Origin": "https://evil.example"}
    resp = await run.client.post("/admin/replay", data=form, headers=evil)
    assert resp.status == 403
    opaque = {**headers, "Origin": "null"}  # a sandboxed frame or a data: page
    resp = await run.client.post("/admin/replay", data=form, headers=opaque)
    assert resp.status == 403
    dead = await run.runtime.store.dead_letters("shop:meta", 10)
    assert sorted(d.event_id for d in dead) == sorted(META_REJECTS), "nothing was replayed"


async def test_every_page_shows_the_scripted_run(run: Run) -> None:
    await run.play()
    await run.deliver()
    headers = await session(run)
    pages = {path: await get(run, path, headers) for path in PAGES}
    for path, html in pages.items():
        assert PLANTED_EMAIL not in html, path
        assert PLANTED_PHONE not in html, path
        assert PLANTED_EMAIL.lower() not in html, path
        assert "<script" not in html, path
        assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', ""), path
    for path, html in pages.items():  # behind a path prefix every link stays under it
        for link in re.findall(r'(?:href|action)="([^"]*)"', html):
            if link.startswith("data:"):
                continue
            target = urljoin("https://www.shop.test/t" + path, link.replace("&amp;", "&"))
            assert target.startswith("https://www.shop.test/t/admin/"), (path, link)
    overview = pages["/admin/"]
    meta_card = overview.split("<h3>meta")[1].split("</div></div>")[0]
    assert "<span>Delivered</span><span>13</span>" in meta_card  # 10 + 4 leads - 2 rejected + 1
    assert "<span>Dead letters</span><span><a" in meta_card
    assert ">2</a>" in meta_card
    tiktok_card = overview.split("<h3>tiktok")[1].split("</form>")[0]
    assert "paused" in tiktok_card
    assert "Resume shop:tiktok" in tiktok_card
    assert "<svg" in overview
    dead = pages["/admin/dead"]
    for order in META_REJECTS:
        assert order in dead
    assert "rejected by the sandbox" in dead  # the platform's answer
    assert "Payload sent" in dead
    signal = pages["/admin/signal"]
    assert "Match-key score (estimate)" in signal
    assert "api+api" in signal
    consent = pages["/admin/consent"]
    assert "Consent-dropped" in consent
    # Queued: 14 backend events + the full-consent PageView + the duplicate; dropped: the
    # consent-denied purchase and the GPC PageView.
    assert "shop:meta</td><td class=n>16</td><td class=n>2</td><td class=n>11.1%</td>" in consent
    assert "analytics" in consent  # the GPC PageView's tier
    errors = pages["/admin/errors"]
    assert "invalid_field" in errors or "platform_rejected" in errors
    events = pages["/admin/events"]  # the debug view's rings, wired by default
    assert "order-1" in events
    assert "does not provide yet" not in events


async def test_replay_from_the_dashboard_delivers_once(run: Run) -> None:
    await run.play()
    await run.deliver()
    headers = await session(run)
    html = await get(run, "/admin/dead?route=shop:meta", headers)
    picks = re.findall(r'name="pick" value="(\d+@shop:meta)"', html)
    assert len(picks) == 2
    run.meta.faults.reject_event_ids = set()
    resp = await run.client.post(
        "/admin/replay",
        data={"csrf": csrf_of(html), "one": picks[0]},
        headers=headers,
        allow_redirects=False,
    )
    assert resp.status == 303
    assert done_of(resp) == "replayed 1, skipped 0"
    await run.deliver()
    again = await get(run, "/admin/dead?route=shop:meta", headers)
    assert len(re.findall(r'name="pick"', again)) == 1
    resp = await run.client.post(
        "/admin/replay",
        data={"csrf": csrf_of(html), "route": "shop:meta", "all": "1", "reason": ""},
        headers=headers,
        allow_redirects=False,
    )
    assert done_of(resp) == "replayed 1 dead letters of shop:meta"
    await run.deliver()
    ids = [e["event_id"] for e in run.meta.recorder.accepted]
    for order in META_REJECTS:
        assert ids.count(order) == 1
    counts = await run.runtime.store.counts()
    assert counts.get(("shop:meta", DeliveryState.DEAD), 0) == 0
    resp = await run.client.post(
        "/admin/replay",
        data={"csrf": csrf_of(html), "one": picks[0]},
        headers=headers,
        allow_redirects=False,
    )
    assert done_of(resp) == "replayed 0, skipped 1"


async def test_resume_lifts_the_pause(run: Run) -> None:
    await run.play()
    await run.deliver()
    worker = run.runtime.workers["shop:tiktok"]
    assert worker.paused
    headers = await session(run)
    html = await get(run, "/admin/", headers)
    run.tiktok.faults.token_expired = False
    resp = await run.client.post(
        "/admin/resume",
        data={"csrf": csrf_of(html), "route": "shop:tiktok", "back": "/admin"},
        headers=headers,
        allow_redirects=False,
    )
    assert resp.status == 303
    assert urlsplit(resp.headers["Location"]).path == "./"
    assert done_of(resp).startswith("shop:tiktok resumed; ")
    assert not worker.paused
    await run.deliver()
    assert len(run.tiktok.recorder.accepted) >= 10


class FakeStats:
    def __init__(self) -> None:
        self.queries: list[SeriesQuery] = []

    async def __call__(self, query: SeriesQuery) -> Sequence[SeriesPoint]:
        self.queries.append(query)
        return [SeriesPoint(query.since + i * query.step, 5 + i, 1, i % 2) for i in range(6)]


async def fake_gap(site: str, since: float, until: float) -> GapReport:
    missing = (
        MissingOrder("order-3", "order-3", "dead_letter", "invalid_field"),
        MissingOrder("<script>alert(1)</script>", "e-9", "consent"),
    )
    return GapReport(site, since, until, (GapLine("meta", 10, 8, missing),))


async def fake_events(
    site: str | None, destination: str | None, limit: int
) -> Sequence[RecentEvent]:
    sent = (SentCopy("meta", 200, {"data": [{"event_name": "Purchase"}]}),)
    return [
        RecentEvent(1_790_000_000.0, "shop", "Purchase", "order-1", "backend", {"em": "ab"}, sent)
    ]


async def test_the_seams_render_what_their_providers_give(run: Run) -> None:
    stats = FakeStats()
    run.client.app[DASHBOARD].providers = Providers(stats=stats, gap=fake_gap, events=fake_events)
    headers = await session(run)
    overview = await get(run, "/admin/?range=1h&route=shop:meta", headers)
    assert stats.queries[-1].route == "shop:meta"
    assert stats.queries[-1].step == 60.0
    assert "<polyline" in overview
    gap = await get(run, "/admin/gap?site=shop&days=30", headers)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in gap
    assert "<script>" not in gap
    assert "dead_letter" in gap
    assert "20.0%" in gap
    events = await get(run, "/admin/events", headers)
    assert "order-1" in events
    assert "event_name" in events


async def test_without_an_admin_token_the_dashboard_is_off(tmp_path: Path) -> None:
    async with dashboard_run(tmp_path, admin=False) as r:
        resp = await r.client.get("/admin/login")
        assert resp.status == 403
        resp = await r.client.post("/admin/login", data={"token": ""})
        assert resp.status == 403


@pytest.mark.parametrize(
    ("given", "goes_to"),
    [
        ("https://evil.example/admin", "./"),
        ("//evil.example/admin", "./"),
        ("../v1/debug/recent", "./"),
        ("/elsewhere", "./"),
        ("/admin/errors", "./"),
        ("", "./"),
        ("errors", "errors"),
        ("dead?route=shop:meta", "dead?route=shop:meta"),
    ],
)
async def test_login_only_returns_to_a_dashboard_page(run: Run, given: str, goes_to: str) -> None:
    resp = await run.client.post(
        "/admin/login", data={"token": ADMIN_TOKEN, "next": given}, allow_redirects=False
    )
    run.client.session.cookie_jar.clear()
    assert resp.status == 303
    assert resp.headers["Location"] == goes_to


async def test_dead_letter_filters(run: Run) -> None:
    await run.play()
    await run.deliver()
    headers = await session(run)
    bad = await get(run, "/admin/dead?reason=bogus&since=yesterday", headers)
    assert "Invalid filter" in bad
    assert "reason: expected one of" in bad
    assert "since: expected Unix seconds" in bad
    none = await get(run, "/admin/dead?route=shop:meta&reason=too_old", headers)
    assert "order-3" not in none
    assert "Nothing yet." in none
    some = await get(run, "/admin/dead?route=shop:meta&reason=invalid_field", headers)
    assert "order-3" in some
    assert "order-7" in some
    later = await get(run, "/admin/dead?since=2999-01-01T00:00", headers)
    assert "order-3" not in later
