"""Helpers shared by the load benchmarks (ingest.py, collect.py, proxy.py): ports, pinning,
CPU accounting, source identity and number formatting."""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cmd: list[str], cpu: int | None) -> list[str]:
    """Prefix `cmd` with ``taskset -c cpu`` when pinning is wanted and possible."""
    if cpu is None or not shutil.which("taskset"):
        return cmd
    return ["taskset", "-c", str(cpu), *cmd]


def affinity_hook(cpu: int | None) -> Callable[[], None] | None:
    """A preexec_fn pinning the child when taskset is missing (Linux only)."""
    if cpu is None or shutil.which("taskset") or not hasattr(os, "sched_setaffinity"):
        return None

    def hook() -> None:
        os.sched_setaffinity(0, {cpu})

    return hook


def children_cpu() -> float:
    """CPU seconds (user + system) of every child process waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fmt(x: float, digits: int = 0) -> str:
    """A figure with thousands separators; NaN (no measurement) as "-"."""
    return "-" if x != x else f"{x:,.{digits}f}"


def source_digest(source: Path) -> str:
    """A digest of the gateway sources under `source` as they are on disk."""
    digest = hashlib.sha256()
    for path in sorted((source / "gateway").rglob("*.py")):
        digest.update(path.relative_to(source).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def git_head() -> str:
    cmd = ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]
    return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip() or "?"
