"""Logging setup: one line per record with whitelisted structured fields, never PII."""

from __future__ import annotations

import json
import logging
import sys
from typing import Final

SAFE_FIELDS: Final = ("route", "rows", "reason", "path", "id", "status", "site")
"""Only these `extra` fields are printed; event bodies and identifiers never are."""


class KeyValueFormatter(logging.Formatter):
    """Format as `time level logger message key=value …` with only SAFE_FIELDS."""

    def format(self, record: logging.LogRecord) -> str:
        base = f"{self.formatTime(record)} {record.levelname} {record.name} {record.getMessage()}"
        extras = [
            f"{key}={json.dumps(getattr(record, key), default=str)}"
            for key in SAFE_FIELDS
            if hasattr(record, key)
        ]
        line = " ".join([base, *extras])
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str = "INFO") -> None:
    """Configure the root logger for the CLI."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
