"""`signalgate certs dev HOST…`: a local CA and a certificate it signs, for HTTPS in testing.

`issue_ca` and `issue_leaf` are pure (keys, names and time in; certificates out). `write_dev_certs`
does the file work: the CA (`ca.pem`, `ca-key.pem`) is reused when both files exist, so a
browser or OS that trusts it once keeps trusting every leaf issued later; the leaf is written
as `cert.pem` (leaf, then the CA: the chain a server sends) and `key.pem`. Keys are mode 0600;
every file is replaced atomically, so a running gateway's certificate watcher never reads half
a file. ECDSA P-256, SHA-256; the leaf names every host as a subjectAltName (DNS or IP).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.autocert.files import key_pem, new_private_key, write_atomic

CA_DAYS: Final = 3650
LEAF_DAYS: Final = 397
"""Leaf lifetime: under the 398 days browsers accept."""
_BACKDATE: Final = timedelta(hours=1)
"""Certificates start an hour early, for clocks slightly behind."""
_DNS_RE: Final = re.compile(
    r"(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
)

SubjectName = x509.DNSName | x509.IPAddress


class DevCertError(Exception):
    """The hosts or the directory cannot make dev certificates; the message says why."""


def subject_names(hosts: Sequence[str]) -> list[SubjectName]:
    """Return the subjectAltNames of `hosts` (IP addresses as IPs), or raise DevCertError."""
    if not hosts:
        raise DevCertError("at least one HOST is required")
    names: list[SubjectName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
            continue
        except ValueError:
            pass
        name = host.lower().rstrip(".")
        if len(name) > 253 or not _DNS_RE.fullmatch(name):
            raise DevCertError(f"{host!r} is not a DNS name or an IP address")
        names.append(x509.DNSName(name))
    return list(dict.fromkeys(names))


def issue_ca(key: ec.EllipticCurvePrivateKey, common_name: str, now: datetime) -> x509.Certificate:
    """Return a self-signed CA certificate for `key`, valid `CA_DAYS` from `now`."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "signalgate development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def issue_leaf(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    hosts: Sequence[str],
    now: datetime,
) -> x509.Certificate:
    """Return a server certificate for `key` naming every host, signed by the CA."""
    names = subject_names(hosts)
    first = names[0].value
    public = key.public_key()
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(first)[:64])]))
        .issuer_name(ca.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + timedelta(days=LEAF_DAYS), ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def cert_pem(*certs: x509.Certificate) -> bytes:
    """Return the certificates as concatenated PEM."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@dataclass(frozen=True, slots=True)
class DevCerts:
    """What `write_dev_certs` wrote."""

    directory: Path
    hosts: tuple[str, ...]
    ca_created: bool
    serial: int

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca-key.pem"

    @property
    def cert(self) -> Path:
        return self.directory / "cert.pem"

    @property
    def key(self) -> Path:
        return self.directory / "key.pem"

    def summary(self) -> str:
        """Return what was written and how to trust the CA (the CLI prints it)."""
        ca = self.ca
        state = "created" if self.ca_created else "reused"
        return "\n".join(
            [
                f"certificate for {', '.join(self.hosts)} (with the CA chain): {self.cert}",
                f"its private key (mode 0600):                 {self.key}",
                f"local CA ({state}): {ca}   key: {self.ca_key} (keep it private)",
                "",
                "Serve it with [tls] enabled = true, cert_file and key_file pointing there.",
                "Trust the CA where you test (for development only; never on other machines):",
                "  Debian/Ubuntu: sudo cp "
                f"{ca} /usr/local/share/ca-certificates/signalgate-dev.crt"
                " && sudo update-ca-certificates",
                "  macOS:         sudo security add-trusted-cert -d -r trustRoot"
                f" -k /Library/Keychains/System.keychain {ca}",
                "  Chrome/Firefox on Linux (NSS):"
                f" certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n signalgate-dev -i {ca}",
                f"  curl:          curl --cacert {ca} https://{self.hosts[0]}:PORT/healthz",
                f"  Python:        SSL_CERT_FILE={ca}",
            ]
        )


def _load_ca(
    cert_file: Path, key_file: Path
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        ca = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except OSError as exc:
        raise DevCertError(f"cannot read the CA: {exc.filename}: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise DevCertError(f"{cert_file} / {key_file} are not a PEM CA and key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise DevCertError(f"{key_file} is not an ECDSA key (made by another tool?)")
    return ca, key


def write_dev_certs(directory: Path, hosts: Sequence[str], now: datetime) -> DevCerts:
    """Write (or reuse) the CA and write a new leaf for `hosts` into `directory`."""
    subject_names(hosts)  # refuse bad hosts before touching any file
    made = DevCerts(directory, tuple(hosts), False, 0)
    have = [made.ca.exists(), made.ca_key.exists()]
    if have[0] != have[1]:
        missing = made.ca_key if have[0] else made.ca
        raise DevCertError(f"{missing} is missing (remove the other CA file to start over)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if all(have):
            ca, ca_key = _load_ca(made.ca, made.ca_key)
        else:
            ca_key = new_private_key()
            ca = issue_ca(ca_key, f"signalgate dev CA ({socket.gethostname()})", now)
            write_atomic(made.ca_key, key_pem(ca_key), 0o600)
            write_atomic(made.ca, cert_pem(ca), 0o644)
        key = new_private_key()
        leaf = issue_leaf(ca, ca_key, key, hosts, now)
        write_atomic(made.key, key_pem(key), 0o600)
        write_atomic(made.cert, cert_pem(leaf, ca), 0o644)
    except OSError as exc:
        raise DevCertError(f"cannot write to {directory}: {exc.strerror}") from None
    return DevCerts(directory, tuple(hosts), not all(have), leaf.serial_number)
