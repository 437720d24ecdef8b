"""Automatic certificates against a real ACME server (Debian's pebble).

The gateway's plain listener answers pebble's HTTP-01 validation; the certificate it writes is
then served over HTTPS and checked by a client that trusts only pebble's issuing root. A
near-expiry certificate is replaced by a later one. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import logging
import ssl
import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from binaries import require_binary
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pebble import Pebble, free_port, running_pebble
from playwright.async_api import async_playwright

from gateway.app import create_app, make_runner
from gateway.autocert.files import is_placeholder
from gateway.autocert.renewal import Renewer
from gateway.autocert.service import AUTOCERT
from gateway.config import Config, parse
from gateway.web.challenge import ChallengeStore

HOST = "track.signalgate.test"
ORDER_TIMEOUT = 90.0
API_KEY = "sg_test_key_0123456789abcdef"


def acme_config(tmp_path: Path, pebble: Pebble, **acme: Any) -> Config:
    doc: dict[str, Any] = {
        "storage": {"path": str(tmp_path / "data" / "outbox.db")},
        "sites": [{"id": "shop", "api_keys": [API_KEY], "hosts": [HOST, "127.0.0.1"]}],
        "acme": {
            "enabled": True,
            "directory_url": pebble.directory_url,
            "ca_bundle": str(pebble.ca_file),
            "email": "ops@signalgate.test",
            **acme,
        },
    }
    return parse(doc, {}, tmp_path)


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


class Served:
    """A gateway serving plain HTTP on the port pebble validates against."""

    def __init__(self, app: web.Application, runner: web.AppRunner, http_port: int) -> None:
        self.app = app
        self.runner = runner
        self.http_port = http_port

    @property
    def renewer(self) -> Renewer:
        return self.app[AUTOCERT]

    async def https_port(self, cert: Path, key: Path) -> int:
        """Serve the same app over TLS with the written files (as the TLS listener would)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        server = site._server
        assert server is not None
        return int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Callable[[Config, int], Any]]:
    runners: list[web.AppRunner] = []

    async def start(config: Config, http_port: int) -> Served:
        app = create_app(config, run_workers=False)
        runner = make_runner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", http_port).start()
        return Served(app, runner, http_port)

    yield start
    for runner in runners:
        await runner.cleanup()


async def https_get(port: int, root_pem: bytes, path: str) -> tuple[bytes, dict[str, Any]]:
    """GET `path` over TLS from 127.0.0.1:`port` as HOST, trusting only `root_pem`."""
    context = ssl.create_default_context(cadata=root_pem.decode())  # verifies chain + name
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=HOST), 10
    )
    peer = writer.get_extra_info("peercert")
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer, peer


def self_signed(cert_file: Path, key_file: Path, days: float) -> x509.Certificate:
    """Write a certificate for HOST valid `days` more (the near-expiry one to replace)."""
    now = dt.datetime.now(tz=dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=60))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert


@pytest.fixture
def tokens(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record every (token, key authorisation) the ACME client publishes."""
    seen: list[tuple[str, str]] = []
    original = ChallengeStore.put

    def put(self: ChallengeStore, token: str, key_authorization: str) -> None:
        seen.append((token, key_authorization))
        original(self, token, key_authorization)

    monkeypatch.setattr(ChallengeStore, "put", put)
    return seen


@pytest.mark.timeout(180)
async def test_gateway_obtains_a_certificate_and_serves_https_with_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    serve: Callable[[Config, int], Any],
    tokens: list[tuple[str, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)  # the TLS files default to certs/ under the working directory
    caplog.set_level(logging.DEBUG)
    http_port = free_port()
    with running_pebble(tmp_path / "pebble", http_port) as pebble:
        served: Served = await serve(acme_config(tmp_path, pebble), http_port)
        await wait_for(lambda: served.renewer.renewals >= 1, ORDER_TIMEOUT, "the first order")
        root = await asyncio.to_thread(pebble.issuing_root)

    cert_file, key_file = tmp_path / "certs/cert.pem", tmp_path / "certs/key.pem"
    leaf = x509.load_pem_x509_certificate(cert_file.read_bytes())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [HOST]  # 127.0.0.1 is not certified
    assert "Pebble" in leaf.issuer.rfc4514_string()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "certs/acme-account.pem").stat().st_mode) == 0o600
    assert not list((tmp_path / "certs").glob("*.tmp"))  # atomic writes left nothing behind

    port = await served.https_port(cert_file, key_file)
    answer, peer = await https_get(port, root, "/sg.js")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b"javascript" in answer.split(b"\r\n\r\n")[0].lower()
    assert ("DNS", HOST) in peer["subjectAltName"]
    health, _ = await https_get(port, root, "/healthz")
    assert health.startswith(b"HTTP/1.1 200")

    # The challenge was answered and withdrawn; nothing secret reached a log line.
    assert tokens
    assert served.renewer.reason() is None  # the new certificate needs no renewal
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "ACME: new certificate for track.signalgate.test" in logged
    for token, key_authorization in tokens:
        assert token not in logged
        assert key_authorization not in logged
    key_text = key_file.read_text().splitlines()[1]
    assert key_text not in logged


@pytest.mark.timeout(180)
async def test_a_near_expiry_certificate_is_renewed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: Callable[[Config, int], Any]
) -> None:
    monkeypatch.chdir(tmp_path)
    cert_file, key_file = tmp_path / "certs/cert.pem", tmp_path / "certs/key.pem"
    old = self_signed(cert_file, key_file, days=1)
    old_key = key_file.read_bytes()
    http_port = free_port()
    with running_pebble(tmp_path / "pebble", http_port) as pebble:
        served: Served = await serve(acme_config(tmp_path, pebble, renew_days=30), http_port)
        await wait_for(lambda: served.renewer.renewals >= 1, ORDER_TIMEOUT, "the renewal")
        root = await asyncio.to_thread(pebble.issuing_root)
        assert await served.renewer.check() is False  # a second check leaves it alone

    new = x509.load_pem_x509_certificate(cert_file.read_bytes())
    assert new.not_valid_after_utc > old.not_valid_after_utc + dt.timedelta(days=30)
    assert new.issuer != old.issuer
    assert key_file.read_bytes() != old_key
    port = await served.https_port(cert_file, key_file)  # the new key matches the new chain
    answer, peer = await https_get(port, root, "/healthz")
    assert answer.startswith(b"HTTP/1.1 200")
    assert ("DNS", HOST) in peer["subjectAltName"]


@pytest.mark.timeout(120)
async def test_an_unreachable_ca_is_one_log_line_and_the_gateway_keeps_serving(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    serve: Callable[[Config, int], Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    closed = free_port()  # nothing listens there
    doc: dict[str, Any] = {
        "storage": {"path": str(tmp_path / "outbox.db")},
        "sites": [{"id": "shop", "api_keys": [API_KEY], "hosts": [HOST]}],
        "acme": {"enabled": True, "directory_url": f"https://127.0.0.1:{closed}/dir"},
    }
    served: Served = await serve(parse(doc, {}, tmp_path), free_port())
    await wait_for(lambda: served.renewer.failures >= 1, 30, "the failed order")
    failures = [r for r in caplog.records if "certificate order failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].levelno == logging.WARNING
    assert failures[0].exc_info is None  # one line, no traceback
    assert "\n" not in failures[0].getMessage()
    assert "ConnectionError" in failures[0].getMessage()
    assert "retrying in 60s" in failures[0].getMessage()
    answer = await asyncio.wait_for(_plain_get(served.http_port, "/healthz"), 10)
    assert answer.startswith(b"HTTP/1.1 200")
    # Meanwhile a self-signed placeholder lets the TLS listener start (and is still to renew).
    cert_file, key_file = tmp_path / "certs/cert.pem", tmp_path / "certs/key.pem"
    assert is_placeholder(x509.load_pem_x509_certificate(cert_file.read_bytes()))
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert served.renewer.reason() == "only the self-signed placeholder so far"
    port = await served.https_port(cert_file, key_file)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=HOST), 10
    )
    writer.write(f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
    assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 200")
    writer.close()


async def _plain_get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
    answer = await reader.read()
    writer.close()
    return answer


@pytest.mark.timeout(180)
async def test_chromium_loads_the_loader_over_the_acme_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: Callable[[Config, int], Any]
) -> None:
    chromium = require_binary("chromium")
    monkeypatch.chdir(tmp_path)
    http_port = free_port()
    with running_pebble(tmp_path / "pebble", http_port) as pebble:
        served: Served = await serve(acme_config(tmp_path, pebble), http_port)
        await wait_for(lambda: served.renewer.renewals >= 1, ORDER_TIMEOUT, "the first order")
        root = x509.load_pem_x509_certificate(await asyncio.to_thread(pebble.issuing_root))
    port = await served.https_port(tmp_path / "certs/cert.pem", tmp_path / "certs/key.pem")
    # Chromium has no pebble root in its store, and its key pin flag only matches certificates
    # the server presents: pin the chain's intermediate, after checking that pebble's root
    # issued it (the leaf's chain to the root itself is verified by https_get below).
    chain = x509.load_pem_x509_certificates((tmp_path / "certs/cert.pem").read_bytes())
    assert len(chain) >= 2
    chain[1].verify_directly_issued_by(root)
    chain[0].verify_directly_issued_by(chain[1])
    spki = (
        chain[1]
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-quic",
        f"--host-resolver-rules=MAP {HOST} 127.0.0.1, MAP * ~NOTFOUND",
        f"--ignore-certificate-errors-spki-list={pin}",
    ]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=flags)
        try:
            page = await browser.new_page()
            response = await page.goto(f"https://{HOST}:{port}/sg.js", timeout=30_000)
            assert response is not None
            assert response.status == 200
            assert "javascript" in (await response.header_value("content-type") or "")
            body = await response.body()
            details = await response.security_details()
        finally:
            await browser.close()
    assert details is not None
    assert details.get("subjectName") == HOST
    assert "Pebble" in str(details.get("issuer"))
    answer, _ = await https_get(port, root.public_bytes(serialization.Encoding.PEM), "/sg.js")
    assert body == answer.split(b"\r\n\r\n", 1)[1]  # the same loader bytes


async def test_an_unwritable_certificate_directory_is_one_log_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    serve: Callable[[Config, int], Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "certs").write_text("a file where the directory should be")
    doc: dict[str, Any] = {
        "storage": {"path": str(tmp_path / "outbox.db")},
        "sites": [{"id": "shop", "api_keys": [API_KEY], "hosts": [HOST]}],
        "acme": {"enabled": True, "directory_url": f"https://127.0.0.1:{free_port()}/dir"},
    }
    served: Served = await serve(parse(doc, {}, tmp_path), free_port())
    lines = [r for r in caplog.records if "placeholder" in r.getMessage()]
    assert [r.getMessage() for r in lines] == [
        "ACME: cannot write the placeholder certificate: [Errno 17] File exists: 'certs'"
    ]
    assert lines[0].exc_info is None
    answer = await asyncio.wait_for(_plain_get(served.http_port, "/healthz"), 10)
    assert answer.startswith(b"HTTP/1.1 200")


@pytest.mark.timeout(180)
async def test_a_failed_validation_is_one_line_with_the_reason_and_no_token(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    serve: Callable[[Config, int], Any],
    tokens: list[tuple[str, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.DEBUG)
    nobody = free_port()  # pebble validates here, where nothing answers
    with running_pebble(tmp_path / "pebble", nobody) as pebble:
        served: Served = await serve(acme_config(tmp_path, pebble), free_port())
        await wait_for(lambda: served.renewer.failures >= 1, ORDER_TIMEOUT, "the failed order")
    failed = [r for r in caplog.records if "certificate order failed" in r.getMessage()]
    assert len(failed) == 1
    message = failed[0].getMessage()
    assert "\n" not in message
    assert "urn:ietf:params:acme:error:connection" in message  # the CA's reason, verbatim
    assert failed[0].exc_info is None
    assert HOST in message
    assert tokens
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for token, key_authorization in tokens:
        assert token not in logged
        assert key_authorization not in logged
    assert is_placeholder(
        x509.load_pem_x509_certificate((tmp_path / "certs/cert.pem").read_bytes())
    )
