"""[tls] validation, the certificate pair checks and the ACME challenge store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.config import ConfigError, TlsConfig, parse
from gateway.devcerts import write_dev_certs
from gateway.web.challenge import CHALLENGES, ChallengeStore, install
from gateway.web.tls import CertReloader, TlsError, read_pair

NOW = datetime.now(UTC)


def errors_of(doc: dict[str, object], environ: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse(doc, environ or {}, Path("."))
    return dict(info.value.errors)


def test_defaults_serve_plain_http() -> None:
    config = parse({}, {}, Path("."))
    assert config.tls == TlsConfig()
    assert config.tls.enabled is False
    assert (config.tls.cert_file, config.tls.key_file) == ("certs/cert.pem", "certs/key.pem")
    assert (config.tls.http_port, config.tls.reload_seconds) == (0, 60.0)


def test_tls_keys_are_validated_with_their_path() -> None:
    errs = errors_of(
        {"tls": {"enabled": "yes", "http_port": 70000, "reload_seconds": 0, "certfile": "x"}}
    )
    assert errs == {
        "tls.enabled": "expected true or false",
        "tls.http_port": "expected <= 65535",
        "tls.reload_seconds": "expected >= 0.1",
        "tls.certfile": "unknown key",
    }
    errs = errors_of(
        {"server": {"port": 8443}, "tls": {"enabled": True, "http_port": 8443, "key_file": " "}}
    )
    assert errs == {
        "tls.http_port": "must differ from server.port (which serves https)",
        "tls.key_file": "required when tls.enabled is true",
    }


def test_tls_is_overridable_from_the_environment() -> None:
    config = parse(
        {}, {"SIGNALGATE__TLS__ENABLED": "true", "SIGNALGATE__TLS__HTTP_PORT": "80"}, Path(".")
    )
    assert config.tls.enabled is True
    assert config.tls.http_port == 80


def test_pair_checks_name_the_file(tmp_path: Path) -> None:
    made = write_dev_certs(tmp_path / "a", ["a.example"], NOW)
    other = write_dev_certs(tmp_path / "b", ["b.example"], NOW)
    assert read_pair(made.cert, made.key).serial == made.serial
    with pytest.raises(TlsError, match="is not the key of the first certificate"):
        read_pair(made.cert, other.key)
    encrypted = tmp_path / "enc.pem"
    encrypted.write_text(
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
    )
    with pytest.raises(TlsError, match="not an unencrypted PEM private key"):
        read_pair(made.cert, encrypted)
    with pytest.raises(TlsError, match=r"^tls\.cert_file: cannot read"):
        read_pair(tmp_path / "none.pem", made.key)


def test_reloader_loads_only_changed_valid_pairs(tmp_path: Path) -> None:
    made = write_dev_certs(tmp_path, ["a.example"], NOW)
    reloader = CertReloader.open(made.cert, made.key)
    assert reloader.loaded is not None
    assert reloader.loaded.serial == made.serial
    assert reloader.check() is False  # nothing changed
    made.cert.write_bytes(made.cert.read_bytes())  # touched, same bytes: not reloaded
    assert reloader.check() is False
    renewed = write_dev_certs(tmp_path, ["a.example"], NOW)
    assert reloader.check() is True
    assert reloader.loaded.serial == renewed.serial
    made.key.write_text("junk")
    assert reloader.check() is False
    assert reloader.loaded.serial == renewed.serial
    assert reloader.reloads == 1


async def test_challenge_store_and_handler() -> None:
    store = ChallengeStore()
    store.put("t1", "t1.key")
    assert store.get("t1") == "t1.key"
    assert store.get("t2") is None
    app = web.Application()
    assert install(app, store) is store
    assert app[CHALLENGES] is store
    async with TestClient(TestServer(app)) as client:
        ok = await client.get("/.well-known/acme-challenge/t1")
        assert ok.status == 200
        assert ok.content_type == "text/plain"
        assert await ok.text() == "t1.key"
        store.remove("t1")
        store.remove("t1")  # removing twice is fine
        assert (await client.get("/.well-known/acme-challenge/t1")).status == 404


def test_an_expired_leaf_is_served_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    made = write_dev_certs(tmp_path, ["a.example"], datetime(2020, 1, 1, tzinfo=UTC))
    with caplog.at_level("WARNING", logger="signalgate.tls"):
        reloader = CertReloader.open(made.cert, made.key)
    assert reloader.loaded is not None
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"TLS certificate in {made.cert} expired ")
    assert line.endswith(" days ago; browsers refuse it.")
    assert reloader.warn_if_expired(reloader.loaded.not_after - 1) is False
