"""Helpers shared by the load benchmarks (ingest.py, collect.py, proxy.py): ports, pinning,
CPU accounting, source identity and number formatting; for ingest.py and collect.py also
their common arguments, wrk Lua plumbing and output parsing and outbox checks (each bench
keeps its own requests, cases, checks and report; the server processes and gateway configs are
in benchservers.py, py-spy and perf in benchprofile.py, the ``POST /v1/events`` load in
benchload.py)."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import resource
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

ROOT = Path(__file__).resolve().parent.parent


NGINX_HEAD = """
{user}
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/tmp_body;
  proxy_temp_path {dir}/tmp_proxy;
  fastcgi_temp_path {dir}/tmp_fastcgi;
  uwsgi_temp_path {dir}/tmp_uwsgi;
  scgi_temp_path {dir}/tmp_scgi;
  keepalive_requests 1000000;
"""


def nginx_conf(http_body: str, **values: object) -> str:
    """Return a one-worker nginx config whose pid, logs and temp files live in `dir`, with
    `http_body` (a format template, braces doubled) inside its `http { }` block."""
    return (NGINX_HEAD + http_body + "}}\n").format(**values)


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


# -- shared by ingest.py and collect.py ---------------------------------------------------------
# (proxy.py has its own, simpler variants)

MAX_BAD_FRACTION = 0.001
"""More answers with another status (or socket errors) than this fraction of requests fails
the run."""
QUIET_THRESHOLD = 0.15
"""`wait_quiet` waits until the machine uses less than this many cores."""


# -- settings and arguments


@dataclass
class BenchSettings:
    """What every case of a bench shares: connections, timing, cores, temporary directory."""

    connections: int
    duration: float
    warmup: float
    server_cpu: int | None
    client_cpu: int | None
    workdir: Path

    @classmethod
    def from_args(cls, args: argparse.Namespace, workdir: Path, **extra: Any) -> Self:
        """The settings `add_timing_args` and `add_core_args` parsed (cores through
        `core_arg`), with a subclass's `extra` fields."""
        return cls(
            connections=args.connections,
            duration=args.duration,
            warmup=args.warmup,
            server_cpu=core_arg(args.server_cpu),
            client_cpu=core_arg(args.client_cpu),
            workdir=workdir,
            **extra,
        )


def add_timing_args(parser: argparse.ArgumentParser) -> None:
    """--duration, --warmup, --connections, --quick, --rounds (see `parse_bench_args`)."""
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per case")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per case")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections")
    parser.add_argument("--quick", action="store_true", help="3 s cases, 1 s warm-up")
    parser.add_argument("--rounds", type=int, default=1, help="repeat all cases; report medians")


def add_output_args(parser: argparse.ArgumentParser) -> None:
    """--json, --keep, --no-snapshot."""
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--no-snapshot",
        action="store_true",
        help="run the work tree's gateway package instead of a copy taken at start",
    )


def parse_bench_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse `argv`; ``--quick`` caps the cases at 3 s and the warm-up at 1 s."""
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = min(args.duration, 3.0), min(args.warmup, 1.0)
    return args


def add_core_args(parser: argparse.ArgumentParser, client_help: str) -> None:
    """--server-cpu and --client-cpu (`client_help`: what runs on the client core)."""
    parser.add_argument("--server-cpu", type=int, default=0, help="core of the server (-1: none)")
    parser.add_argument("--client-cpu", type=int, default=1, help=client_help)


def add_quiet_wait_arg(parser: argparse.ArgumentParser) -> None:
    """--quiet-wait: the longest `wait_quiet` before each case (ingest.py, scale.py; the
    delivery benches word it as `platforms.add_quiet_arg`)."""
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=180.0,
        help="longest wait (s) for an idle machine before each case; 0: start at once",
    )


def core_arg(cpu: int) -> int | None:
    """A ``--server-cpu``/``--client-cpu`` value: None (no pinning) when negative or when the
    machine has fewer than two cores."""
    return None if cpu < 0 or (os.cpu_count() or 1) < 2 else cpu


# -- the gateway sources the servers run


def snapshot_source(workdir: Path) -> Path:
    """Copy the gateway package into workdir/src; return that directory."""
    dest = workdir / "src"
    shutil.copytree(
        ROOT / "gateway", dest / "gateway", ignore=shutil.ignore_patterns("__pycache__")
    )
    return dest


def run_dirs(prefix: str, no_snapshot: bool) -> tuple[Path, Path]:
    """A fresh temporary directory for a run (named from `prefix`) and the directory holding the
    `gateway` package its servers run: a snapshot copied into it (`snapshot_source`) or, with
    `no_snapshot`, the work tree."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    return workdir, ROOT if no_snapshot else snapshot_source(workdir)


def child_env(source: Path) -> dict[str, str]:
    """Environment of server children: import `gateway` from `source`, unbuffered output."""
    path = os.pathsep.join(p for p in (str(source), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=path)


def source_warnings(env: dict[str, Any]) -> None:
    """Say when the gateway sources changed during the run (`env`: `environment` plus
    ``gateway_src_at_end`` and ``work_tree_src_at_end``)."""
    if env["gateway_src_at_end"] != env["gateway_src"]:
        print(
            f"WARNING: the gateway sources changed during the run ({env['gateway_src']} -> "
            f"{env['gateway_src_at_end']}): the figures mix code versions (drop --no-snapshot)",
            file=sys.stderr,
        )
    elif env["work_tree_src_at_end"] != env["gateway_src"]:
        print(
            f"note: measured the sources {env['gateway_src']} copied at start; the work tree "
            f"has changed since ({env['work_tree_src_at_end']}, HEAD {git_head()})"
        )


def code_identity(source: Path) -> dict[str, Any]:
    """Which gateway code a run measures, and on what: HEAD, the digest of the sources in
    `source` and whether they are a snapshot, the Python version and the machine's cores."""
    return {
        "git_head": git_head(),
        "gateway_src": source_digest(source),
        "gateway_snapshot": source != ROOT,
        "python": platform.python_version(),
        "cores": os.cpu_count(),
    }


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("?" when unknown)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def environment(source: Path, settings: BenchSettings, loadgen: str) -> dict[str, Any]:
    """Versions, machine and settings of a run (the ``environment`` of the JSON output)."""
    import aiohttp
    import uvloop

    cpu = cpu_model()
    wrk = ""
    if loadgen == "wrk":
        wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout
    return {
        "git_head": git_head(),
        "gateway_src": source_digest(source),
        "gateway_snapshot": source != ROOT,
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "uvloop": getattr(uvloop, "__version__", "?"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "loadgen": loadgen + (f" ({wrk.split()[1]})" if len(wrk.split()) > 1 else ""),
        "connections": settings.connections,
        "duration_s": settings.duration,
        "warmup_s": settings.warmup,
        "server_cpu": settings.server_cpu,
        "client_cpu": settings.client_cpu,
    }


def banner(name: str, what: str, env: dict[str, Any], settings: BenchSettings, client: str) -> None:
    """Print the run's first line (the bench's `name`, `what` it drives if said, then what
    `environment` found; `client` names what runs on the client core) and warn when the servers
    are not pinned."""
    print(
        f"signalgate {name} bench: {what + ', ' if what else ''}{env['loadgen']}, "
        f"{settings.connections} connections, "
        f"{settings.warmup:g} s warm-up + {settings.duration:g} s per case, server on core "
        f"{settings.server_cpu}, {client} on core {settings.client_cpu}, Python {env['python']}, "
        f"aiohttp {env['aiohttp']}, uvloop {env['uvloop']}, {env['cpu']} x{env['cores']}, "
        f"gateway code: HEAD {env['git_head']}, sources {env['gateway_src']}"
        + (" (snapshot)" if env["gateway_snapshot"] else " (work tree)"),
        flush=True,
    )
    if settings.server_cpu is None:
        print("warning: servers are not pinned (fewer than 2 cores?)", file=sys.stderr)


def end_run(env: dict[str, Any], source: Path, keep: bool, workdir: Path) -> None:
    """After the cases: note the sources' digests at the end in `env` (see `source_warnings`)
    and remove the temporary directory unless `keep`."""
    env["gateway_src_at_end"] = source_digest(source)
    env["work_tree_src_at_end"] = source_digest(ROOT)
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)


def write_json(path: str, doc: dict[str, Any]) -> None:
    """Write the results as indented JSON (anything else as its str) and say so."""
    Path(path).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"\nresults written to {path}")


# -- CPU accounting


def proc_times(pid: int) -> tuple[float, float]:
    """(user, user + system) CPU seconds of a live process (all threads); nan when gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan"), float("nan")
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, (int(fields[11]) + int(fields[12])) / tick


def core_times(cpu: int | None) -> tuple[int, int, int]:
    """(busy, total, user) jiffies of one core (all cores when None) from /proc/stat; busy is
    all but idle and iowait, user is user + nice."""
    name = "cpu" if cpu is None else f"cpu{cpu}"
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            fields = line.split()
            if fields and fields[0] == name:
                values = [int(v) for v in fields[1:9]]
                return sum(values) - values[3] - values[4], sum(values), values[0] + values[1]
    return 0, 0, 0


def wait_idle(pid: int, timeout: float = 60.0, busy: float = 0.05) -> float:
    """Wait until the process uses under `busy` of a core (requests cut off by the end of a
    load run are still processed: aiohttp does not cancel handlers when the client leaves).
    Return the seconds waited."""
    start = time.monotonic()
    before = proc_times(pid)[1]
    while time.monotonic() - start < timeout:
        time.sleep(0.25)
        now = proc_times(pid)[1]
        if not now - before > busy * 0.25:  # also stops on nan (process gone)
            break
        before = now
    return time.monotonic() - start


def wait_quiet(max_wait: float = 180.0, threshold: float = QUIET_THRESHOLD) -> float:
    """Before a case: wait until the machine's cores are idle (other work, e.g. someone's test
    run, would share the cores being measured). Return the busy cores seen last."""
    deadline = time.monotonic() + max_wait
    tick = os.sysconf("SC_CLK_TCK")
    while True:
        before = core_times(None)
        time.sleep(0.5)
        after = core_times(None)
        busy = (after[0] - before[0]) / tick / 0.5
        if busy < threshold or time.monotonic() > deadline:
            return busy
        time.sleep(1.0)


@dataclass
class CpuSnapshot:
    """CPU counters around a measurement: the server process, its core, the whole machine and
    the reaped children (the load generator)."""

    server_user: float
    server_cpu: float
    core: tuple[int, int, int]
    machine: tuple[int, int, int]
    client_user: float

    @classmethod
    def take(cls, pid: int, cpu: int | None) -> CpuSnapshot:
        user, total = proc_times(pid)
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
        return cls(user, total, core_times(cpu), core_times(None), children)


def measured(pid: int, cpu: int | None, run: Callable[[], Load]) -> Load:
    """Run `run` (one load run against the server `pid` on core `cpu`) and fill in its
    ``server_cpu_s``, ``server_core_busy`` and ``other_cpu_s``."""
    before = CpuSnapshot.take(pid, cpu)
    load = run()
    after = CpuSnapshot.take(pid, cpu)
    load.server_cpu_s = after.server_cpu - before.server_cpu
    total = after.core[1] - before.core[1]
    load.server_core_busy = (after.core[0] - before.core[0]) / total if total > 0 else float("nan")
    # user CPU of the machine spent in neither the server nor the load generator (kernel time
    # is left out: loopback networking is charged to nobody in particular)
    machine = (after.machine[2] - before.machine[2]) / os.sysconf("SC_CLK_TCK")
    ours = (after.server_user - before.server_user) + (after.client_user - before.client_user)
    load.other_cpu_s = machine - ours
    return load


# -- load generation


WRK_PLUMBING = """
-- shared plumbing (bench/benchlib.py): per-thread counters, summed into one BENCH_JSON line
local threads = {}
local tcount = 0

function setup(thread)
  tcount = tcount + 1
  thread:set("tid", tcount)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  ok = 0
  bad = 0
  sample = ""
  start(args)
end

function response(status, hdrs, body)
  if status == %(ok_status)d then
    ok = ok + 1
  else
    bad = bad + 1
    if sample == "" then
      sample = tostring(status) .. " " .. string.sub(body or "", 1, 160)
    end
  end
end

function done(summary, latency, requests)
  local okt, badt, smp = 0, 0, ""
  for _, t in ipairs(threads) do
    okt = okt + t:get("ok")
    badt = badt + t:get("bad")
    local s = t:get("sample")
    if smp == "" and s ~= nil then smp = s end
  end
  smp = string.gsub(smp, '[^%%w%%s%%.:,_%%-]', '?')
  smp = string.gsub(smp, '%%s', ' ')
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%%d,"duration_s":%%.6f,"ok":%%d,"bad":%%d,' ..
    '"socket_errors":%%d,"p50_ms":%%.3f,"p90_ms":%%.3f,"p99_ms":%%.3f,"max_ms":%%.3f,' ..
    '"mean_ms":%%.3f,"sample":"%%s"}\\n',
    summary.requests, summary.duration / 1e6, okt, badt,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, latency.mean / 1000, smp))
end
"""


def wrk_script(own: str, ok_status: int) -> str:
    """A wrk Lua script: the bench's `own` part (which defines ``start(args)``, called by
    ``init`` once the globals ``counter``, ``ok``, ``bad`` and ``sample`` are reset, and
    ``request()``; ``tid`` is the thread's number from 1) followed by the shared plumbing,
    which counts `ok_status` answers and prints the ``BENCH_JSON {...}`` line `run_loadgen`
    reads."""
    return own + WRK_PLUMBING % {"ok_status": ok_status}


@dataclass
class Load:
    """What one load-generator run saw, plus the CPU figures around it (see `measured`)."""

    requests: int
    duration_s: float
    ok: int
    bad: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    sample: str = ""
    client_cpu_s: float = 0.0
    server_cpu_s: float = float("nan")
    server_core_busy: float = float("nan")
    other_cpu_s: float = float("nan")


def load_figures(load: Load, status: int) -> dict[str, Any]:
    """The figures of a measured `load` every result reports (answers counted as ``ok_<status>``
    and ``non_<status>``), rates and CPU shares per second of the run."""
    d = load.duration_s
    return {
        "duration_s": round(d, 3),
        "requests_per_s": load.ok / d,
        "p50_ms": load.p50_ms,
        "p90_ms": load.p90_ms,
        "p99_ms": load.p99_ms,
        "max_ms": load.max_ms,
        f"ok_{status}": load.ok,
        f"non_{status}": load.bad,
        "socket_errors": load.socket_errors,
        "server_cpu_pct": 100 * load.server_cpu_s / d,
        "server_core_busy_pct": 100 * load.server_core_busy,
        "client_cpu_pct": 100 * load.client_cpu_s / d,
        "other_cpu_pct": 100 * load.other_cpu_s / d,
    }


class _Rated(Protocol):
    requests_per_s: float


R = TypeVar("R", bound=_Rated)


def median_run(runs: Iterable[R]) -> R | None:
    """The median of `runs` by requests/s (the lower one of an even count), None if none."""
    ordered = sorted(runs, key=lambda r: r.requests_per_s)
    return ordered[(len(ordered) - 1) // 2] if ordered else None


def bench_json(stdout: str) -> dict[str, Any] | None:
    """The object of the first ``BENCH_JSON {...}`` line of a child's output, if any."""
    line = next((x for x in stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    return None if line is None else dict(json.loads(line.removeprefix("BENCH_JSON ")))


def run_loadgen(cmd: list[str], cpu: int | None, seconds: float, name: str) -> Load:
    """Run a load generator (wrk with a `wrk_script`, or a child printing the same line)
    pinned to `cpu`; return its figures, with its CPU time unless it reported its own."""
    before = children_cpu()
    done = subprocess.run(
        pinned(cmd, cpu),
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=affinity_hook(cpu),
        timeout=seconds + 120,
    )
    doc = bench_json(done.stdout)
    if done.returncode != 0 or doc is None:
        raise RuntimeError(
            f"{name} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr}"
        )
    load = Load(**doc)
    if not load.client_cpu_s:  # wrk; the Python client reports its own (without start-up)
        load.client_cpu_s = children_cpu() - before
    return load


def check_answers(name: str, load: Load, status: int) -> None:
    """Fail when nothing was answered `status` or too many answers (or sockets) went wrong."""
    wrong = load.bad + load.socket_errors
    if load.ok == 0 or wrong > MAX_BAD_FRACTION * max(1, load.requests):
        raise RuntimeError(
            f"{name}: {load.ok} x {status}, {load.bad} other answers, {load.socket_errors} "
            f"socket errors; first other answer: {load.sample!r}"
        )


# -- the outbox


def outbox_rows(db: Path, *, states: bool = False, profiles: bool = False) -> dict[str, int]:
    """Open the outbox read-only; return row counts: ``events``, ``deliveries_<state>`` (with
    `states`), ``deliveries`` and ``profiles`` (with `profiles`)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        out = {"events": conn.execute("SELECT count(*) FROM events").fetchone()[0]}
        if states:
            for state, n in conn.execute("SELECT state, count(*) FROM deliveries GROUP BY state"):
                out[f"deliveries_{state}"] = n
        out["deliveries"] = conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
        if profiles:
            out["profiles"] = conn.execute("SELECT count(*) FROM profiles").fetchone()[0]
        return out
    finally:
        conn.close()


def check_outbox(name: str, rows: dict[str, int], expected: int, slack: int, what: str) -> None:
    """Fail unless the outbox holds `expected` events and deliveries, up to `slack` more
    deliveries (requests cut off by the end of a load run may still commit after the client
    stopped); `what` names the answers, e.g. "events were answered 202"."""
    if not expected <= rows["deliveries"] <= expected + slack or rows["events"] < expected:
        raise RuntimeError(
            f"{name}: outbox holds {rows} but {expected} {what} (allowed surplus {slack}): "
            "the gateway is not storing what it accepts"
        )


def wait_rows_done(db: Path, want: int, patience: float) -> dict[str, int]:
    """Wait (up to `patience` s) until the outbox marks `want` rows done; return its counts."""
    deadline = time.monotonic() + patience
    while True:
        rows = outbox_rows(db, states=True)
        if rows.get("deliveries_done", 0) >= want or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)
