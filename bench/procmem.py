"""A process's memory read from outside: ``VmRSS``/``VmHWM`` from /proc/<pid>/status, RSS by
mapping class from /proc/<pid>/smaps, and a thread that samples the RSS and keeps the smaps
summary at its highs (drain_rss.py)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

SAMPLE_SECONDS = 0.1


SMAPS_EVERY = 1.0
"""Least seconds between two reads of /proc/<pid>/smaps at a new RSS high."""


def status_kb(pid: int) -> dict[str, int]:
    """The ``Vm*`` and ``Rss*`` lines of /proc/<pid>/status, kB (empty when the process is gone)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.startswith(("Vm", "Rss")) and value.strip().endswith("kB"):
                out[key] = int(value.split()[0])
    return out


def mapping_class(name: str) -> str:
    """The class of one mapping of /proc/<pid>/smaps (see `smaps_summary`)."""
    if not name:
        return "anonymous (thread arenas, pymalloc, large blocks)"
    if name == "[heap]":
        return "[heap] (main thread's malloc arena)"
    if name.startswith("["):
        return name
    base = os.path.basename(name)
    if base.endswith((".db", ".db-wal", ".db-shm")):
        return f"database file {base}"
    if ".so" in base or base.startswith("python"):
        return "libraries and interpreter"
    return f"file {base}"


def smaps_summary(pid: int) -> dict[str, int]:
    """RSS by mapping class (kB) of a live process, largest first (empty when gone)."""
    sums: dict[str, int] = {}
    current = ""
    try:
        with open(f"/proc/{pid}/smaps") as handle:
            for line in handle:
                head = line.split(None, 1)[0]
                if not head.endswith(":"):  # a mapping's header: range perms offset dev inode
                    parts = line.split(None, 5)
                    current = mapping_class(parts[5].strip() if len(parts) > 5 else "")
                elif head == "Rss:":
                    sums[current] = sums.get(current, 0) + int(line.split()[1])
    except OSError:
        return {}
    return dict(sorted(sums.items(), key=lambda kv: -kv[1]))


class RssSampler:
    """Samples a process's VmRSS every `SAMPLE_SECONDS` in a thread; at each new high (at most
    once per `SMAPS_EVERY`) it keeps a `smaps_summary`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = time.monotonic()
        self.samples: list[tuple[float, int]] = []
        self.high_kb = 0
        self.smaps_at_high: dict[str, int] = {}
        self.smaps_rss_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last_smaps = 0.0
        while not self._stop.is_set():
            rss = status_kb(self.pid).get("VmRSS")
            now = time.monotonic()
            if rss is not None:
                self.samples.append((now - self.start, rss))
                if rss > self.high_kb:
                    self.high_kb = rss
                    if now - last_smaps >= SMAPS_EVERY or rss > self.smaps_rss_kb + 4096:
                        summary = smaps_summary(self.pid)
                        if summary:
                            self.smaps_at_high, self.smaps_rss_kb = summary, rss
                            last_smaps = now
            self._stop.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def mb(kb: float) -> float:
    return round(kb / 1024, 1)
