"""CPU and py-spy accounting over a process tree, for bench/scale.py: a gateway run as a
supervisor and its workers, PostgreSQL as a postmaster and its backends.

`tree_cpu` sums user + system time from /proc of every live process under a root (all
threads) plus the time of the children they reaped, so a closed PostgreSQL backend or a
restarted worker is never lost from the count; `spent_during` takes it around a load run.
`process_stacks` and `spy_summary` read a ``py-spy record --subprocesses --format raw`` file
with the threads of each process kept apart.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import Load, core_times
from benchprofile import SPY_ROOTS, gateway_frame, spy_frame

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3 on), None when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def tree_pids(root: int) -> set[int]:
    """`root` and every live descendant of it."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


def children_of(pid: int) -> list[int]:
    """The live child processes of `pid`, oldest (lowest pid) first."""
    kids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                kids.append(int(entry.name))
    return sorted(kids)


def pin_process(pid: int, core: int) -> None:
    """Pin every thread of `pid` (the ones it starts later inherit it) to `core`."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task), {core})


def place_workers(supervisor: int, cores: Sequence[int]) -> dict[int, int]:
    """Pin the workers of a `signalgate run --workers N` supervisor: worker i (by pid) to
    ``cores[i % len(cores)]``; the supervisor stays where it was started. Returns {worker pid:
    core}."""
    placed = {pid: cores[i % len(cores)] for i, pid in enumerate(children_of(supervisor))}
    for pid, core in placed.items():
        pin_process(pid, core)
    return placed


def tree_cpu(root: int) -> tuple[float, int]:
    """(CPU seconds, live processes) of the tree under `root`: user + system time of every live
    process (all threads) plus that of the children they reaped (a PostgreSQL backend that
    closed, a worker that was restarted), so no process escapes the count."""
    total, alive = 0, 0
    for pid in tree_pids(root):
        fields = _stat(pid)
        if fields is None:  # exited meanwhile: its time went to its parent's reaped total
            continue
        alive += 1
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / TICK, alive


def tree_switches(root: int) -> tuple[int, int]:
    """Context switches so far of every thread of the live processes of the tree under `root`:
    (voluntary: it blocked, e.g. an event loop waiting in epoll; involuntary: the scheduler took
    its core away while it could have run)."""
    voluntary = involuntary = 0
    for pid in tree_pids(root):
        for status in Path(f"/proc/{pid}/task").glob("*/status"):
            try:
                text = status.read_text()
            except OSError:  # the thread or process ended meanwhile
                continue
            for line in text.splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    voluntary += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    involuntary += int(line.split()[1])
    return voluntary, involuntary


def wait_tree_idle(root: int, timeout: float = 60.0, busy: float = 0.05) -> float:
    """Wait until the tree under `root` uses under `busy` of a core (the requests cut off at
    the end of a load run are still processed); return the seconds waited."""
    start = time.monotonic()
    before = tree_cpu(root)[0]
    while time.monotonic() - start < timeout:
        time.sleep(0.25)
        now = tree_cpu(root)[0]
        if now - before <= busy * 0.25:
            break
        before = now
    return time.monotonic() - start


@dataclass
class Spent:
    """CPU seconds used during a measurement by the gateway, PostgreSQL and everything else."""

    gateway: float
    postgres: float
    machine: float
    processes: int
    switches: tuple[int, int] = (0, 0)
    """The gateway's context switches meanwhile (voluntary, involuntary): `tree_switches`."""


def spent_during(gateway: int, postgres: int | None, run: Callable[[], Load]) -> tuple[Load, Spent]:
    """Run `run` and return its load with the CPU the two trees and the machine used meanwhile."""
    pg0 = tree_cpu(postgres)[0] if postgres else 0.0
    gw0, procs0 = tree_cpu(gateway)
    switches0 = tree_switches(gateway)
    machine0 = core_times(None)[0]
    load = run()
    machine1 = core_times(None)[0]
    switches1 = tree_switches(gateway)
    gw1, procs1 = tree_cpu(gateway)
    pg1 = tree_cpu(postgres)[0] if postgres else 0.0
    if procs1 != procs0:
        raise RuntimeError(
            f"the gateway had {procs0} processes before the measurement and {procs1} after:"
            " a worker died or restarted during it"
        )
    switches = (switches1[0] - switches0[0], switches1[1] - switches0[1])
    return load, Spent(gw1 - gw0, pg1 - pg0, (machine1 - machine0) / TICK, procs1, switches)


# -- py-spy ----------------------------------------------------------------------------------


def process_stacks(raw: Path) -> Iterator[tuple[str, list[tuple[str, str]], int]]:
    """(process and thread, frames outermost first as `spy_frame` pairs, sample count) of every
    stack in a py-spy raw file recorded with ``--subprocesses``: threads are named with their
    process id ("pid 4242 MainThread"), so the supervisor and each worker stay apart."""
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        process, thread = "", "?"
        while frames and frames[0].startswith(("process ", "thread ")):
            head = frames.pop(0)
            if head.startswith("process "):
                process = "pid " + head.removeprefix("process ").split(":", 1)[0]
            else:
                thread = head.split(": ", 1)[-1]
        parsed = [spy_frame(f) for f in frames]
        if parsed:
            yield f"{process} {thread}".strip(), parsed, int(count)


def spy_summary(raw: Path, us_per_event: float, top: int = 12) -> dict[str, Any]:
    """Shares of the samples of a py-spy raw file per process and thread, innermost gateway
    function and leaf function, and each share of `us_per_event` (the CPU per event measured
    while sampling: py-spy also counts a thread that waits for a busy core as active, so its
    own sample count is no measure of CPU)."""
    threads: Counter[str] = Counter()
    owner: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for thread, frames, count in process_stacks(raw):
        total += count
        threads[thread] += count
        leaf[f"{frames[-1][0]} ({frames[-1][1]})"] += count
        if frames[0][0] in SPY_ROOTS:
            mine = [f for f in frames if gateway_frame(f[1])]
            inner = mine[-1] if mine else frames[-1]
            owner[f"{inner[0]} ({inner[1]})"] += count

    def rows(c: Counter[str]) -> list[tuple[str, float, float]]:
        return [
            (k, round(100 * v / max(1, total), 1), round(us_per_event * v / max(1, total), 2))
            for k, v in c.most_common(top)
        ]

    return {
        "samples": total,
        "measured_us_per_event": round(us_per_event, 2),
        "threads": rows(threads),
        "owner": rows(owner),
        "self": rows(leaf),
        "owner_us": {k: us_per_event * v / max(1, total) for k, v in owner.items()},
    }


def thread_names(raw: Path) -> dict[int, str]:
    """``thread id -> "pid P name"`` of every thread in a ``--subprocesses`` py-spy raw file
    (for matching perf's per-thread rows)."""
    names: dict[int, str] = {}
    for line in raw.read_text().splitlines():
        process = ""
        for frame in line.split(";"):
            if frame.startswith("process "):
                process = "pid " + frame.removeprefix("process ").split(":", 1)[0]
            elif frame.startswith("thread ("):
                tid, _, name = frame.removeprefix("thread (").partition("): ")
                if tid.isdigit():
                    names[int(tid)] = f"{process} {name}".strip()
                break
            else:
                break
    return names
