"""The log-leak check itself can fail: the catcher flags every way a value reaches a record, and
a child pytest run whose test logs a planted value fails with the logger named, not the value."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from logleak import LeakCatcher, render

TESTS = Path(__file__).resolve().parents[1]
# Stand-ins with the planted values' shapes; never the real ones (the session's own catcher
# would flag this test).
FAKE = {
    "api key": "sg_fake_key_for_the_checker_000",
    "admin token": "fake-admin-token-9876",
    "e-mail": "Fake.Person@Example.org",
    "phone": "+1 415 555 0199",
}


@pytest.fixture
def leaky() -> Iterator[tuple[logging.Logger, LeakCatcher]]:
    """A throwaway logger that does not propagate to the root (and the session's catcher)."""
    catcher = LeakCatcher(FAKE)
    logger = logging.getLogger("leaky.selftest")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(catcher)
    try:
        yield logger, catcher
    finally:
        logger.removeHandler(catcher)
        logger.propagate = True


def test_clean_records_are_no_violation(leaky: tuple[logging.Logger, LeakCatcher]) -> None:
    logger, catcher = leaky
    logger.info("accepted %d events", 3, extra={"route": "shop:meta", "rows": 3})
    logger.debug("user=%s", "a.nother@example.org")
    assert catcher.seen == 2
    assert catcher.violations == {}


@pytest.mark.parametrize(
    ("log", "kind"),
    [
        (lambda lg: lg.info("email %s", FAKE["e-mail"]), "e-mail"),
        (lambda lg: lg.info("EMAIL " + FAKE["e-mail"].upper()), "e-mail"),
        (lambda lg: lg.warning("refused", extra={"reason": FAKE["phone"]}), "phone"),
        (lambda lg: lg.warning("digits", extra={"path": "/x/14155550199"}), "phone"),
        (lambda lg: lg.error("bad %(k)s", {"k": FAKE["admin token"]}), "admin token"),
        (lambda lg: lg.debug("stack", stack_info=True, extra={"site": FAKE["api key"]}), "api key"),
    ],
)
def test_each_way_into_a_record_is_caught(
    leaky: tuple[logging.Logger, LeakCatcher], log: object, kind: str
) -> None:
    logger, catcher = leaky
    log(logger)  # type: ignore[operator]
    assert catcher.violations == {"leaky.selftest": {kind}}
    assert catcher.report() == [f"leaky.selftest: {kind}"]


def test_exception_text_is_searched(leaky: tuple[logging.Logger, LeakCatcher]) -> None:
    logger, catcher = leaky
    try:
        raise ValueError(f"bad key {FAKE['api key']}")
    except ValueError:
        logger.exception("failed")
    assert catcher.violations == {"leaky.selftest": {"api key"}}
    assert all(value not in line for line in catcher.report() for value in FAKE.values())


def test_render_survives_a_broken_format_string() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s %s", ("only one",), None)
    assert "only one" in render(record)


CHILD_CONFTEST = """
import sys
sys.path.insert(0, {tests!r})
from logleak import LeakCheck

CHECK = LeakCheck({planted!r})


def pytest_configure(config):
    config.pluginmanager.register(CHECK, "child-log-leaks")
"""

CHILD_TEST = """
import logging


def test_logs_something():
    logging.getLogger("leaky.child").{call}
"""


def run_child(tmp_path: Path, call: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(CHILD_CONFTEST).format(tests=str(TESTS), planted=FAKE)
    )
    (tmp_path / "test_child.py").write_text(textwrap.dedent(CHILD_TEST).format(call=call))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )


def test_a_child_run_that_logs_a_planted_value_fails(tmp_path: Path) -> None:
    done = run_child(tmp_path, f"debug('user %s', {FAKE['e-mail']!r})")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 passed" in done.stdout  # the test passed; the leak check failed the run
    assert "log leaks" in done.stdout
    assert "leaky.child: e-mail" in done.stdout
    assert FAKE["e-mail"] not in done.stdout + done.stderr


def test_a_clean_child_run_passes(tmp_path: Path) -> None:
    done = run_child(tmp_path, "info('nothing to see')")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "log leaks" not in done.stdout
