"""HTTPS served by the gateway itself: the fast lane over TLS, reload, redirect port, start-up."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvloop
from conftest import API_KEY, base_doc
from cryptography import x509
from rawhttp import Conn

from gateway import healthcheck
from gateway.app import create_app, make_runner
from gateway.cli import main
from gateway.config import Config, parse
from gateway.devcerts import DevCerts, write_dev_certs
from gateway.web.challenge import CHALLENGES
from gateway.web.fastlane import LANE, Lane
from gateway.web.tls import TlsServing

HOST = "track.shop.test"
ORIGIN = "https://www.shop.test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tls_config(tmp_path: Path, certs: DevCerts, **tls: Any) -> Config:
    doc = base_doc(tmp_path)
    doc["server"]["cookie_secret"] = "tls-test-cookie-secret"
    doc["sites"][0]["hosts"] = [HOST]
    doc["sites"][0]["allowed_origins"] = [ORIGIN]
    doc["tls"] = {
        "enabled": True,
        "cert_file": str(certs.cert),
        "key_file": str(certs.key),
        "reload_seconds": 0.1,
        **tls,
    }
    return parse(doc, {}, tmp_path)


@dataclass
class Served:
    tls: TlsServing
    lane: Lane
    ca: Path
    app: Any

    @property
    def port(self) -> int:
        return self.tls.https_port

    async def connect(self) -> Conn:
        client = ssl.create_default_context(cafile=self.ca)
        client.set_alpn_protocols(["http/1.1"])
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=client, server_hostname=HOST
        )
        return Conn(reader, writer)


@asynccontextmanager
async def serving(config: Config, ca: Path) -> AsyncIterator[Served]:
    """Serve the gateway as `signalgate run` does with [tls] enabled, on an ephemeral port."""
    app = create_app(config, run_workers=False)
    runner = make_runner(app, access_log=None)
    await runner.setup()
    tls = TlsServing.open(config.tls)
    try:
        await tls.start(runner, "127.0.0.1", 0)
        yield Served(tls, app[LANE], ca, app)
    finally:
        await tls.stop()
        await runner.cleanup()


def request(method: str, target: str, body: bytes = b"", **headers: str) -> bytes:
    fields = {"Host": HOST, **{k.replace("_", "-"): v for k, v in headers.items()}}
    if body or method == "POST":
        fields["Content-Length"] = str(len(body))
    head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return f"{method} {target} HTTP/1.1\r\n{head}\r\n".encode("latin-1") + body


EVENTS = json.dumps({"events": [{"event": "Lead", "source": "other"}]}).encode()
API = {"Authorization": f"Bearer {API_KEY}", "Content_Type": "application/json"}
HIT = json.dumps({"event": "PageView", "url": "https://www.shop.test/?fbclid=AbC-123"}).encode()
COLLECT = {"Origin": ORIGIN, "Content_Type": "text/plain", "User_Agent": "Mozilla/5.0 (tls)"}


def cookies_of(answer: Any) -> dict[str, str]:
    return {line.split("=", 1)[0]: line for line in answer.all("set-cookie")}


async def lane_over_tls(served: Served) -> None:
    """POST /v1/events and /e answered by the lane over TLS; then a handover to aiohttp."""
    lane = served.lane
    conn = await served.connect()
    ssl_object = conn.writer.get_extra_info("ssl_object")
    assert ssl_object.selected_alpn_protocol() == "http/1.1"
    assert ssl_object.version() in ("TLSv1.2", "TLSv1.3")
    accepted = await conn.ask(request("POST", "/v1/events", EVENTS, **API))
    assert accepted.status == 202, accepted.body
    assert json.loads(accepted.body)["accepted"] == 1
    hit = await conn.ask(request("POST", "/e", HIT, **COLLECT))
    assert hit.status == 204
    fast_cookies = cookies_of(hit)
    assert {"_sgv", "_fbc", "_fbp"} <= set(fast_cookies)
    assert all("; Secure" in line for line in fast_cookies.values()), fast_cookies
    assert (lane.fast, lane.handed_over) == (2, 0)  # the lane answered both, over TLS
    # GET /sg.js is aiohttp's: the TLS connection is handed over with its unread bytes.
    loader = await conn.ask(request("GET", "/sg.js"))
    assert loader.status == 200
    assert "javascript" in loader.headers["content-type"]
    assert b"sg" in loader.body
    assert (lane.fast, lane.handed_over) == (2, 1)
    # aiohttp keeps serving that connection, and knows it is HTTPS: Secure cookies too.
    again = await conn.ask(request("POST", "/v1/events", EVENTS, **API))
    assert again.status == 202
    slow_hit = await conn.ask(request("POST", "/e", HIT, **COLLECT))
    assert slow_hit.status == 204
    slow_cookies = cookies_of(slow_hit)
    assert set(slow_cookies) == set(fast_cookies)
    assert all("; Secure" in line for line in slow_cookies.values()), slow_cookies
    assert (lane.fast, lane.handed_over) == (2, 1)
    conn.close()
    # Pipelined: the lane answers the first, hands the rest to aiohttp in order.
    conn = await served.connect()
    await conn.send(
        request("POST", "/v1/events", EVENTS, **API)
        + request("GET", "/healthz")
        + request("POST", "/v1/events", EVENTS, **API)
    )
    assert [(await conn.answer()).status for _ in range(3)] == [202, 200, 202]
    assert (lane.fast, lane.handed_over) == (3, 2)
    conn.close()


@pytest.fixture
def certs(tmp_path: Path) -> DevCerts:
    return write_dev_certs(tmp_path / "certs", [HOST, "127.0.0.1"], datetime.now(UTC))


async def test_the_fast_lane_serves_https(tmp_path: Path, certs: DevCerts) -> None:
    async with serving(tls_config(tmp_path, certs), certs.ca) as served:
        await lane_over_tls(served)


def test_the_fast_lane_serves_https_on_uvloop(tmp_path: Path, certs: DevCerts) -> None:
    """`signalgate run` runs on uvloop, whose TLS transport is its own."""

    async def scenario() -> None:
        async with serving(tls_config(tmp_path, certs), certs.ca) as served:
            await lane_over_tls(served)

    run: Callable[[Coroutine[Any, Any, None]], None] = uvloop.run
    run(scenario())


async def serial_of_new_connection(served: Served) -> int:
    conn = await served.connect()
    try:
        der = conn.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return int(x509.load_der_x509_certificate(der).serial_number)
    finally:
        conn.close()


async def wait_for_serial(served: Served, serial: int, seconds: float = 15.0) -> int:
    """Open new connections until one shows `serial` (or the time is up); return the last."""
    seen = 0
    for _ in range(int(seconds / 0.1)):
        seen = await serial_of_new_connection(served)
        if seen == serial:
            break
        await asyncio.sleep(0.1)
    return seen


async def test_a_replaced_certificate_is_served_without_restart(
    tmp_path: Path, certs: DevCerts, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(tls_config(tmp_path, certs), certs.ca) as served:
        old_conn = await served.connect()
        assert await serial_of_new_connection(served) == certs.serial
        renewed = write_dev_certs(certs.directory, [HOST], datetime.now(UTC))
        assert renewed.serial != certs.serial
        assert await wait_for_serial(served, renewed.serial) == renewed.serial
        assert served.tls.reloader.reloads == 1
        # The connection opened before keeps working.
        assert (await old_conn.ask(request("GET", "/healthz"))).status == 200
        old_conn.close()
        # A broken pair is logged once; the last good certificate stays.
        caplog.clear()  # the reload above logged at INFO
        with caplog.at_level(logging.WARNING, logger="signalgate.tls"):
            certs.key.write_text("not a key\n")
            for _ in range(100):
                await asyncio.sleep(0.1)
                if caplog.records:
                    break
            await asyncio.sleep(0.5)  # several more checks: still one line
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1, lines
        assert "previous one stays" in lines[0]
        assert str(certs.key) in lines[0]
        assert "not a key" not in lines[0]
        assert await serial_of_new_connection(served) == renewed.serial
        # A key that does not match the certificate is refused too.
        other = write_dev_certs(tmp_path / "other", [HOST], datetime.now(UTC))
        certs.key.write_bytes(other.key.read_bytes())
        await asyncio.sleep(0.5)
        assert await serial_of_new_connection(served) == renewed.serial
        assert served.tls.reloader.reloads == 1
        # Repaired: the next pair is loaded.
        fixed = write_dev_certs(certs.directory, [HOST], datetime.now(UTC))
        assert await wait_for_serial(served, fixed.serial) == fixed.serial


async def raw_http(port: int, data: bytes) -> Any:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = Conn(reader, writer)
    try:
        return await conn.ask(data)
    finally:
        conn.close()


async def test_the_http_port_redirects_to_https_except_acme_challenges(
    tmp_path: Path, certs: DevCerts
) -> None:
    http_port = free_port()
    async with serving(tls_config(tmp_path, certs, http_port=http_port), certs.ca) as served:
        https = served.port
        moved = await raw_http(http_port, request("GET", "/sg.js?v=1&x=%20y"))
        assert moved.status == 308
        assert moved.headers["location"] == f"https://{HOST}:{https}/sg.js?v=1&x=%20y"
        posted = await raw_http(http_port, request("POST", "/v1/events", EVENTS, **API))
        assert posted.status == 308  # 308: the client repeats the POST, body and all
        assert posted.headers["location"] == f"https://{HOST}:{https}/v1/events"
        with_port = await raw_http(http_port, request("GET", "/", Host=f"{HOST}:{http_port}"))
        assert with_port.headers["location"] == f"https://{HOST}:{https}/"
        ipv6 = await raw_http(http_port, request("GET", "/a", Host="[::1]:80"))
        assert ipv6.headers["location"] == f"https://[::1]:{https}/a"
        absolute = await raw_http(http_port, request("GET", "http://evil.example/p?q=1"))
        assert absolute.headers["location"] == f"https://{HOST}:{https}/p?q=1"
        bad_host = await raw_http(http_port, request("GET", "/", Host="a b"))
        assert bad_host.status == 400
        # ACME HTTP-01: answered on the plain port (and on https), never redirected.
        store = served.app[CHALLENGES]
        store.put("tok-123_A", "tok-123_A.thumbprint")
        challenge = request("GET", "/.well-known/acme-challenge/tok-123_A")
        secure = await served.connect()
        for answer in (await raw_http(http_port, challenge), await secure.ask(challenge)):
            assert answer.status == 200
            assert answer.body == b"tok-123_A.thumbprint"
            assert answer.headers["content-type"].startswith("text/plain")
        secure.close()
        unknown = await raw_http(http_port, request("GET", "/.well-known/acme-challenge/nope"))
        assert unknown.status == 404
        store.remove("tok-123_A")
        assert (await raw_http(http_port, challenge)).status == 404


def write_config(tmp_path: Path, tls: dict[str, Any]) -> Path:
    path = tmp_path / "gw.toml"
    lines = ["[storage]", f'path = "{tmp_path / "x.db"}"', "[tls]", "enabled = true"]
    lines += [f'{key} = "{value}"' for key, value in tls.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_an_unusable_certificate_stops_start_up_with_one_line(
    tmp_path: Path,
    certs: DevCerts,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("gateway.cli.setup_logging", lambda *args, **kwargs: None)
    missing = tmp_path / "nope.pem"
    config = write_config(tmp_path, {"cert_file": missing, "key_file": certs.key})
    assert main(["run", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err == f"signalgate: tls.cert_file: cannot read {missing}: No such file or directory\n"
    other = write_dev_certs(tmp_path / "other", [HOST], datetime.now(UTC))
    config = write_config(tmp_path, {"cert_file": certs.cert, "key_file": other.key})
    assert main(["run", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"signalgate: tls.key_file: {other.key} is not the key")
    certs.cert.write_text("garbage")
    config = write_config(tmp_path, {"cert_file": certs.cert, "key_file": certs.key})
    assert main(["run", "--config", str(config)]) == 1
    assert (
        capsys.readouterr().err
        == f"signalgate: tls.cert_file: {certs.cert} holds no PEM certificate\n"
    )


async def test_tls_12_and_13_are_served_and_nothing_older(tmp_path: Path, certs: DevCerts) -> None:
    async with serving(tls_config(tmp_path, certs), certs.ca) as served:
        assert served.tls.context.minimum_version == ssl.TLSVersion.TLSv1_2
        for version, name in (
            (ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
            (ssl.TLSVersion.TLSv1_3, "TLSv1.3"),
        ):
            client = ssl.create_default_context(cafile=certs.ca)
            client.minimum_version = client.maximum_version = version
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", served.port, ssl=client, server_hostname=HOST
            )
            conn = Conn(reader, writer)
            assert writer.get_extra_info("ssl_object").version() == name
            assert (await conn.ask(request("GET", "/healthz"))).status == 200
            conn.close()
        # A client that offers no ALPN still gets HTTP/1.1 (curl --no-alpn, old libraries).
        client = ssl.create_default_context(cafile=certs.ca)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", served.port, ssl=client, server_hostname=HOST
        )
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() is None
        conn = Conn(reader, writer)
        assert (await conn.ask(request("POST", "/v1/events", EVENTS, **API))).status == 202
        conn.close()


async def test_healthcheck_probes_the_https_listener(tmp_path: Path, certs: DevCerts) -> None:
    """`signalgate healthcheck` follows [tls]: https on server.port, loader and shim included."""
    config = tls_config(tmp_path, certs)
    assert healthcheck.local_base_url(config).startswith("https://127.0.0.1:")
    async with serving(config, certs.ca) as served:
        base = f"https://127.0.0.1:{served.port}"
        probes = healthcheck.probes(config)
        assert [p.path for p in probes] == ["/healthz", "/sg.js", "/i.js"]
        problems = await asyncio.to_thread(healthcheck.check, base, probes, 5.0)
        assert problems == []
        plain = await asyncio.to_thread(
            healthcheck.check, f"http://127.0.0.1:{served.port}", probes
        )
        assert plain
        assert all("failed" in p for p in plain)
