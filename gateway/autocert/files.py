"""Key and certificate files: read, create with mode 0600, replace atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


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
