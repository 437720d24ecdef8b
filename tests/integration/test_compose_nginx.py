"""compose.yaml's nginx config (deploy/compose-nginx.conf) in a real nginx (Debian's package) in
front of a real gateway: `nginx -t` accepts it, the loader and the shim come through with the
repository's bytes, and `signalgate healthcheck` through nginx passes, then fails once the
gateway behind it is gone (nginx answers 502).

The file is used as compose mounts it (inside nginx's http block); only the upstream address
(the compose service name) and the listen port are rewritten to loopback ones.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from binaries import require_binary
from conftest import ConfigFactory

from gateway.app import create_app
from gateway.web.static import PLACEHOLDER, collect_reference

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "deploy" / "compose-nginx.conf"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nginx_config(folder: Path, listen: int, upstream: int) -> Path:
    """Wrap the compose server config the way the nginx image's nginx.conf includes it."""
    site = CONF.read_text()
    assert "server signalgate:8080;" in site
    assert "listen 80;" in site
    site = site.replace("server signalgate:8080;", f"server 127.0.0.1:{upstream};")
    site = site.replace("listen 80;", f"listen 127.0.0.1:{listen};")
    (folder / "default.conf").write_text(site)
    temp = "".join(
        f"{kind}_temp_path {folder / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach tmp_path
    main = folder / "nginx.conf"
    main.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'error.log'} warn;\n"
        "events { worker_connections 64; }\n"
        f"http {{\naccess_log off;\n{temp}include {folder / 'default.conf'};\n}}\n"
    )
    return main


def get(url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return int(answer.status), answer.read()


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"nginx exited {proc.returncode}: {log.read_text() if log.exists() else ''}"
            )
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail("nginx did not listen within 20 s")


def healthcheck(config: Path, url: str) -> subprocess.CompletedProcess[str]:
    code = "import sys\nfrom gateway.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, "healthcheck", "--config", str(config), "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
async def gateway_server(make_config: ConfigFactory) -> AsyncIterator[TestServer]:
    server = TestServer(create_app(make_config(), run_workers=False), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def test_compose_nginx_serves_the_gateway_scripts(
    gateway_server: TestServer, tmp_path: Path
) -> None:
    nginx = require_binary("nginx")
    port = free_port()
    main = nginx_config(tmp_path, port, gateway_server.port or 0)
    checked = await asyncio.to_thread(
        subprocess.run,
        [nginx, "-t", "-p", str(tmp_path), "-c", str(main)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    proc = subprocess.Popen(
        [nginx, "-p", str(tmp_path), "-c", str(main)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[[sites]]\nid = "shop"\napi_keys = ["sg_test_key_0123456789abcdef"]\n'
        '[sites.destinations.meta]\npixel_id = "1234567890"\naccess_token = "t"\n'
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(wait_port, port, proc, tmp_path / "error.log")
        loader = (ROOT / "static_js" / "loader.js").read_bytes()
        fill = collect_reference("/sg.js", "/e").encode()
        assert await asyncio.to_thread(get, url + "/sg.js") == (
            200,
            loader.replace(PLACEHOLDER.encode(), fill),
        )
        shim = (ROOT / "static_js" / "shim.js").read_bytes()
        assert await asyncio.to_thread(get, url + "/i.js") == (200, shim)
        healthy = await asyncio.to_thread(healthcheck, config, url)
        assert (healthy.returncode, healthy.stderr) == (0, "")
        await gateway_server.close()  # the gateway behind nginx goes away
        sick = await asyncio.to_thread(healthcheck, config, url)
        assert sick.returncode == 1
        assert sick.stderr.startswith("signalgate healthcheck: GET /healthz answered 502")
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)
