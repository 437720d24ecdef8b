"""Logging setup: one line per record with whitelisted structured fields, never PII."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Final

SAFE_FIELDS: Final = ("route", "rows", "reason", "path", "id", "status", "site", "worker")
"""Only these `extra` fields are printed; event bodies and identifiers never are."""

LOG_FORMATS: Final = ("keyvalue", "json")


def safe_extras(record: logging.LogRecord) -> dict[str, object]:
    """Return the record's SAFE_FIELDS extras (the only `extra` fields ever printed)."""
    return {key: getattr(record, key) for key in SAFE_FIELDS if hasattr(record, key)}


class KeyValueFormatter(logging.Formatter):
    """Format as `time level logger message key=value …` with only SAFE_FIELDS."""

    def format(self, record: logging.LogRecord) -> str:
        base = f"{self.formatTime(record)} {record.levelname} {record.name} {record.getMessage()}"
        extras = [
            f"{key}={json.dumps(value, default=str)}" for key, value in safe_extras(record).items()
        ]
        line = " ".join([base, *extras])
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """Format as one JSON object per line: time (UTC, ISO 8601), level, logger, message, the
    SAFE_FIELDS extras, and an exception's text under `exception` (still one line)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        doc: dict[str, object] = {
            "time": stamp.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in safe_extras(record).items():
            doc.setdefault(key, value)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def setup_logging(level: str = "INFO", log_format: str = "keyvalue") -> None:
    """Configure the root logger for the CLI (`log_format`: keyvalue or json)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format must be one of {LOG_FORMATS}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def tag_worker(slot: int) -> None:
    """Add `worker=<slot>` to every record of this process (a worker of `run --workers N`)."""

    def tag(record: logging.LogRecord) -> bool:
        if not hasattr(record, "worker"):
            record.worker = slot
        return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(tag)
