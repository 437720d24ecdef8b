"""SHA-256 digests of identifiers: recognising one already hashed, and making one."""

from __future__ import annotations

import hashlib
import re
from typing import Final

_SHA256_RE: Final = re.compile(r"[0-9a-fA-F]{64}")


def is_sha256(value: str) -> bool:
    """Tell whether `value` (stripped) is a SHA-256 hex digest: 64 hex digits, any case."""
    return _SHA256_RE.fullmatch(value.strip()) is not None


def sha256_hex(value: str) -> str:
    """Return the lowercase hex SHA-256 of the UTF-8 bytes of `value`."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()
