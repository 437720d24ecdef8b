"""The suite-wide log-leak check: planted secrets and raw PII must appear in no log line.

tests/conftest.py puts one `LeakCatcher` on the root logger (root level DEBUG) for the whole
session. Every record of every logger that reaches the root is rendered the way a handler
would print it (message with its arguments, exception and stack text, the SAFE_FIELDS extras)
and searched for each planted value (case-insensitive; the phone number also as digits only).
Only violations are kept: (logger name, kind of value). At session end the run fails and names
the loggers and kinds, never the values. Subprocess gateways are checked on their captured
stderr with `assert_no_planted`. The planted values are conftest's constants (API_KEY,
ADMIN_TOKEN, PLANTED_EMAIL, PLANTED_PHONE).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from gateway.telemetry import safe_extras


def needles(planted: Mapping[str, str]) -> list[tuple[str, str]]:
    """Return (kind, lower-case text) pairs to search for: each value, and a phone's digits."""
    found: list[tuple[str, str]] = []
    for kind, value in planted.items():
        found.append((kind, value.lower()))
        digits = "".join(ch for ch in value if ch.isdigit())
        if kind == "phone" and digits:
            found.append((kind, digits))
    return found


def render(record: logging.LogRecord) -> str:
    """Return everything a handler could print of `record` (message, exception, stack,
    SAFE_FIELDS extras)."""
    parts: list[str] = []
    try:
        parts.append(record.getMessage())
    except Exception:  # a bad format string: the raw pieces are what would leak
        parts.append(str(record.msg))
        parts.extend(str(arg) for arg in (record.args or ()))
    if record.exc_info and record.exc_info[1] is not None:
        parts.append("".join(traceback.format_exception(record.exc_info[1])))
    if record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    parts.extend(f"{key}={value!r}" for key, value in safe_extras(record).items())
    return "\n".join(parts)


def planted_in(text: str, planted: Mapping[str, str]) -> set[str]:
    """Return the kinds of planted values that occur in `text`."""
    low = text.lower()
    return {kind for kind, needle in needles(planted) if needle in low}


class LeakCatcher(logging.Handler):
    """A handler that keeps (logger, kind) for every record carrying a planted value."""

    def __init__(self, planted: Mapping[str, str]) -> None:
        super().__init__(logging.DEBUG)
        self.planted = dict(planted)
        self.violations: dict[str, set[str]] = {}
        self.seen = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.seen += 1
        kinds = planted_in(render(record), self.planted)
        if kinds:
            self.violations.setdefault(record.name, set()).update(kinds)

    def report(self) -> list[str]:
        """One line per offending logger: its name and the kinds of values (never values)."""
        return [
            f"{name}: {', '.join(sorted(kinds))}" for name, kinds in sorted(self.violations.items())
        ]


def install(catcher: LeakCatcher) -> int:
    """Add `catcher` to the root logger and lower the root level to DEBUG; return the old
    level (for `uninstall`)."""
    root = logging.getLogger()
    old = root.level
    root.addHandler(catcher)
    root.setLevel(logging.DEBUG)
    return old


def uninstall(catcher: LeakCatcher, level: int) -> None:
    """Undo `install`."""
    root = logging.getLogger()
    root.removeHandler(catcher)
    root.setLevel(level)


class LeakCheck:
    """The pytest plugin: capture from session start, fail the run at session end."""

    def __init__(self, planted: Mapping[str, str]) -> None:
        self.catcher = LeakCatcher(planted)
        self._level: int | None = None

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._level = install(self.catcher)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self._level is not None:
            uninstall(self.catcher, self._level)
            self._level = None
        if self.catcher.violations and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.catcher.violations:
            terminalreporter.section("log leaks", red=True)
            terminalreporter.write_line(
                "planted secrets / raw PII reached log records of these loggers:"
            )
            for line in self.catcher.report():
                terminalreporter.write_line(f"  {line}")


def assert_no_planted(texts: Iterable[str], where: str, planted: Mapping[str, str]) -> None:
    """Fail if a planted value occurs in any of `texts` (a subprocess' captured stderr)."""
    kinds: set[str] = set()
    for text in texts:
        kinds |= planted_in(text, planted)
    assert not kinds, f"planted values ({', '.join(sorted(kinds))}) in the log of {where}"
