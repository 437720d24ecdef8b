"""Sampling profiles of a server under load: starting py-spy (and perf) on it, and reading what
they recorded back as hotspots (by thread, stage, innermost gateway function, leaf function)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from benchlib import pinned

SPY_RATE = 250
"""py-spy samples per second and thread."""


def py_spy() -> str:
    """The py-spy executable (on PATH or next to this Python), or RuntimeError."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise RuntimeError("--profile needs py-spy (.venv/bin/pip install py-spy)")
    return spy


def start_py_spy(pid: int, seconds: int, raw: Path, cpu: int | None) -> subprocess.Popen[str]:
    """Start sampling `pid` for `seconds` (non-blocking, `SPY_RATE`, all threads) into the raw
    (collapsed) file `raw`, py-spy pinned to `cpu`."""
    cmd = [py_spy(), "record", "--pid", str(pid), "--duration", str(seconds)]
    cmd += ["--rate", str(SPY_RATE), "--nonblocking", "--threads"]
    cmd += ["--format", "raw", "--output", str(raw)]
    return start_sampler(cmd, cpu)


def start_sampler(cmd: list[str], cpu: int | None) -> subprocess.Popen[str]:
    """Start a sampling tool (py-spy, perf) pinned to `cpu`, its output captured as text."""
    return subprocess.Popen(
        pinned(cmd, cpu), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def perf_record_cmd(perf: str, cpu: int | None, data: Path, seconds: int) -> list[str]:
    """``perf record`` sampling core `cpu` (cpu-clock, 999 Hz) into `data` for `seconds`."""
    cmd = [perf, "record", "-q", "-e", "cpu-clock", "-F", "999"]
    cmd += ["-C", str(cpu), "-o", str(data)]
    cmd += ["--", "sleep", str(seconds)]
    return cmd


SPY_ROOTS = ("<module>", "_run_module_as_main", "Thread._bootstrap", "_bootstrap")
"""Outermost frames of a complete stack (non-blocking sampling tears some)."""


def spy_frame(frame: str) -> tuple[str, str]:
    """``func (/x/src/gateway/web/api.py:12)`` -> ``("func", "gateway/web/api.py")``: the path
    from the `gateway` package on, wherever the sources ran from."""
    m = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame, ""
    path = m.group(2)
    at = path.rfind("/gateway/")
    return m.group(1), path[at + 1 :] if at >= 0 else path


def gateway_frame(path: str) -> bool:
    """Whether a frame's path is gateway code (its entry points left out)."""
    return path.startswith("gateway/") and path not in ("gateway/cli.py", "gateway/__main__.py")


def spy_stacks(path: Path) -> Iterator[tuple[str, list[tuple[str, str]], int]]:
    """(thread name, frames outermost first as `spy_frame` pairs, sample count) of every
    stack in a py-spy raw file."""
    for line in path.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        frames = stack.split(";")
        thread = "?"
        while frames and frames[0].startswith(("process ", "thread ")):
            thread = frames.pop(0).split(": ", 1)[-1]
        parsed = [spy_frame(f) for f in frames]
        if parsed:
            yield thread, parsed, int(count_s)


def profile_row(item: Sequence[Any]) -> str:
    """One hotspot row: (what, % of samples, us per request)."""
    return f"    {item[1]:5.1f}%  {item[2]:7.1f} us/req  {item[0]}"


def perf_summary(perf: str, data: Path, threads: dict[int, str], top: int = 12) -> dict[str, Any]:
    """Shares of the server core's samples: per process, and for the server's threads (`tid ->
    name`) per thread, library and symbol (kernel work done for them, e.g. loopback TCP, shows
    as [kernel.kallsyms]). perf's own --pid/--tid filters drop shared libraries here, so the
    rows are grouped by thread id and filtered by hand."""

    def report(sort: str) -> list[tuple[str, float]]:
        cmd = [perf, "report", "-i", str(data), "--stdio", "--sort", sort]
        text = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
        rows = []
        for line in text.splitlines():
            m = re.match(r"^\s+([\d.]+)%\s+(.*\S)\s*$", line)
            if m:
                rows.append((re.sub(r"\s{2,}", "  ", m.group(2)), float(m.group(1))))
        return rows

    def mine(sort: str) -> tuple[Counter[str], Counter[str]]:
        by_rest: Counter[str] = Counter()
        by_thread: Counter[str] = Counter()
        for key, share in report(sort):
            m = re.match(r"^(\d+):\S*\s+(.*)$", key)
            if m and int(m.group(1)) in threads:
                by_rest[m.group(2)] += share
                by_thread[threads[int(m.group(1))]] += share
        return by_rest, by_thread

    libraries, per_thread = mine("pid,dso")
    symbols, _ = mine("pid,dso,sym")

    def rounded(c: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(v, 1)) for k, v in c.most_common(top)]

    return {
        "core_by_process": report("comm")[:top],
        "server_by_thread": rounded(per_thread),
        "server_by_library": rounded(libraries),
        "server_by_symbol": rounded(symbols),
    }


def spy_threads(raw: Path, pid: int) -> dict[int, str]:
    """``tid -> thread name`` from a py-spy raw file (its stacks start ``thread (tid): name``)."""
    found = {pid: "MainThread"}
    for m in re.finditer(r"thread \((\d+)\): ([^;]+);", raw.read_text()):
        found[int(m.group(1))] = m.group(2)
    return found


STAGES: tuple[tuple[str, str], ...] = (
    ("main thread outside gateway code (aiohttp HTTP, uvloop)", "!"),
    ("KeyRing.site_for (auth)", "KeyRing.site_for"),
    ("read_json_body (read + json.loads)", "read_json_body"),
    ("Pipeline.prepare (parse + hash)", "Pipeline.prepare"),
    ("  parse_event", "parse_event"),
    ("  hash_identifiers", "hash_identifiers"),
    ("Pipeline.commit (encode record, queue, await)", "Pipeline.commit"),
    ("  encode (record)", "encode"),
    ("web.json_response (answer)", "json_response"),
    ("uuid4 (request id in request_id_middleware)", "uuid4"),
    ("store futures resolved on the loop (_apply)", "_apply"),
    ("SQLite writer thread (all of it)", "@sqlite-store-writer"),
    ("  _append_tx (SQL inserts)", "_append_tx"),
    ("  COMMIT + savepoints (_execute_writes own)", "=SqliteGroupCommit._execute_writes"),
    ("  waking in queue.get (runnable, waiting for the core)", "=_Worker._serve"),
)
"""(label, rule): a function on the stack; ``!`` main-thread samples without a gateway frame;
``@name`` samples of that thread; ``=f`` samples whose innermost gateway frame is f."""


def hotspots(path: Path, requests: float, top: int = 15) -> dict[str, Any]:
    """Summarise a py-spy raw (collapsed) file, in % of samples and sampled us per request.

    Threads and leaf functions ("self") count every sample; stages and "owner" (the innermost
    gateway function, so stdlib/aiohttp time is charged to the gateway code that called it)
    count complete stacks only (non-blocking sampling tears some) and are scaled up to all.
    """
    threads: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    owner: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    total = complete = 0
    for thread, parsed, count in spy_stacks(path):
        total += count
        threads[thread] += count
        leaf[f"{parsed[-1][0]} ({parsed[-1][1]})"] += count
        if parsed[0][0] not in SPY_ROOTS:
            continue
        complete += count
        mine = [f for f in parsed if gateway_frame(f[1])]
        innermost = mine[-1] if mine else parsed[-1]
        owner[f"{innermost[0]} ({innermost[1]})"] += count
        names = {f[0] for f in parsed}
        for label, rule in STAGES:
            if rule == "!":
                hit = thread == "MainThread" and not mine
            elif rule.startswith("@"):
                hit = thread == rule[1:]
            elif rule.startswith("="):
                hit = bool(mine) and mine[-1][0] == rule[1:]
            else:
                hit = rule in names
            if hit:
                stages[label] += count
    scale = total / max(1, complete)
    per_sample_us = 1e6 / SPY_RATE / max(1.0, requests)

    def rows(c: Counter[str], factor: float, n: int | None = top) -> list[tuple[str, float, float]]:
        return [
            (k, round(100 * v * factor / max(1, total), 1), round(v * factor * per_sample_us, 1))
            for k, v in c.most_common(n)
        ]

    return {
        "samples": total,
        "complete_stacks": complete,
        "sampled_us_per_request": round(total * per_sample_us, 1),
        "threads": rows(threads, 1.0),
        "stages": [
            (
                label,
                round(100 * stages[label] * scale / max(1, total), 1),
                round(stages[label] * scale * per_sample_us, 1),
            )
            for label, _ in STAGES
        ],
        "owner": rows(owner, scale),
        "self": rows(leaf, 1.0),
    }
