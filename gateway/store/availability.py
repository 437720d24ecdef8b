"""Store availability: which storage failures mean "try again later", and one log line per change.

A full disk, a read-only file system or database, a disk I/O error or a database file that
cannot be opened is not a bug of one request: every write fails the same way until an operator
(or the system) frees space or fixes permissions. Such errors become `StoreUnavailableError`
with a short, fixed reason ("disk full", "read-only", ...). The web layer answers them `503` with
`Retry-After` and `/readyz` reports the reason. `Availability` remembers the current state and
logs once when the store becomes unavailable (or the reason changes) and once when a write
succeeds again; nothing is logged per request.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from typing import Final

log = logging.getLogger("signalgate.store")

RETRY_AFTER_SECONDS: Final = 5
"""What a 503 of an unavailable store asks the client to wait (seconds)."""

_SQLITE_REASONS: Final = {
    sqlite3.SQLITE_FULL: "disk full",
    sqlite3.SQLITE_READONLY: "read-only",
    sqlite3.SQLITE_IOERR: "disk I/O error",
    sqlite3.SQLITE_CANTOPEN: "cannot open the database file",
    sqlite3.SQLITE_PERM: "permission denied",
    sqlite3.SQLITE_BUSY: "database locked",
    sqlite3.SQLITE_LOCKED: "database locked",
}
"""Primary SQLite result codes (the low byte of an extended code) that mean unavailable."""

_OS_REASONS: Final = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk full",
    errno.EROFS: "read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EIO: "disk I/O error",
}


class StoreUnavailableError(Exception):
    """Writes fail for a reason outside the gateway (disk full, read-only, I/O error)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"store unavailable: {reason}")
        self.reason = reason


def unavailable_reason(exc: BaseException) -> str | None:
    """Return the short reason if `exc` means the store cannot write right now, else None."""
    if isinstance(exc, StoreUnavailableError):
        return exc.reason
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return _SQLITE_REASONS.get(code & 0xFF)
        text = str(exc).lower()  # an error raised without a code (e.g. by this package)
        if "disk is full" in text or "database or disk is full" in text:
            return "disk full"
        if "readonly" in text or "read-only" in text:
            return "read-only"
        return None
    if isinstance(exc, OSError) and exc.errno is not None:
        return _OS_REASONS.get(exc.errno)
    return None


class Availability:
    """The store's current state: available, or unavailable for a reason (logged on change)."""

    __slots__ = ("reason",)

    def __init__(self) -> None:
        self.reason: str | None = None
        """None while writes succeed; else why the last write failed."""

    def failed(self, exc: BaseException) -> None:
        """Raise `StoreUnavailableError` (from `exc`) if `exc` means unavailable; else return."""
        reason = unavailable_reason(exc)
        if reason is None:
            return
        if reason != self.reason:
            log.error("store unavailable: %s", reason, extra={"reason": reason})
            self.reason = reason
        raise StoreUnavailableError(reason) from exc

    def succeeded(self) -> None:
        """Note a write that committed: log the recovery once."""
        if self.reason is not None:
            log.info("store recovered", extra={"reason": self.reason})
            self.reason = None
