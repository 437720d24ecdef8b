"""aiohttp's own log records, made safe: no raw request bytes, header values or client data.

aiohttp logs a request its parser refuses as "Error handling request from <ip>" with the parser
exception, whose text quotes the offending bytes (a request line, a header line, ...). Its
access log line holds the request line with its query and the Referer and User-Agent values.
`EdgeLogFilter`, put on aiohttp's loggers by `install`, rewrites such records in place:

- a refusal by the HTTP parser becomes one line "Request refused." with `status` and a fixed
  `reason` named after the exception's class (never its text);
- any other exception keeps its type and the frames of its traceback (file, line, function)
  and loses its message and the values in it;
- an access line keeps the method, the path's first two plain segments and the status;
- every other aiohttp record is reduced to its message template (no arguments).
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Final

from aiohttp import http_exceptions as hx

LOGGERS: Final = ("aiohttp.server", "aiohttp.access", "aiohttp.internal", "aiohttp.web")
"""aiohttp's loggers that see server requests."""

_REASONS: Final[tuple[tuple[type[BaseException], str], ...]] = (
    (hx.BadHttpMethod, "bad method"),
    (hx.BadStatusLine, "bad request line"),
    (hx.LineTooLong, "line or header too long"),
    (hx.InvalidHeader, "invalid header"),
    (hx.InvalidURLError, "invalid target"),
    (hx.ContentLengthError, "bad content length"),
    (hx.TransferEncodingError, "bad transfer encoding"),
    (hx.DecompressSizeError, "body too large once decoded"),
    (hx.ContentEncodingError, "bad content encoding"),
    (hx.BadHttpMessage, "malformed request"),
    (hx.HttpProcessingError, "refused by the HTTP parser"),
)
_KEEP: Final = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
"""The attributes of a plain record (anything else came as `extra`)."""


def refusal_reason(exc: BaseException) -> str | None:
    """The fixed reason of an HTTP parser refusal, or None for another exception."""
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return None


class EdgeLogFilter(logging.Filter):
    """Rewrite aiohttp's records to carry no request bytes (see the module's docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        for key in [k for k in record.__dict__ if k not in _KEEP]:
            delattr(record, key)  # extras (access log fields hold header values)
        if record.name == "aiohttp.access":
            _access(record)
        elif exc is not None:
            _exception(record, exc)
        else:
            record.args = ()  # the template only: arguments may be client data
        record.exc_info = None
        record.exc_text = None
        return True


def _exception(record: logging.LogRecord, exc: BaseException) -> None:
    reason = refusal_reason(exc)
    if reason is not None:
        status = getattr(exc, "code", 400)
        record.msg = "Request refused."
        record.status = status if isinstance(status, int) and 400 <= status < 500 else 400
        record.reason = reason
        record.levelno, record.levelname = logging.INFO, "INFO"
    else:
        frames = "; ".join(
            f"{frame.filename}:{frame.lineno} in {frame.name}"
            for frame in traceback.extract_tb(exc.__traceback__)
        )
        template = record.msg if isinstance(record.msg, str) else "aiohttp error"
        record.msg = "%s (%s; traceback: %s)"
        record.args = (template.replace("%s", "-").rstrip(". "), type(exc).__name__, frames)
        return
    record.args = ()


def _access(record: logging.LogRecord) -> None:
    """Keep method, path and status of an access line (aiohttp formats it before logging)."""
    found = _ACCESS_RE.search(record.getMessage())
    method, path, status = found.groups() if found else ("-", "-", "-")
    record.msg = "Request done: %s %s %s"
    record.args = (method[:16], _route_of(path), status)


_ACCESS_RE: Final = re.compile(r'"([A-Za-z]+) (\S+)[^"]*" (\d{3}) ')
"""The request line and status of aiohttp's default access format."""


def _route_of(target: str) -> str:
    """The first two segments of a path, when plain (ids, e-mails and queries are dropped)."""
    segments = target.partition("?")[0].split("/")[1:3]
    plain = all(s.replace("-", "").replace("_", "").replace(".", "").isalnum() for s in segments)
    return "/" + "/".join(segments) if plain and all(len(s) <= 32 for s in segments) else "-"


_FILTER: Final = EdgeLogFilter()


def install() -> None:
    """Put the filter on aiohttp's loggers (once; idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
