"""The lane's deadline rules (pure) and aiohttp-log rewriting of gateway/web/edgelog.py."""

from __future__ import annotations

import logging

import pytest
from aiohttp import http_exceptions as hx

from gateway.web.deadlines import Deadlines, Expiry, Wait, expired
from gateway.web.edgelog import EdgeLogFilter

D = Deadlines(head=10, body=30, keepalive=75)


@pytest.mark.parametrize(
    ("wait", "now", "head_start", "last", "expected"),
    [
        (Wait.HEAD, 109.9, 100, 109, None),
        (Wait.HEAD, 110.1, 100, 110, Expiry.HEAD),  # bytes kept coming: the head is late anyway
        (Wait.BODY, 129.9, 0, 100, None),
        (Wait.BODY, 130.1, 0, 100, Expiry.BODY),
        (Wait.IDLE, 174.9, 0, 100, None),
        (Wait.IDLE, 175.1, 0, 100, Expiry.IDLE),
        (Wait.CLIENT, 175.1, 0, 100, Expiry.STALLED),
        (Wait.ANSWER, 10_000, 0, 0, None),
    ],
)
def test_expired(
    wait: Wait, now: float, head_start: float, last: float, expected: Expiry | None
) -> None:
    assert expired(D, wait, now, head_start, last) is expected


def test_sweep_interval_follows_the_shortest_deadline() -> None:
    assert D.sweep_every == 5.0
    assert Deadlines(head=0.3, body=1, keepalive=1).sweep_every == 0.15
    assert Deadlines(head=0.01, body=0.01, keepalive=0.01).sweep_every == 0.05
    assert Deadlines(head=100, body=100, keepalive=100).sweep_every == 5.0


def record(
    name: str, msg: str, args: tuple[object, ...], exc: BaseException | None
) -> logging.LogRecord:
    info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, info)


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_parser_refusal_becomes_one_reason_line() -> None:
    exc = raised(hx.BadStatusLine("GET /secret@x.test HTTP/9"))
    rec = record("aiohttp.server", "Error handling request from %s", ("198.51.100.1",), exc)
    assert EdgeLogFilter().filter(rec)
    assert rec.getMessage() == "Request refused."
    assert (rec.status, rec.reason) == (400, "bad request line")  # type: ignore[attr-defined]
    assert rec.exc_info is None
    assert rec.levelno == logging.INFO


def test_other_exceptions_keep_type_and_frames_only() -> None:
    exc = raised(ValueError("token=adm-SECRET"))
    rec = record("aiohttp.server", "Unhandled exception %s", ("x@y.test",), exc)
    EdgeLogFilter().filter(rec)
    text = rec.getMessage()
    assert "ValueError" in text
    assert "test_deadlines.py" in text
    assert "SECRET" not in text
    assert "x@y.test" not in text
    assert rec.exc_info is None


def test_access_line_keeps_method_route_and_status() -> None:
    line = (
        '127.0.0.1 [06/Dec/2026:05:54:01 +0000] "GET /v1/visitors/a@b.test?p=1 HTTP/1.1" 404 5 '
        '"https://r.test/?e=a@b.test" "UA secret"'
    )
    rec = logging.LogRecord("aiohttp.access", logging.INFO, __file__, 1, line, None, None)
    rec.first_request_line = "GET /v1/visitors/a@b.test?p=1 HTTP/1.1"
    EdgeLogFilter().filter(rec)
    assert rec.getMessage() == "Request done: GET /v1/visitors 404"
    assert not hasattr(rec, "first_request_line")
    assert "a@b.test" not in repr(rec.__dict__)
