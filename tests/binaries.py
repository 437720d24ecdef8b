"""Debian programs some tests drive (chromium, nginx, pebble): found, or the test cannot run.

Locally a missing program skips its tests with the package to install. Under CI (`CI` set, as
`.ci/run` runs) it fails them instead: `.ci/run` installs every one, so a skip there would hide
a broken install step and let an untested change land.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_binary(name: str, package: str | None = None) -> str:
    """Return the path of program `name`, else skip (locally) or fail (CI) the calling test."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path:
        return path
    reason = f"{name} is not installed (apt-get install {package or name}; .ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)
