"""Browser assets come from the installed package; a missing one stops start-up in one line; the
healthcheck command fails while the gateway cannot serve its scripts.

The wheel itself (a non-editable install run from another directory) is
tests/integration/test_packaging.py.
"""

from __future__ import annotations

import asyncio
import gzip
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import API_KEY, ConfigFactory, GatewayFactory, base_doc

from gateway import healthcheck
from gateway.app import create_app
from gateway.config import parse
from gateway.web import static
from gateway.web.static import PLACEHOLDER, AssetMissing, collect_reference

ROOT = Path(__file__).resolve().parents[2]
LOADER_BYTES = (ROOT / "static_js" / "loader.js").read_bytes()
SHIM_BYTES = (ROOT / "static_js" / "shim.js").read_bytes()


def expected_loader(loader_path: str = "/sg.js", collect_path: str = "/e") -> bytes:
    fill = collect_reference(loader_path, collect_path).encode()
    return LOADER_BYTES.replace(PLACEHOLDER.encode(), fill)


async def test_loader_and_shim_are_the_repository_bytes(
    make_config: ConfigFactory, gateway: GatewayFactory
) -> None:
    client = await gateway(make_config(), run_workers=False)
    loader = await client.get("/sg.js", headers={"Accept-Encoding": "identity"})
    assert loader.status == 200
    assert loader.content_type == "application/javascript"
    assert await loader.read() == expected_loader()
    shim = await client.get("/i.js", headers={"Accept-Encoding": "identity"})
    assert shim.status == 200
    assert shim.content_type == "application/javascript"
    assert await shim.read() == SHIM_BYTES
    # the shim gets the loader's caching: gzip on request, 304 on a matching ETag
    zipped = await client.get("/i.js", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await zipped.read()) == SHIM_BYTES
    again = await client.get("/i.js", headers={"If-None-Match": shim.headers["ETag"]})
    assert again.status == 304


async def test_shim_path_moves_or_turns_off(
    make_config: ConfigFactory, gateway: GatewayFactory
) -> None:
    moved = await gateway(make_config(site={"shim_path": "/x/ids.js"}), run_workers=False)
    assert (await moved.get("/i.js")).status == 404
    answer = await moved.get("/x/ids.js", headers={"Accept-Encoding": "identity"})
    assert await answer.read() == SHIM_BYTES
    off = await gateway(make_config(site={"shim_path": ""}), run_workers=False)
    assert (await off.get("/i.js")).status == 404
    assert (await off.get("/sg.js")).status == 200


def test_a_path_serves_one_thing(tmp_path: Path) -> None:
    doc = base_doc(tmp_path)
    doc["sites"][0]["shim_path"] = "/sg.js"
    with pytest.raises(
        Exception, match=r"sites\[0\]\.shim_path: /sg.js is already the loader_path"
    ):
        parse(doc, {}, tmp_path)


@pytest.mark.parametrize(("attr", "role"), [("LOADER", "loader"), ("SHIM", "shim")])
def test_missing_asset_stops_create_app(
    make_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch, attr: str, role: str
) -> None:
    monkeypatch.setattr(static, attr, "gone.js")
    with pytest.raises(AssetMissing) as info:
        create_app(make_config(), run_workers=False)
    assert str(info.value) == (
        f"{role} asset gateway/static_js/gone.js is missing from the installed package"
    )


def test_missing_asset_package_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(static, "ASSET_PACKAGE", "gateway.no_such_assets")
    with pytest.raises(AssetMissing, match=r"loader asset gateway/no_such_assets/loader\.js"):
        static.loader_asset("/sg.js", "/e")


def write_config(tmp_path: Path, port: int = 8080, **site: Any) -> Path:
    """Write a literal TOML config (no env secrets) for a gateway on 127.0.0.1:`port`."""
    extra = "".join(f'{key} = "{value}"\n' for key, value in site.items())
    path = tmp_path / "signalgate.toml"
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[storage]\npath = "{tmp_path / "data" / "sg.db"}"\n'
        f'[[sites]]\nid = "shop"\napi_keys = ["{API_KEY}"]\n{extra}'
        '[sites.destinations.meta]\npixel_id = "1234567890"\naccess_token = "token"\n'
        'api_base = "http://127.0.0.1:9"\n'
    )
    return path


def run_cli(*args: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """Run `signalgate ARGS` in a child interpreter (after `prelude`), bounded in time."""
    code = f"{prelude}\nimport sys\nfrom gateway.cli import main\nsys.exit(main({list(args)!r}))"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_run_with_a_missing_asset_exits_with_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, port=0)
    prelude = "import gateway.web.static as s\ns.LOADER = 'gone.js'"
    done = run_cli("run", "--config", str(config), prelude=prelude)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "signalgate: loader asset gateway/static_js/gone.js is missing from the installed package"
    ]
    assert "listening" not in done.stdout


def test_demo_with_a_missing_shim_exits_with_one_line(tmp_path: Path) -> None:
    ports = ("--port", "0", "--sandbox-port", "0", "--shop-port", "0")
    prelude = "import gateway.web.static as s\ns.SHIM = 'gone.js'"
    done = run_cli("demo", *ports, "--data-dir", str(tmp_path), prelude=prelude)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "signalgate: shim asset gateway/static_js/gone.js is missing from the installed package"
    ]


def test_run_with_a_missing_config_file_exits_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    done = run_cli("run", "--config", str(missing))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"signalgate: cannot read config file {missing}: No such file or directory"
    ]


async def start(app: web.Application) -> TestServer:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


def healthz_only() -> web.Application:
    """A gateway as a non-editable install used to be: /healthz green, no loader (404)."""

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    return app


async def test_healthcheck_passes_on_a_serving_gateway(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config()
    server = await start(create_app(config, run_workers=False))
    try:
        base = str(server.make_url("")).rstrip("/")
        probes = healthcheck.probes(config)
        assert [p.path for p in probes] == ["/healthz", "/sg.js", "/i.js"]
        assert await asyncio.to_thread(healthcheck.check, base, probes) == []
        path = write_config(tmp_path, port=server.port or 0)
        done = await asyncio.to_thread(run_cli, "healthcheck", "--config", str(path))
        assert (done.returncode, done.stderr) == (0, "")
    finally:
        await server.close()


async def test_healthcheck_fails_when_the_loader_is_not_served(tmp_path: Path) -> None:
    server = await start(healthz_only())
    try:
        path = write_config(tmp_path, port=server.port or 0)
        done = await asyncio.to_thread(run_cli, "healthcheck", "--config", str(path))
        assert done.returncode == 1
        assert done.stderr.splitlines() == [
            "signalgate healthcheck: GET /sg.js answered 404; GET /i.js answered 404"
        ]
    finally:
        await server.close()


async def test_healthcheck_fails_when_nothing_listens(tmp_path: Path) -> None:
    server = await start(healthz_only())
    port = server.port or 0
    await server.close()
    done = await asyncio.to_thread(
        run_cli, "healthcheck", "--config", str(write_config(tmp_path, port=port)), "--timeout", "5"
    )
    assert done.returncode == 1
    assert done.stderr.startswith("signalgate healthcheck: GET /healthz failed: ")
    assert len(done.stderr.splitlines()) == 1


def test_healthcheck_refuses_a_non_http_url() -> None:
    assert healthcheck.check("file:///etc", healthcheck.probes(parse({}, {}, Path(".")))) == [
        "'file:///etc' is not an http(s) URL"
    ]


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:8080"),
        ("::", "http://[::1]:8080"),
        ("10.1.2.3", "http://10.1.2.3:8080"),
        ("localhost", "http://localhost:8080"),
    ],
)
def test_healthcheck_url_of_a_wildcard_bind_is_loopback(host: str, url: str) -> None:
    config = parse({"server": {"host": host}}, {}, Path("."))
    assert healthcheck.local_base_url(config) == url
