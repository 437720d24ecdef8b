"""A generated secret kept in a file: created once, atomically, read by every process.

`signalgate run --workers N` starts several processes on one config; when the config names no
cookie secret, they must all use the same generated key. The key is written to a private
temporary file first and then linked into place, which fails when the file exists already: so
whichever process comes first wins, and every process (the losers too) reads back the one key
from the file. A reader never sees a half-written file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path


def read_or_create_key(path: Path, size: int = 32) -> bytes:
    """Return the key stored (as hex) in `path`; create it with `size` random bytes, mode 0600,
    when the file is missing, and replace it when it holds no key (unreadable as hex)."""
    try:
        return _read(path)
    except FileNotFoundError:
        replace = False
    except ValueError:
        replace = True
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_bytes(size).hex())
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            _link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return _read(path)


def _link(tmp: Path, path: Path) -> None:
    """Put `tmp` at `path` unless `path` exists (then the other process's key stays)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        return
    except OSError as exc:  # a file system without hard links: an exclusive create instead
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        with os.fdopen(fd, "w") as out:
            out.write(tmp.read_text())


def _read(path: Path) -> bytes:
    text = path.read_text().strip()
    if not text:
        raise ValueError("empty key file")
    return bytes.fromhex(text)
