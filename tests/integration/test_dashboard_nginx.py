"""The dashboard behind the shipped nginx.conf in path mode (www.shop.test/t/ → the gateway with
the /t prefix stripped): its relative links, redirects and Path-less session cookie keep the
operator under /t/admin/."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from conftest import ADMIN_TOKEN
from test_nginx import SHOP, started


def header(headers: list[tuple[str, str]], name: str) -> str:
    return next(v for k, v in headers if k == name)


async def test_the_dashboard_works_under_the_t_prefix(
    tmp_path: Path, make_config: Any, gateway: Any, meta_sandbox: Any
) -> None:
    async with started(tmp_path, make_config, gateway, meta_sandbox) as front:
        status, headers, _ = await front.request(SHOP, "GET", "/t/admin", {})
        assert status == 301
        assert header(headers, "location") == "admin/"  # → /t/admin/
        status, headers, _ = await front.request(SHOP, "GET", "/t/admin/", {})
        assert status == 303
        assert header(headers, "location") == "login?next="  # → /t/admin/login
        form = urlencode({"token": ADMIN_TOKEN, "next": "dead"}).encode()
        status, headers, _ = await front.request(
            SHOP,
            "POST",
            "/t/admin/login",
            {"Content-Type": "application/x-www-form-urlencoded"},
            form,
        )
        assert status == 303
        assert header(headers, "location") == "dead"  # → /t/admin/dead
        cookie = header(headers, "set-cookie")
        assert "; Secure" in cookie  # nginx says https (X-Forwarded-Proto, a trusted proxy)
        assert "Path=" not in cookie  # the browser scopes it to /t/admin
        value = cookie.split(";", 1)[0]
        status, headers, body = await front.request(SHOP, "GET", "/t/admin/dead", {"Cookie": value})
        assert status == 200
        html = body.decode()
        assert "<h1>Dead letters</h1>" in html
        assert re.search(r'<form method="post" action="replay"', html)
        assert 'href="./"' in html  # the overview, /t/admin/
