"""`signalgate certs dev`: a reusable local CA and a leaf naming every host, verifiable."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from gateway.cli import main
from gateway.devcerts import LEAF_DAYS, DevCertError, subject_names, write_dev_certs

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
HOSTS = ["track.shop.example", "localhost", "127.0.0.1", "::1"]


def chain_of(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def verify(directory: Path, name: x509.DNSName | x509.IPAddress, at: datetime) -> None:
    """Verify cert.pem's chain against ca.pem as a TLS client would for `name` at `at`."""
    leaf, *intermediates = chain_of(directory / "cert.pem")
    (ca,) = chain_of(directory / "ca.pem")
    verifier = PolicyBuilder().store(Store([ca])).time(at).build_server_verifier(name)
    verifier.verify(leaf, intermediates)


def test_leaf_names_every_host_and_verifies_against_the_ca(tmp_path: Path) -> None:
    made = write_dev_certs(tmp_path, HOSTS, NOW)
    leaf, ca_in_chain = chain_of(made.cert)
    (ca,) = chain_of(made.ca)
    assert ca_in_chain == ca  # cert.pem carries the chain a server sends
    assert leaf.serial_number == made.serial
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["track.shop.example", "localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert leaf.public_key().curve.name == "secp256r1"
    for name in (x509.DNSName("track.shop.example"), x509.IPAddress(ipaddress.ip_address("::1"))):
        verify(tmp_path, name, NOW)
    with pytest.raises(VerificationError):
        verify(tmp_path, x509.DNSName("other.example"), NOW)


def test_validity_window(tmp_path: Path) -> None:
    made = write_dev_certs(tmp_path, ["a.example"], NOW)
    leaf, ca = chain_of(made.cert)
    assert leaf.not_valid_before_utc <= NOW <= leaf.not_valid_after_utc
    assert leaf.not_valid_after_utc - NOW == timedelta(days=LEAF_DAYS)  # browsers cap at 398
    assert ca.not_valid_after_utc > leaf.not_valid_after_utc
    verify(tmp_path, x509.DNSName("a.example"), NOW + timedelta(days=LEAF_DAYS - 1))
    with pytest.raises(VerificationError):
        verify(tmp_path, x509.DNSName("a.example"), NOW + timedelta(days=LEAF_DAYS + 1))
    basic = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca is False
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True


def test_the_ca_is_reused_and_keys_are_private(tmp_path: Path) -> None:
    first = write_dev_certs(tmp_path, ["a.example"], NOW)
    ca_before = first.ca.read_bytes()
    second = write_dev_certs(tmp_path, ["b.example"], NOW)
    assert first.ca_created
    assert not second.ca_created
    assert second.ca.read_bytes() == ca_before
    assert second.serial != first.serial
    verify(tmp_path, x509.DNSName("b.example"), NOW)  # the new leaf, same CA
    for key in (second.key, second.ca_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert list(tmp_path.glob(".*.tmp")) == []  # atomic writes leave nothing behind


def test_python_ssl_serves_the_pair_and_trusts_the_ca(tmp_path: Path) -> None:
    made = write_dev_certs(tmp_path, ["a.example"], NOW)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(made.cert, made.key)
    client = ssl.create_default_context(cafile=made.ca)
    assert client.get_ca_certs()[0]["subject"]


@pytest.mark.parametrize(
    "hosts", [[], ["bad host"], ["-lead.example"], ["a..b"], ["x" * 64 + ".example"]]
)
def test_bad_hosts_are_refused_before_any_file_is_written(tmp_path: Path, hosts: list[str]) -> None:
    with pytest.raises(DevCertError):
        write_dev_certs(tmp_path / "out", hosts, NOW)
    assert not (tmp_path / "out").exists()


def test_wildcards_and_ip_literals() -> None:
    assert subject_names(["*.Shop.Example.", "[::1]", "shop.example"]) == [
        x509.DNSName("*.shop.example"),
        x509.IPAddress(ipaddress.ip_address("::1")),
        x509.DNSName("shop.example"),
    ]


def test_half_a_ca_is_an_error_not_overwritten(tmp_path: Path) -> None:
    made = write_dev_certs(tmp_path, ["a.example"], NOW)
    made.ca_key.unlink()
    with pytest.raises(DevCertError, match=r"ca-key\.pem is missing"):
        write_dev_certs(tmp_path, ["a.example"], NOW)


def test_cli_writes_and_explains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "certs"
    assert main(["certs", "dev", "track.shop.example", "127.0.0.1", "--dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out / "cert.pem") in printed
    assert "update-ca-certificates" in printed
    assert "local CA (created)" in printed
    assert sorted(p.name for p in out.iterdir()) == ["ca-key.pem", "ca.pem", "cert.pem", "key.pem"]
    assert main(["certs", "dev", "not a host", "--dir", str(out)]) == 1
    assert "'not a host' is not a DNS name" in capsys.readouterr().err
