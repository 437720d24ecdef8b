"""`signalgate check-site URL` end to end: a local gateway, a fake resolver, no internet."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

sys.path.insert(0, str(Path(__file__).parents[1]))

from fakedns import FakeResolver

from gateway import sitecheck
from gateway.app import create_app
from gateway.cli import main
from gateway.sitecheck import CheckError, check_site, exit_code, render_json, render_text
from gateway.web.selfcheck import SELFCHECK

ORIGIN = "https://www.shop.test"
HOST = "track.shop.test"
SHOP = "www.shop.test"

CNAMED = FakeResolver(
    cnames={HOST: "edge.gw-vendor.example"},
    addresses={"edge.gw-vendor.example": ["198.51.100.7"], SHOP: ["203.0.113.10"]},
)
CLOSE = FakeResolver(
    addresses={HOST: ["203.0.77.1", "2001:db8:5:6::7"], SHOP: ["203.0.113.10", "2001:db8:5:6::1"]}
)
FAR = FakeResolver(addresses={HOST: ["192.0.2.1"], SHOP: ["203.0.113.10"]})


class Pinned(httpx.AsyncBaseTransport):
    """Sends every request to 127.0.0.1:<port>, keeping the URL's Host header (as DNS would)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(host="127.0.0.1", port=self.port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def gateway_for(gateway: Any, make_config: Any, **site: Any) -> Any:
    doc_site = {"hosts": [HOST, SHOP], "allowed_origins": [ORIGIN], **site}
    client = await gateway(make_config(site=doc_site), run_workers=False)
    if SELFCHECK in client.app:  # absent when selfcheck_path is ""
        client.app[SELFCHECK].resolver = FakeResolver()  # the page's own verdicts: unused here
    return client


async def test_cname_to_a_hosting_vendor_is_capped_exit_1(gateway: Any, make_config: Any) -> None:
    client = await gateway_for(gateway, make_config)
    port = client.server.port
    report = await check_site(f"http://{HOST}:{port}/", resolver=CNAMED, transport=Pinned(port))
    assert report.selfcheck_url == f"http://{HOST}:{port}/selfcheck?format=json"
    assert report.page_hosts == (SHOP,)
    assert report.served_hosts == (HOST, SHOP)
    assert exit_code(report) == 1
    text = render_text(report)
    assert "track.shop.test → edge.gw-vendor.example  [gw-vendor.example: another site]" in text
    assert "verdict: CAPPED to 7 days" in text
    assert "_sgv 400 d → 7 d" in text
    assert "_fbc 90 d → 7 d" in text
    assert "fix: replace the CNAME of track.shop.test with an A/AAAA record" in text
    assert "203.0.0.0/16" in text
    assert "mode: same host as the pages (path mode)" in text  # www.shop.test itself
    assert text.endswith("result: a Safari cap applies (exit 1)")
    doc = render_json(report)
    json.dumps(doc)  # serialisable
    track = next(h for h in doc["hosts"] if h["host"] == HOST)
    assert track["capped"] is True
    assert track["rule"] == "cname"
    assert {c["name"]: c["safari_max_age"] for c in track["cookies"]}["_sgv"] == 7 * 86400
    assert doc["exit"] == 1
    assert doc["capped"] is True


async def test_a_records_in_the_same_halves_are_fine_exit_0(gateway: Any, make_config: Any) -> None:
    client = await gateway_for(gateway, make_config)
    port = client.server.port
    report = await check_site(f"http://{HOST}:{port}/sg.js", resolver=CLOSE, transport=Pinned(port))
    assert report.selfcheck_url.endswith("/selfcheck?format=json")
    assert exit_code(report) == 0
    text = render_text(report)
    assert "CNAME: none (A/AAAA records)" in text
    assert "203.0.77.1 vs 203.0.113.10: 18 leading bits shared, 16 needed (ok)" in text
    assert "2001:db8:5:6::7 vs 2001:db8:5:6::1: 125 leading bits shared, 64 needed (ok)" in text
    assert "_sgv 400 d," in text
    assert "→" not in text.split("cookies in Safari:")[1]
    assert text.endswith("result: no Safari cap (exit 0)")


async def test_far_address_is_capped_and_page_host_can_be_given(
    gateway: Any, make_config: Any
) -> None:
    client = await gateway_for(gateway, make_config, allowed_origins=[])
    port = client.server.port
    url = f"http://{HOST}:{port}/selfcheck"
    # Without allowed origins the gateway assumes path mode: each host serves its own pages.
    alone = await check_site(url, resolver=FAR, transport=Pinned(port))
    assert alone.page_hosts == (HOST, SHOP)
    assert {h.verdict.rule for h in alone.hosts} == {"same-host"}
    assert exit_code(alone) == 0
    report = await check_site(url, resolver=FAR, transport=Pinned(port), page_hosts=[SHOP])
    assert exit_code(report) == 1
    text = render_text(report)
    assert "192.0.2.1 vs 203.0.113.10: 4 leading bits shared, 16 needed (DIFFERS)" in text
    assert "fix: give track.shop.test A/AAAA records in the site's own network" in text


async def test_dns_failure_is_not_all_good(gateway: Any, make_config: Any) -> None:
    client = await gateway_for(gateway, make_config)
    port = client.server.port
    report = await check_site(
        f"http://{HOST}:{port}/", resolver=FakeResolver(), transport=Pinned(port)
    )
    assert report.capped is None
    assert exit_code(report) == 1
    assert "DNS track.shop.test: no such name (NXDOMAIN)" in render_text(report)
    assert render_text(report).endswith("result: a Safari cap is not ruled out (exit 1)")


async def test_not_a_selfcheck_answer(gateway: Any, make_config: Any) -> None:
    client = await gateway_for(gateway, make_config, selfcheck_path="")
    port = client.server.port
    with pytest.raises(CheckError, match=r"answered 404.*selfcheck_path"):
        await check_site(f"http://{HOST}:{port}/", resolver=CLOSE, transport=Pinned(port))
    with pytest.raises(CheckError, match="did not answer a self-check document"):
        await check_site(f"http://{HOST}:{port}/healthz", resolver=CLOSE, transport=Pinned(port))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://t.shop.example/", "https://t.shop.example/selfcheck?format=json"),
        ("https://www.shop.example/t/", "https://www.shop.example/t/selfcheck?format=json"),
        ("https://www.shop.example/t/sg.js", "https://www.shop.example/t/selfcheck?format=json"),
        ("http://t.shop.example:8080/x", "http://t.shop.example:8080/x?format=json"),
    ],
)
def test_selfcheck_url(url: str, expected: str) -> None:
    assert sitecheck.selfcheck_url(url) == expected


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-site", "ftp://t.shop.example/"]) == 2
    assert "expected an http:// or https:// URL" in capsys.readouterr().err
    assert main(["check-site", "http://t.shop.example:99999/"]) == 2
    assert main(["check-site", f"http://127.0.0.1:{_closed_port()}/", "--timeout", "2"]) == 2
    assert "cannot fetch" in capsys.readouterr().err
    assert main(["check-site", "https://t.shop.example/", "--page-host", "bad host"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["check-site"])
    assert exc.value.code == 2


@contextmanager
def gateway_thread(app: web.Application) -> Iterator[int]:
    """Serve `app` on 127.0.0.1 from a thread of its own (main() runs its own event loop)."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


@pytest.mark.parametrize(("shop_address", "status"), [("127.0.200.9", 0), ("10.1.2.3", 1)])
def test_cli_end_to_end_json(
    make_config: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    shop_address: str,
    status: int,
) -> None:
    fake = FakeResolver(addresses={SHOP: [shop_address]})
    app = create_app(make_config(site={"allowed_origins": [ORIGIN]}), run_workers=False)
    app[SELFCHECK].resolver = fake
    monkeypatch.setattr(sitecheck, "DnsResolver", lambda timeout: fake)
    with gateway_thread(app) as port:
        code = main(["check-site", "--json", f"http://127.0.0.1:{port}/selfcheck"])
    out = capsys.readouterr().out
    assert code == status
    doc = json.loads(out)
    assert doc["exit"] == status
    (host,) = doc["hosts"]
    assert host["host"] == "127.0.0.1"
    assert host["page_host"] == SHOP
    assert host["capped"] is bool(status)
    assert host["addresses"] == ["127.0.0.1"]
    assert host["page_addresses"] == [shop_address]
    assert SHOP in fake.asked
