"""One line, with its reason, for a request refused by aiohttp's HTTP parser.

aiohttp logs such a request at ERROR as "Error handling request from <peer>" with the parser's
exception, whose text quotes the offending raw line: an `Authorization` header with its API
key, a URL or cookie carrying an e-mail address. `install` adds a filter to aiohttp's server
logger that turns those records into `HTTP request refused: <status> <error class>` at WARNING,
without the exception, the raw bytes or the peer address (status and reason also as the
`status` / `reason` fields). Other records of that logger (a handler's unexpected exception)
are left alone.
"""

from __future__ import annotations

import logging
from typing import Final

from aiohttp.http_exceptions import HttpProcessingError

SERVER_LOGGER: Final = "aiohttp.server"


class RefusedRequest(logging.Filter):
    """Rewrite parser-error records of aiohttp's server logger to one safe line."""

    def filter(self, record: logging.LogRecord) -> bool:
        info = record.exc_info
        exc = info[1] if info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        status = int(exc.code or 400)
        reason = type(exc).__name__
        record.msg = "HTTP request refused: %d %s"
        record.args = (status, reason)
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        record.levelno = logging.WARNING
        record.levelname = logging.getLevelName(logging.WARNING)
        record.status = status
        record.reason = reason
        return True


_FILTER: Final = RefusedRequest()


def install() -> None:
    """Add the filter to aiohttp's server logger (once)."""
    logger = logging.getLogger(SERVER_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
