"""Pieces of the lifecycle slice: log formats, storage error classes, start-up path checks, the
httpx URL redaction."""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
import sys
from pathlib import Path

import httpx
import pytest

from gateway.delivery.redact import DropQuery
from gateway.lifecycle import StartupError, check_store_path
from gateway.store.availability import Availability, StoreUnavailableError, unavailable_reason
from gateway.telemetry import JsonFormatter, KeyValueFormatter


def record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            info = sys.exc_info()
    rec = logging.LogRecord("signalgate.test", logging.WARNING, __file__, 1, msg, args, info)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_format_is_one_object_with_safe_extras_only() -> None:
    line = JsonFormatter().format(
        record("sent %d rows", 3, route="shop:meta", rows=3, email="raw@example.org", exc=True)
    )
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["level"] == "WARNING"
    assert doc["logger"] == "signalgate.test"
    assert doc["message"] == "sent 3 rows"
    assert doc["route"] == "shop:meta"
    assert doc["rows"] == 3
    assert "email" not in doc
    assert "raw@example.org" not in line
    assert "RuntimeError: boom" in doc["exception"]
    assert doc["time"].endswith("Z")


def test_keyvalue_format_is_unchanged() -> None:
    line = KeyValueFormatter().format(record("hello", reason="disk full", email="x@y.z"))
    assert line.endswith('WARNING signalgate.test hello reason="disk full"')


def real_error(pragma: str) -> sqlite3.Error:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t(x)")
    conn.execute(pragma)
    try:
        conn.executemany("INSERT INTO t VALUES (?)", [(b"\0" * 4096,)] * 64)
    except sqlite3.Error as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError("no error")


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "disk full"),
        (OSError(errno.EROFS, "Read-only file system"), "read-only"),
        (OSError(errno.EIO, "Input/output error"), "disk I/O error"),
        (OSError(errno.ECONNRESET, "reset"), None),
        (ValueError("disk is full"), None),
        (sqlite3.ProgrammingError("Cannot operate on a closed database."), None),
    ],
)
def test_unavailable_reason(exc: BaseException, reason: str | None) -> None:
    assert unavailable_reason(exc) == reason


def test_real_sqlite_errors_are_classified() -> None:
    assert unavailable_reason(real_error("PRAGMA max_page_count = 2")) == "disk full"
    assert unavailable_reason(real_error("PRAGMA query_only = ON")) == "read-only"


def test_availability_logs_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="signalgate.store")
    state = Availability()
    full = OSError(errno.ENOSPC, "No space left on device")
    for _ in range(5):
        with pytest.raises(StoreUnavailableError, match="disk full"):
            state.failed(full)
    state.failed(ValueError("a bug, not the disk"))  # returns: the caller re-raises it
    state.succeeded()
    state.succeeded()
    assert [r.getMessage() for r in caplog.records] == [
        "store unavailable: disk full",
        "store recovered",
    ]


def test_store_path_checks(tmp_path: Path) -> None:
    check_store_path(tmp_path / "new" / "dir" / "outbox.db")  # made on demand
    assert (tmp_path / "new" / "dir").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StartupError, match="not a directory"):
        check_store_path(tmp_path / "file" / "outbox.db")
    with pytest.raises(StartupError, match="not a directory"):
        check_store_path(tmp_path / "file" / "deeper" / "outbox.db")
    (tmp_path / "db").mkdir()
    with pytest.raises(StartupError, match="is a directory"):
        check_store_path(tmp_path / "db")


def test_httpx_request_lines_lose_their_query() -> None:
    url = httpx.URL("https://graph.example/v25.0/1/events?access_token=secret-token-123")
    rec = logging.LogRecord(
        "httpx", logging.INFO, __file__, 1, 'HTTP Request: %s %s "%s %d %s"',
        ("POST", url, "HTTP/1.1", 200, "OK"), None,
    )  # fmt: skip
    assert DropQuery().filter(rec)
    assert rec.getMessage() == (
        'HTTP Request: POST https://graph.example/v25.0/1/events "HTTP/1.1 200 OK"'
    )
