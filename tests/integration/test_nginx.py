"""The shipped nginx.conf under a real nginx (Debian's package): `nginx -t`, then requests to it.

The file is wrapped as its header documents (included inside `http { }` of a main configuration),
its placeholders replaced by plain string replacement, certificates from a throw-away CA. nginx
listens on 127.0.0.1 at a random high port (never 443), so every check here is also the
"behind a non-443 port" check: Host and Origin carry the port. nginx connects to the gateway from
127.0.0.2 (`proxy_bind`), so the gateway can tell nginx's address from the client's (127.0.0.1).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

sys.path.insert(0, str(Path(__file__).parents[1]))

from binaries import require_binary
from nginxrun import (
    CERTS_PLACEHOLDER,
    SHIPPED,
    Placeholders,
    free_port,
    make_certs,
    nginx_check,
    render_shipped,
    running_nginx,
    write_main_conf,
)

from gateway.app import RUNTIME

SHOP = "www.shop.test"
TRACK = "track.shop.test"
NGINX_ADDRESS = "127.0.0.2"
"""nginx's source address towards the gateway (`proxy_bind`); the client's is 127.0.0.1."""


def _render(tmp_path: Path, upstream: str, port: int, text: str | None = None) -> Path:
    certs = tmp_path / "certs"
    make_certs(certs, [SHOP, TRACK])
    root = tmp_path / "site"
    root.mkdir(exist_ok=True)
    (root / "index.html").write_text("<!doctype html><title>shop</title><p>shop page</p>")
    include = tmp_path / "signalgate-nginx.conf"
    include.write_text(
        render_shipped(
            Placeholders(upstream=upstream, port=port, certs=certs, shop_root=root), text
        )
    )
    return write_main_conf(tmp_path / "nginx", include, extra_http=f"proxy_bind {NGINX_ADDRESS};")


def test_shipped_file_passes_nginx_t_when_included_as_documented(tmp_path: Path) -> None:
    nginx = require_binary("nginx")
    shipped = SHIPPED.read_text()
    header = shipped.split("\n\n", 1)[0]
    assert "include /etc/nginx/signalgate.conf;" in header  # the documented include line
    # Only the certificate directory is replaced: host names, ports, upstream and root stay as
    # shipped (`nginx -t` binds nothing, but it loads the certificates).
    certs = tmp_path / "certs"
    make_certs(certs, ["www.shop.example", "track.shop.example"])
    include = tmp_path / "signalgate.conf"
    include.write_text(shipped.replace(CERTS_PLACEHOLDER, f"{certs}/"))
    result = nginx_check(nginx, write_main_conf(tmp_path / "nginx", include))
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr
    assert "test is successful" in result.stderr


def test_shipped_file_with_its_placeholders_filled_passes_nginx_t(tmp_path: Path) -> None:
    nginx = require_binary("nginx")
    result = nginx_check(nginx, _render(tmp_path, "127.0.0.1:9", free_port()))
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_t_rejects_a_broken_file_so_the_check_above_means_something(tmp_path: Path) -> None:
    nginx = require_binary("nginx")
    broken = SHIPPED.read_text().replace(
        "proxy_http_version 1.1;", "proxy_http_version 1.1;\n        ssl_x on;", 1
    )
    assert broken != SHIPPED.read_text()
    result = nginx_check(nginx, _render(tmp_path, "127.0.0.1:9", free_port(), broken))
    assert result.returncode != 0
    assert "ssl_x" in result.stderr


@dataclass
class Front:
    """nginx in front of a gateway, and how to talk to it."""

    port: int
    ca: ssl.SSLContext
    sandbox: Any
    drain: Callable[[], Any]
    gateway_port: int

    @property
    def shop_origin(self) -> str:
        return f"https://{SHOP}:{self.port}"

    async def request(
        self, host: str, method: str, target: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """One HTTP/1.1 request over TLS to nginx, with SNI and Host `host:port`."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", self.port, ssl=self.ca, server_hostname=host),
            10,
        )
        try:
            head = f"{method} {target} HTTP/1.1\r\nHost: {host}:{self.port}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode() + body)
            raw = await asyncio.wait_for(reader.read(), 15)
        finally:
            writer.close()
        head_bytes, _, payload = raw.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        pairs = [
            (k.strip().lower(), v.strip()) for k, _, v in (x.partition(":") for x in lines[1:])
        ]
        return status, pairs, payload


@asynccontextmanager
async def started(
    tmp_path: Path,
    make_config: Any,
    gateway: Any,
    meta_sandbox: Any,
    *,
    text: str | None = None,
    trusted: bool = True,
    allowed_origins: bool = True,
) -> AsyncIterator[Front]:
    """Start the gateway and nginx in front of it (the shipped file, or `text` instead)."""
    nginx = require_binary("nginx")
    sandbox, api_base = meta_sandbox
    port = free_port()
    config = make_config(
        api_base,
        server={
            "max_body_bytes": 1_048_576,
            "trusted_proxies": [f"{NGINX_ADDRESS}/32"] if trusted else [],
            "cookie_secret": "nginx-test-secret",
        },
        site={
            "hosts": [SHOP, TRACK],
            # Mode B (subdomain) needs the shop's origin listed; mode A is same-origin.
            "allowed_origins": [f"https://{SHOP}:{port}"] if allowed_origins else [],
        },
    )
    client = await gateway(config, run_workers=False)
    conf = _render(tmp_path, f"127.0.0.1:{client.port}", port, text)
    ca = ssl.create_default_context(cafile=str(tmp_path / "certs" / "ca.crt"))
    runtime = client.app[RUNTIME]

    async def drain() -> None:
        for worker in runtime.workers.values():
            await worker.drain()

    async with running_nginx(nginx, conf, port):
        yield Front(port, ca, sandbox, drain, client.port)


@pytest.fixture
async def front(
    tmp_path: Path, make_config: Any, gateway: Any, meta_sandbox: Any
) -> AsyncIterator[Front]:
    async with started(tmp_path, make_config, gateway, meta_sandbox) as running:
        yield running


def _cookies(headers: list[tuple[str, str]]) -> dict[str, str]:
    return {v.split("=", 1)[0]: v for k, v in headers if k == "set-cookie"}


PAGE = "/?fbclid=AbC-123&gclid=Cj0KCQ&ttclid=E.C.P.x"
HIT = {"event": "PageView", "event_id": "ev-nginx-1", "url": ""}


async def collect(front: Front, host: str, target: str) -> tuple[int, list[tuple[str, str]]]:
    """Post one loader hit from the shop's landing page (an ad click) through nginx."""
    hit = dict(HIT, url=front.shop_origin + PAGE)
    status, headers, _ = await front.request(
        host,
        "POST",
        target,
        {
            "Origin": front.shop_origin,
            "Content-Type": "text/plain",
            "X-Forwarded-For": "203.0.113.9",  # forged by the client: nginx appends the real one
            "User-Agent": "nginx-test",
        },
        json.dumps(hit).encode(),
    )
    return status, headers


async def client_ip_seen(front: Front) -> str:
    """Deliver the one event the gateway holds; return the client IP it sent to Meta."""
    await front.drain()
    (event,) = front.sandbox.recorder.accepted
    return str(event["user_data"]["client_ip_address"])


@pytest.mark.parametrize(("host", "target"), [(SHOP, "/t/e"), (TRACK, "/e")])
async def test_collect_through_nginx_on_a_non_443_port_sets_first_party_cookies(
    front: Front, host: str, target: str
) -> None:
    status, headers = await collect(front, host, target)
    assert status == 204, headers
    assert ("access-control-allow-origin", front.shop_origin) in headers
    cookies = _cookies(headers)
    assert {"_fbc", "_fbp", "_gcl_aw", "ttclid", "_sgv"} <= set(cookies), cookies
    for name in ("_fbc", "_gcl_aw", "ttclid"):
        assert "Domain=shop.test" in cookies[name]
        assert "Max-Age=7776000" in cookies[name]  # click_cookie_days = 90
        assert "Secure" in cookies[name]  # X-Forwarded-Proto: https from nginx
    for name in ("_fbp", "_sgv"):
        assert "Domain=shop.test" in cookies[name]
        assert "Max-Age=34560000" in cookies[name]  # id_cookie_days = 400
        assert "Secure" in cookies[name]
    # The real client (127.0.0.1), not nginx (127.0.0.2), not the forged 203.0.113.9.
    assert await client_ip_seen(front) == "127.0.0.1"


async def test_without_nginx_in_trusted_proxies_the_gateway_sees_nginx_as_the_client(
    tmp_path: Path, make_config: Any, gateway: Any, meta_sandbox: Any
) -> None:
    async with started(tmp_path, make_config, gateway, meta_sandbox, trusted=False) as front:
        status, _ = await collect(front, SHOP, "/t/e")
        assert status == 204
        assert await client_ip_seen(front) == NGINX_ADDRESS


async def test_forwarding_host_without_its_port_breaks_path_mode_so_the_file_keeps_it(
    tmp_path: Path, make_config: Any, gateway: Any, meta_sandbox: Any
) -> None:
    shipped = SHIPPED.read_text()
    assert "proxy_set_header Host $signalgate_host;" in shipped
    assert "$http_host" in shipped
    portless = shipped.replace(
        "proxy_set_header Host $signalgate_host;", "proxy_set_header Host $host;"
    )
    async with started(
        tmp_path, make_config, gateway, meta_sandbox, allowed_origins=False
    ) as front:
        status, headers = await collect(front, SHOP, "/t/e")
    assert status == 204, headers  # path mode needs no allowed_origins entry: same origin
    async with started(
        tmp_path / "portless",
        make_config,
        gateway,
        meta_sandbox,
        text=portless,
        allowed_origins=False,
    ) as front:
        status, headers = await collect(front, SHOP, "/t/e")
    # Origin https://www.shop.test:<port> against Host www.shop.test: not the same origin.
    assert status == 403, headers


async def test_the_loader_is_served_under_both_modes(front: Front) -> None:
    for host, target in ((SHOP, "/t/sg.js"), (TRACK, "/sg.js")):
        status, _, body = await front.request(host, "GET", target, {})
        assert status == 200, (host, status, body[:200])
        assert b"function" in body
    status, _, body = await front.request(SHOP, "GET", "/index.html", {})
    assert (status, b"shop page" in body) == (200, True)


async def test_a_body_over_the_gateway_limit_is_refused_by_nginx(front: Front) -> None:
    status, _, body = await front.request(
        SHOP,
        "POST",
        "/t/e",
        {"Origin": front.shop_origin, "Content-Type": "text/plain"},
        b"x" * (1_048_576 + 1),
    )
    assert status == 413
    assert b"nginx" in body  # refused at the edge, before the gateway


def _connections_from_nginx(gateway_port: int) -> int:
    """Count the gateway's established TCP connections whose peer is nginx (127.0.0.2)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if state == "01" and int(local.split(":")[1], 16) == gateway_port:
            count += remote.split(":")[0] == "0200007F"  # 127.0.0.2, little-endian hex
    return count


async def test_nginx_keeps_its_connection_to_the_gateway_open_and_reuses_it(front: Front) -> None:
    assert _connections_from_nginx(front.gateway_port) == 0
    for _ in range(5):  # five clients, one after the other, each on its own connection
        status, _, _ = await front.request(TRACK, "GET", "/sg.js", {})
        assert status == 200
    # Each client closed its connection to nginx; nginx keeps one idle upstream connection.
    assert 1 <= _connections_from_nginx(front.gateway_port) <= 2


async def test_http2_clients_get_the_same_answer_host_and_port_included(
    tmp_path: Path, make_config: Any, gateway: Any, meta_sandbox: Any
) -> None:
    curl = require_binary("curl")
    shipped = SHIPPED.read_text()
    assert shipped.count("\n    listen 443 ssl;") == 2
    h2 = shipped.replace("\n    listen 443 ssl;", "\n    listen 443 ssl http2;")
    async with started(
        tmp_path, make_config, gateway, meta_sandbox, text=h2, allowed_origins=False
    ) as front:
        hit = json.dumps(dict(HIT, url=front.shop_origin + PAGE))
        headers = tmp_path / "headers.txt"
        url = f"{front.shop_origin}/t/e"
        result = await asyncio.to_thread(
            subprocess.run,
            [curl, "-s", "--http2", "--cacert", str(tmp_path / "certs" / "ca.crt"),
             "--resolve", f"{SHOP}:{front.port}:127.0.0.1", "-H", f"Origin: {front.shop_origin}",
             "-H", "Content-Type: text/plain", "--data-binary", hit, "-D", str(headers),
             "-o", "/dev/null", "-w", "%{http_version} %{response_code}", url],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.stdout == "2 204", (result.stdout, result.stderr)
        head = headers.read_text().lower()
        assert f"access-control-allow-origin: {front.shop_origin}" in head  # same origin, port
        assert "set-cookie: _fbc=" in head
        assert await client_ip_seen(front) == "127.0.0.1"


async def test_an_answer_head_with_several_large_cookies_passes_nginx(tmp_path: Path) -> None:
    """A gateway answer may restore several cookies of up to 4 KiB: nginx's default 4k head
    buffer would make that a 502; the shipped file gives it 16k."""
    nginx = require_binary("nginx")

    async def big_head(request: web.Request) -> web.Response:
        response = web.Response(status=204)
        for i in range(6):
            response.headers.add("Set-Cookie", f"c{i}={'v' * 1500}; Domain=shop.test; Path=/")
        return response

    app = web.Application()
    app.router.add_post("/e", big_head)
    upstream = TestServer(app, host="127.0.0.1")
    await upstream.start_server()
    try:
        port = free_port()
        conf = _render(tmp_path, f"127.0.0.1:{upstream.port}", port)
        ca = ssl.create_default_context(cafile=str(tmp_path / "certs" / "ca.crt"))
        front = Front(port, ca, None, lambda: None, upstream.port)
        async with running_nginx(nginx, conf, port):
            for host, target in ((SHOP, "/t/e"), (TRACK, "/e")):
                status, headers, _ = await front.request(host, "POST", target, {})
                assert status == 204, (host, status)
                assert len(_cookies(headers)) == 6
    finally:
        await upstream.close()
