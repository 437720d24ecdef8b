"""Automatic certificates without a CA: config, the renewal decision and loop, files, the
HTTP-01 answer route. (tests/integration/test_acme_pebble.py runs the real protocol.)"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import stat
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from gateway.autocert.files import (
    is_placeholder,
    load_or_create_account_key,
    read_certificate,
    write_atomic,
    write_placeholder,
)
from gateway.autocert.issuer import AcmeFailure, Issued, safe_reason
from gateway.autocert.renewal import RenewalSettings, Renewer, renewal_reason
from gateway.autocert.service import in_daemon_thread, tls_files
from gateway.config import LETS_ENCRYPT_DIRECTORY, ConfigError, parse
from gateway.web.challenge import ChallengeStore, install

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def errors_of(doc: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse(doc, {}, Path("."))
    return dict(info.value.errors)


def sites(*hosts: str) -> list[dict[str, Any]]:
    return [{"id": "shop", "hosts": list(hosts)}]


class TestConfig:
    def test_defaults(self) -> None:
        config = parse({}, {}, Path("."))
        assert config.acme.enabled is False
        assert config.acme.directory_url == LETS_ENCRYPT_DIRECTORY
        assert config.acme.renew_days == 30.0
        assert config.acme.check_hours == 12.0
        assert config.acme.account_key_file == "certs/acme-account.pem"

    def test_hosts_default_to_public_site_hosts(self) -> None:
        doc = {
            "acme": {"enabled": True},
            "sites": [
                {"id": "a", "hosts": ["Track.Shop.Example", "127.0.0.1", "localhost"]},
                {"id": "b", "hosts": ["track.shop.example", "t.other.example", "x.localhost"]},
            ],
        }
        assert parse(doc, {}, Path(".")).acme_hosts == ("track.shop.example", "t.other.example")

    def test_explicit_hosts_win(self) -> None:
        doc = {"acme": {"enabled": True, "hosts": ["a.shop.example"]}, "sites": sites("b.example")}
        assert parse(doc, {}, Path(".")).acme_hosts == ("a.shop.example",)

    def test_enabled_without_a_public_host_names_the_key(self) -> None:
        errs = errors_of({"acme": {"enabled": True}, "sites": sites("127.0.0.1", "localhost")})
        assert set(errs) == {"acme.hosts"}

    def test_disabled_needs_no_host(self) -> None:
        assert parse({"acme": {"enabled": False}}, {}, Path(".")).acme_hosts == ()

    def test_bad_values_name_their_keys(self, tmp_path: Path) -> None:
        errs = errors_of(
            {
                "acme": {
                    "enabled": True,
                    "directory_url": "ftp://ca.example/dir",
                    "email": "not-an-address",
                    "hosts": ["ok.example", "bad host", "*.wild.example"],
                    "renew_days": 0,
                    "check_hours": "12",
                    "ca_bundle": str(tmp_path / "missing.pem"),
                    "colour": "blue",
                }
            }
        )
        assert set(errs) == {
            "acme.directory_url",
            "acme.email",
            "acme.hosts[1]",
            "acme.hosts[2]",
            "acme.renew_days",
            "acme.check_hours",
            "acme.colour",
        }
        assert errs["acme.renew_days"] == "expected >= 1.0"

    def test_missing_ca_bundle_names_the_key(self, tmp_path: Path) -> None:
        doc = {
            "acme": {"enabled": True, "ca_bundle": str(tmp_path / "missing.pem")},
            "sites": sites("t.shop.example"),
        }
        errs = errors_of(doc)
        assert list(errs) == ["acme.ca_bundle"]
        assert errs["acme.ca_bundle"].startswith("file not found")

    def test_environment_overrides(self) -> None:
        config = parse({}, {"SIGNALGATE__ACME__RENEW_DAYS": "20"}, Path("."))
        assert config.acme.renew_days == 20.0


def certificate(names: list[str], not_after: dt.datetime) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(not_after - dt.timedelta(days=90))
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .sign(key, hashes.SHA256())
    )


class TestRenewalReason:
    hosts = ("a.example", "b.example")

    def test_no_certificate(self) -> None:
        assert renewal_reason(None, self.hosts, NOW, 30) == "no certificate yet"

    def test_a_host_not_covered(self) -> None:
        cert = certificate(["a.example"], NOW + dt.timedelta(days=80))
        assert renewal_reason(cert, self.hosts, NOW, 30) == "certificate does not cover b.example"

    def test_near_expiry(self) -> None:
        cert = certificate(["b.example", "A.example"], NOW + dt.timedelta(days=29, hours=12))
        assert renewal_reason(cert, self.hosts, NOW, 30) == "certificate expires in 29.5 days"

    def test_expired(self) -> None:
        cert = certificate(list(self.hosts), NOW - dt.timedelta(days=1))
        assert renewal_reason(cert, self.hosts, NOW, 30) == "certificate expires in -1.0 days"

    def test_fresh_enough(self) -> None:
        cert = certificate([*self.hosts, "c.example"], NOW + dt.timedelta(days=31))
        assert renewal_reason(cert, self.hosts, NOW, 30) is None


class Stop(Exception):
    pass


class TestRenewer:
    async def test_failures_back_off_then_the_check_interval_resumes(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        calls: list[int] = []
        sleeps: list[float] = []

        async def order() -> Issued:
            calls.append(1)
            if len(calls) <= 3:
                raise AcmeFailure("ConnectionError: no route to the CA")
            return Issued(hosts=("a.example",), not_after=NOW + dt.timedelta(days=90))

        async def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            if len(sleeps) == 5:
                raise Stop

        settings = RenewalSettings(renew_days=30, check_seconds=3600, retry_base_seconds=60)
        renewer = Renewer(
            tmp_path / "cert.pem",
            ["a.example"],
            order,
            settings,
            clock=NOW.timestamp,
            sleep=sleep,
        )
        with pytest.raises(Stop):
            await renewer.run()
        # 3 failures: 60, 120, 240; success: check interval; no cert was written by the fake
        # order, so the next check orders again and succeeds: check interval.
        assert sleeps == [60, 120, 240, 3600, 3600]
        assert renewer.failures == 0
        assert renewer.renewals == 2
        failed = [r for r in caplog.records if "order failed" in r.getMessage()]
        assert [r.getMessage() for r in failed] == [
            "ACME: certificate order failed (attempt 1), retrying in 60s:"
            " ConnectionError: no route to the CA",
            "ACME: certificate order failed (attempt 2), retrying in 120s:"
            " ConnectionError: no route to the CA",
            "ACME: certificate order failed (attempt 3), retrying in 240s:"
            " ConnectionError: no route to the CA",
        ]
        assert all(r.levelno == logging.WARNING and r.exc_info is None for r in failed)

    async def test_backoff_is_capped_by_the_check_interval(self, tmp_path: Path) -> None:
        async def order() -> Issued:
            raise RuntimeError("boom")

        settings = RenewalSettings(check_seconds=600, retry_base_seconds=60)
        renewer = Renewer(tmp_path / "c.pem", ["a.example"], order, settings, clock=NOW.timestamp)
        waits = []
        for n in range(1, 8):
            renewer.failures = n
            waits.append(renewer.backoff())
        assert waits == [60, 120, 240, 480, 600, 600, 600]

    async def test_an_unexpected_error_is_logged_without_its_secrets(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"

        async def order() -> Issued:
            raise RuntimeError(f"unexpected answer for {token}.thumbprintthumbprint12345")

        async def sleep(seconds: float) -> None:
            raise Stop

        renewer = Renewer(
            tmp_path / "c.pem",
            ["a.example"],
            order,
            RenewalSettings(),
            clock=NOW.timestamp,
            sleep=sleep,
        )
        with pytest.raises(Stop):
            await renewer.run()
        text = "\n".join(r.getMessage() for r in caplog.records)
        assert "order failed" in text
        assert token not in text
        assert "thumbprint" not in text

    def test_an_unreadable_certificate_is_replaced(self, tmp_path: Path) -> None:
        (tmp_path / "c.pem").write_text("not a certificate")

        async def order() -> Issued:  # pragma: no cover - not called
            raise AssertionError

        renewer = Renewer(
            tmp_path / "c.pem", ["a.example"], order, RenewalSettings(), clock=NOW.timestamp
        )
        assert renewer.reason() == "current certificate unreadable (ValueError)"


def test_safe_reason_elides_tokens_and_folds_lines() -> None:
    exc = ValueError(
        "bad key authorization\n  'abcdefghijklmnopqrstuvwxyz012345.ABCDEFGHIJKLMNOPQRSTUVWXYZ'"
    )
    assert safe_reason(exc) == "bad key authorization '…'"
    assert len(safe_reason(ValueError("x " * 500))) == 500


class TestFiles:
    def test_write_atomic_replaces_with_mode_and_leaves_no_temp(self, tmp_path: Path) -> None:
        target = tmp_path / "sub" / "key.pem"
        write_atomic(target, b"one", mode=0o600)
        write_atomic(target, b"two", mode=0o600)
        assert target.read_bytes() == b"two"
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert os.listdir(target.parent) == ["key.pem"]

    def test_write_atomic_keeps_the_old_file_when_writing_fails(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        target = tmp_path / "cert.pem"
        target.write_bytes(b"old")

        def fail(src: str, dst: str) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "replace", fail)
        with pytest.raises(OSError, match="No space"):
            write_atomic(target, b"new")
        assert target.read_bytes() == b"old"
        assert os.listdir(tmp_path) == ["cert.pem"]

    def test_an_account_key_of_another_type_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "account.pem"
        write_atomic(path, key_pem_of(rsa.generate_private_key(65537, 2048)), mode=0o600)
        with pytest.raises(ValueError, match="does not hold an ECDSA private key"):
            load_or_create_account_key(path)

    def test_tls_files_follow_the_tls_table_when_there_is_one(self) -> None:
        config = parse({}, {}, Path("."))
        assert tls_files(config) == (Path("certs/cert.pem"), Path("certs/key.pem"))
        tls = SimpleNamespace(cert_file="/etc/sg/chain.pem", key_file="/etc/sg/key.pem")
        with_tls: Any = SimpleNamespace(tls=tls)
        assert tls_files(with_tls) == (Path("/etc/sg/chain.pem"), Path("/etc/sg/key.pem"))

    def test_account_key_is_created_once_with_mode_0600(self, tmp_path: Path) -> None:
        path = tmp_path / "certs" / "account.pem"
        first = load_or_create_account_key(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        again = load_or_create_account_key(path)
        assert first.private_numbers() == again.private_numbers()


class TestChallengeRoute:
    @pytest.fixture
    async def client(self) -> Any:
        app = web.Application()
        store = install(app)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        yield client, store
        await client.close()

    async def test_served_while_present(self, client: Any) -> None:
        http, store = client
        assert (await http.get("/.well-known/acme-challenge/tok_1")).status == 404
        store.put("tok_1", "tok_1.thumb")
        answer = await http.get("/.well-known/acme-challenge/tok_1")
        assert answer.status == 200
        assert await answer.text() == "tok_1.thumb"
        store.remove("tok_1")
        store.remove("tok_1")  # removing twice is fine
        assert (await http.get("/.well-known/acme-challenge/tok_1")).status == 404
        assert store.get("tok_1") is None

    def test_an_empty_store_is_truthy(self) -> None:
        # `app.get(CHALLENGES) or ChallengeStore()` must keep the shared store while it is empty
        assert ChallengeStore()


class TestPlaceholder:
    def test_written_once_when_files_are_missing_and_always_renewed(self, tmp_path: Path) -> None:
        cert_file, key_file = tmp_path / "certs/cert.pem", tmp_path / "certs/key.pem"
        assert write_placeholder(cert_file, key_file, ["a.example"], NOW) is True
        cert = read_certificate(cert_file)
        assert cert is not None
        assert is_placeholder(cert)
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        reason = renewal_reason(cert, ["a.example"], NOW, renew_days=1)
        assert reason == "only the self-signed placeholder so far"
        assert write_placeholder(cert_file, key_file, ["a.example"], NOW) is False
        assert read_certificate(cert_file) == cert

    def test_a_real_certificate_is_left_alone(self, tmp_path: Path) -> None:
        cert = certificate(["a.example"], NOW + dt.timedelta(days=60))
        assert not is_placeholder(cert)

    def test_renewer_writes_it_only_with_a_key_path(self, tmp_path: Path) -> None:
        async def order() -> Issued:  # pragma: no cover - not called
            raise AssertionError

        cert_file = tmp_path / "cert.pem"
        without = Renewer(cert_file, ["a.example"], order, RenewalSettings(), clock=NOW.timestamp)
        without.ensure_files()
        assert not cert_file.exists()
        with_key = Renewer(
            cert_file,
            ["a.example"],
            order,
            RenewalSettings(),
            clock=NOW.timestamp,
            key_file=tmp_path / "key.pem",
        )
        with_key.ensure_files()
        assert with_key.reason() == "only the self-signed placeholder so far"


class TestDaemonThread:
    async def test_result_and_error(self) -> None:
        assert await in_daemon_thread(lambda: threading.current_thread().name) == "acme order"

        def fail() -> None:
            raise AcmeFailure("nope")

        with pytest.raises(AcmeFailure, match="nope"):
            await in_daemon_thread(fail)

    async def test_a_cancelled_wait_returns_at_once_and_leaves_a_daemon(self) -> None:
        release = threading.Event()
        task = asyncio.create_task(in_daemon_thread(lambda: release.wait(30)))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 10.0  # not the 30 s the thread still waits
        (worker,) = [t for t in threading.enumerate() if t.name == "acme order"]
        assert worker.daemon
        release.set()
        worker.join(5)
        await asyncio.sleep(0.05)  # its late result is dropped without an error


def key_pem_of(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
