"""Key and certificate files: read, create with mode 0600, replace atomically; the
self-signed placeholder served until the first certificate arrives."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so that a reader sees the old file or the new one, whole.

    The bytes go to a temporary file in the same directory (created with `mode`, so a key is
    never readable by others, not even briefly), are flushed to disk, and the file is renamed
    over `path`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def new_private_key() -> ec.EllipticCurvePrivateKey:
    """Return a fresh ECDSA P-256 key (what the account and the certificates use)."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Return `key` as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_or_create_account_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Return the ACME account key stored at `path`, creating it (mode 0600) if missing."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        key = new_private_key()
        write_atomic(path, key_pem(key), mode=0o600)
        return key
    loaded = serialization.load_pem_private_key(data, password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} does not hold an ECDSA private key")
    return loaded


def read_certificate(path: Path) -> x509.Certificate | None:
    """Return the first (leaf) certificate of the PEM chain at `path`, or None if absent."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return x509.load_pem_x509_certificate(data)


PLACEHOLDER_NAME = "signalgate placeholder (awaiting ACME)"


def is_placeholder(cert: x509.Certificate) -> bool:
    """Return whether `cert` is the self-signed stand-in written by `write_placeholder`."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return cert.issuer == cert.subject and [n.value for n in names] == [PLACEHOLDER_NAME]


def write_placeholder(
    cert_file: Path, key_file: Path, hosts: Sequence[str], now: dt.datetime
) -> bool:
    """Write a self-signed certificate for `hosts` unless both files exist; return whether it
    wrote one. It lets a TLS listener start before the first ACME order completes (browsers
    refuse it; the renewal task replaces it at once)."""
    if cert_file.exists() and key_file.exists():
        return False
    key = new_private_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, PLACEHOLDER_NAME)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    write_atomic(key_file, key_pem(key), mode=0o600)
    write_atomic(cert_file, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return True
