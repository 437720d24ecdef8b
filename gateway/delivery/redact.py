"""Keep platform credentials out of the HTTP client's own log lines.

Some platforms take the access token as a query parameter (Meta's `access_token`), and httpx
logs every request at INFO as `HTTP Request: METHOD URL "HTTP/1.1 200 OK"`. The CLI raises
httpx's level to WARNING, but an embedding application (or a test run) logging at INFO would
print the token. `install` adds a filter to the `httpx` logger that drops the query string of
every URL argument before the record is formatted.
"""

from __future__ import annotations

import logging
from typing import Final

import httpx

HTTPX_LOGGER: Final = "httpx"


class DropQuery(logging.Filter):
    """Replace URL arguments of a record by the URL without its query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, httpx.URL) for a in args):
            record.args = tuple(
                str(a.copy_with(query=None)) if isinstance(a, httpx.URL) and a.query else a
                for a in args
            )
        return True


_FILTER: Final = DropQuery()


def install() -> None:
    """Add the filter to the httpx logger (once)."""
    logger = logging.getLogger(HTTPX_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
