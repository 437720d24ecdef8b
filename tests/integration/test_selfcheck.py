"""GET /selfcheck: the visitor's own cookies as the gateway set them, and Safari's verdict."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock

sys.path.insert(0, str(Path(__file__).parents[1]))

from fakedns import FakeResolver

from gateway.config import ConfigError
from gateway.core.safari import CAP_SECONDS
from gateway.web.selfcheck import SELFCHECK

ORIGIN = "https://www.shop.test"
HOST = "track.shop.test"
SHOP = "www.shop.test"


def site(**extra: Any) -> dict[str, Any]:
    return {"hosts": [HOST, SHOP], "allowed_origins": [ORIGIN], **extra}


CNAMED = FakeResolver(
    cnames={HOST: "edge.gw-vendor.example"},
    addresses={"edge.gw-vendor.example": ["198.51.100.7"], SHOP: ["203.0.113.10"]},
)
CLOSE = FakeResolver(addresses={HOST: ["203.0.77.1"], SHOP: ["203.0.113.10"]})


async def start(gateway: Any, make_config: Any, resolver: FakeResolver, **kw: Any) -> Any:
    client = await gateway(make_config(site=site(**kw.pop("site", {})), **kw), run_workers=False)
    if SELFCHECK in client.app:  # absent when selfcheck_path is ""
        client.app[SELFCHECK].resolver = resolver
    return client


async def landing_cookies(client: Any, host: str = HOST) -> tuple[dict[str, str], dict[str, str]]:
    """Post a landing hit with click ids; return cookie values and their Set-Cookie tails."""
    body = json.dumps({"event": "PageView", "url": "https://www.shop.test/?fbclid=AbC-1&gclid=Cj0"})
    resp = await client.post(
        "/e", data=body, headers={"Host": host, "Origin": ORIGIN, "Content-Type": "text/plain"}
    )
    assert resp.status == 204
    values, tails = {}, {}
    for line in resp.headers.getall("Set-Cookie"):
        pair, _, tail = line.partition(";")
        name, _, value = pair.partition("=")
        values[name], tails[name] = value, tail.strip()
    return values, tails


def jar(values: dict[str, str]) -> str:
    return "; ".join(f"{k}={v}" for k, v in values.items())


async def report(client: Any, cookie: str | None = None, host: str = HOST, **headers: str) -> Any:
    if cookie is not None:
        headers["Cookie"] = cookie
    resp = await client.get("/selfcheck?format=json", headers={"Host": host, **headers})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    return await resp.json()


async def test_cookies_of_a_previous_hit_are_shown_with_the_attributes_collect_issued(
    gateway: Any, make_config: Any
) -> None:
    client = await start(gateway, make_config, CLOSE)
    values, tails = await landing_cookies(client)
    assert {"_sgv", "_fbc", "_fbp", "_gcl_aw"} <= set(values)
    doc = await report(client, jar(values))
    rows = {row["name"]: row for row in doc["cookies"]}
    for name, tail in tails.items():
        row = rows[name]
        assert row["attributes"] == tail, name  # exactly what the gateway sent
        assert row["sent"] is True
        assert row["value_prefix"].startswith(values[name][:3])
        assert values[name] not in row["value_prefix"]  # masked
    assert rows["_sgv"]["http_only"] is True
    assert rows["_fbc"]["http_only"] is False
    assert rows["_sgv"]["max_age"] == 400 * 86400
    assert rows["_fbc"]["max_age"] == 90 * 86400
    assert rows["_sgv"]["domain"] == "shop.test"
    assert rows["_sgv"]["same_site"] == "Lax"
    assert rows["ttclid"]["sent"] is False
    assert rows["ttclid"]["value_prefix"] is None
    # A-record in the page host's /16: full lifetime
    assert doc["capped"] is False
    assert rows["_sgv"]["safari_max_age"] == 400 * 86400
    assert doc["page_hosts"] == [SHOP]
    # Direct connection: the address reached (loopback, so not shown) against the page host's.
    assert doc["connected"] == {"address": None, "public": False, "shares_half": False}
    assert doc["host_configured"] is True
    assert doc["via_proxy"] is False


async def test_cname_to_another_site_is_capped_with_the_fix(gateway: Any, make_config: Any) -> None:
    client = await start(gateway, make_config, CNAMED)
    values, _ = await landing_cookies(client)
    doc = await report(client, jar(values))
    assert doc["capped"] is True
    assert {r["name"]: r["safari_max_age"] for r in doc["cookies"]}["_sgv"] == CAP_SECONDS
    by_host = {v["host"]: v for v in doc["verdicts"]}
    track = by_host[HOST]
    assert track["rule"] == "cname"
    assert track["capped"] is True
    assert track["cname_site"] == "gw-vendor.example"
    assert track["cnames"] == ["edge.gw-vendor.example"]
    assert "203.0.0.0/16" in track["fix"]
    assert "path mode" in track["fix"]
    assert by_host[SHOP]["rule"] == "same-host"
    assert by_host[SHOP]["capped"] is False


async def test_path_mode_through_the_shops_proxy_is_never_capped(
    gateway: Any, make_config: Any
) -> None:
    client = await start(gateway, make_config, CNAMED, server={"trusted_proxies": ["127.0.0.1/32"]})
    headers = {"X-Forwarded-For": "198.51.100.20", "X-Forwarded-Proto": "https"}
    doc = await report(client, "_sgv=abc.def", host=SHOP, **headers)
    assert doc["via_proxy"] is True
    assert doc["secure"] is True
    assert doc["capped"] is False
    rows = {row["name"]: row for row in doc["cookies"]}
    assert "Secure" in rows["_sgv"]["attributes"].split("; ")
    assert doc["connected"] is None  # behind a proxy the socket address says nothing


async def test_html_page_is_self_contained_escaped_and_masked(
    gateway: Any, make_config: Any
) -> None:
    client = await start(gateway, make_config, CNAMED)
    values, _ = await landing_cookies(client)
    hostile = "<script>alert(1)</script>"
    values["_fbp"] = hostile  # a cookie-octet value the page must escape
    resp = await client.get("/selfcheck", headers={"Host": HOST, "Cookie": jar(values)})
    assert resp.status == 200
    assert resp.content_type == "text/html"
    csp = resp.headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp)
    assert nonce
    assert "default-src 'none'" in csp
    html = await resp.text()
    assert html.count(f'nonce="{nonce.group(1)}"') == 2  # the one style and the one script
    assert not re.search(r"\s(src|href)=", html)  # nothing external
    assert "<script>alert" not in html
    assert "&lt;scri" in html
    assert values["_sgv"] not in html
    assert values["_fbc"] not in html
    assert 'data-capped="capped to 7 days"' in html
    assert "Safari caps the cookies of this host to 7 days" in html


async def test_rate_limited_per_client(gateway: Any, make_config: Any) -> None:
    clock = FakeClock()
    client = await gateway(make_config(site=site()), run_workers=False, clock=clock)
    client.app[SELFCHECK].resolver = CLOSE
    statuses = [
        (await client.get("/selfcheck?format=json", headers={"Host": HOST})).status
        for _ in range(12)
    ]
    assert statuses == [200] * 10 + [429] * 2
    resp = await client.get("/selfcheck", headers={"Host": HOST})
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "5"
    clock.advance(5.0)
    assert (await client.get("/selfcheck", headers={"Host": HOST})).status == 200


async def test_unknown_host_and_turned_off(gateway: Any, make_config: Any) -> None:
    client = await start(gateway, make_config, CLOSE)
    assert (await client.get("/selfcheck", headers={"Host": "evil.example"})).status == 404
    off = await start(gateway, make_config, CLOSE, site={"selfcheck_path": ""})
    assert (await off.get("/selfcheck", headers={"Host": HOST})).status == 404
    moved = await start(gateway, make_config, CLOSE, site={"selfcheck_path": "/t/check"})
    assert (await moved.get("/t/check?format=json", headers={"Host": HOST})).status == 200


def test_selfcheck_path_may_not_take_another_route(make_config: Any) -> None:
    with pytest.raises(ConfigError, match=r"sites\[0\]\.selfcheck_path: /sg.js is already"):
        make_config(site={"selfcheck_path": "/sg.js"})
    with pytest.raises(ConfigError, match=r"sites\[0\]\.selfcheck_path"):
        make_config(site={"selfcheck_path": "no-slash"})


async def test_dns_failure_gives_an_unknown_verdict_not_an_error(
    gateway: Any, make_config: Any
) -> None:
    client = await start(gateway, make_config, FakeResolver())
    doc = await report(client)
    assert doc["capped"] is None
    track = next(v for v in doc["verdicts"] if v["host"] == HOST)
    assert track["rule"] == "unknown"
    assert "NXDOMAIN" in track["reason"]


def test_readme_states_the_rate_limit_in_force() -> None:
    from gateway.web import selfcheck

    readme = " ".join((Path(__file__).parents[2] / "README.md").read_text().split())
    every = round(1 / selfcheck.PER_CLIENT_PER_SECOND)
    text = (
        f"{int(selfcheck.PER_CLIENT_BURST)} loads per client address, then one every {every} s;"
        f" {int(selfcheck.TOTAL_BURST)}, then {int(selfcheck.TOTAL_PER_SECOND)} a second in all"
    )
    assert text in readme


async def test_a_host_header_the_config_does_not_name_is_never_looked_up(
    gateway: Any, make_config: Any
) -> None:
    # One site without hosts answers on any Host (development): the page must not become a
    # resolver of names a visitor chooses.
    client = await gateway(make_config(site={"allowed_origins": [ORIGIN]}), run_workers=False)
    fake = FakeResolver(addresses={SHOP: ["203.0.113.10"]})
    client.app[SELFCHECK].resolver = fake
    doc = await report(client, host="probe.attacker.example")
    assert fake.asked == [SHOP]
    (verdict,) = doc["verdicts"]
    assert verdict["host"] == "probe.attacker.example"
    assert verdict["capped"] is None
    assert "not a configured host" in verdict["reason"]
