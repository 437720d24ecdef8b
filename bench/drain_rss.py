"""Memory while a deep outbox fills and drains (issue #13): peak RSS of the gateway process.

Run on demand (never in CI): ``.venv/bin/python bench/drain_rss.py [--quick] [--json out.json]``.

Each case (Meta alone, then every destination of ``bench/platforms.py``):

1. starts the case's sandboxes in a separate process (``bench/delivery.py``'s, pinned to
   ``--client-cpu``; they count what they accept and forget it);
2. **queueing**: ``signalgate run --no-delivery`` on a site with the case's destinations (each
   pointing at its sandbox), ``--events`` realistic Purchase events (``bench/ingest.py``'s)
   posted 100 per request; the outbox must then hold one pending row per event and
   destination;
3. **draining**: ``signalgate run`` with delivery workers on the same config and outbox, until
   every sandbox accepted every event once and the outbox marks every row done.

During both phases a thread of this process reads the gateway's ``VmRSS`` from
``/proc/<pid>/status`` every 100 ms; just before each phase's graceful stop it reads ``VmHWM``
(the kernel's own peak, which no sampling interval can miss). Whenever the sampled RSS reaches a
new high it also reads ``/proc/<pid>/smaps`` (at most once a second), so the report says what the
peak is made of: the main heap (``[heap]``: the main thread's malloc arena), anonymous mappings
(other threads' malloc arenas, Python's pymalloc arenas, large blocks) and file mappings
(libraries, a memory-mapped database).

``--trace`` runs each gateway phase again (an extra, unreported run) under ``tracemalloc`` with
glibc's ``mallinfo2`` counters sampled beside it: it prints which Python allocation sites hold
the memory that grew between the start of the phase and its peak, the traced total against the
RSS (the difference is native: SQLite's page cache, malloc fragmentation, libraries) and the
malloc arenas' free bytes (fragmentation). Peak RSS under ``--trace`` is inflated by tracemalloc
itself, which is why those runs are kept out of the verdict.

The target (issue #13): peak RSS <= 150 MB while 100,000 queued events drain.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import functools
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchlib import (
    ROOT,
    Server,
    core_arg,
    end_run,
    fmt,
    free_port,
    git_head,
    outbox_rows,
    proc_times,
    snapshot_source,
    source_digest,
    source_warnings,
    wait_quiet,
    write_gateway_config,
    write_json,
)
from benchload import API_KEY, ID_MARK, body_for, event_template
from delivery import (
    BASELINE,
    BATCH,
    FILL_CONNECTIONS,
    GATEWAY_TOML,
    SandboxProcess,
    port_of,
    start_sandboxes,
    tallies,
    tally_text,
)
from platforms import CLICK_IDS, add_quiet_arg, destinations_toml, registered, usable

TARGET_MB = 150.0
"""Issue #13: peak RSS while 100,000 queued events drain."""
EVENTS = 100_000
QUICK_EVENTS = 10_000
SAMPLE_SECONDS = 0.1
SMAPS_EVERY = 1.0
"""Least seconds between two reads of /proc/<pid>/smaps at a new RSS high."""
SERIES_POINTS = 200
"""RSS samples kept per phase in the JSON output (evenly thinned)."""
TRACE_FRAMES = 12
TRACE_TOP = 15


# -- reading a process's memory from outside ---------------------------------------------------


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


@dataclass
class Phase:
    """RSS of the gateway over one phase (queueing or draining)."""

    name: str
    seconds: float
    """Start of the process to the end of the work (all events answered / all rows done)."""
    work: int
    """Events accepted (queueing) or deliveries accepted by the sandboxes (draining)."""
    peak_mb: float
    """VmHWM just before the graceful stop: the kernel's peak RSS of the whole process life."""
    sampled_max_mb: float
    start_mb: float
    """First sample (the process has just started)."""
    idle_mb: float
    """RSS once the server listens, before any work."""
    end_mb: float
    """Last sample before the stop."""
    samples: int
    smaps_at_high_mb: dict[str, float]
    """RSS by mapping class at (about) the sampled peak."""
    smaps_rss_mb: float
    cpu_s: float = float("nan")
    """The gateway's CPU seconds (user + system) over the phase, start-up included."""
    series: list[tuple[float, float]] = field(default_factory=list)
    """(seconds since start, RSS MB), thinned to at most `SERIES_POINTS`."""
    trace: dict[str, Any] | None = None
    """`--trace`: what tracemalloc and mallinfo2 saw in an extra run of this phase."""

    @property
    def rate(self) -> float:
        return self.work / self.seconds if self.seconds > 0 else float("nan")

    @property
    def cpu_us_per_item(self) -> float:
        return 1e6 * self.cpu_s / self.work if self.work else float("nan")


def mb(kb: float) -> float:
    return round(kb / 1024, 1)


def phase_of(
    name: str, sampler: RssSampler, hwm_kb: int, seconds: float, work: int, idle_kb: int
) -> Phase:
    samples = sampler.samples
    step = max(1, len(samples) // SERIES_POINTS)
    return Phase(
        name=name,
        seconds=seconds,
        work=work,
        peak_mb=mb(hwm_kb),
        sampled_max_mb=mb(max((s for _, s in samples), default=0)),
        start_mb=mb(samples[0][1]) if samples else 0.0,
        idle_mb=mb(idle_kb),
        end_mb=mb(samples[-1][1]) if samples else 0.0,
        samples=len(samples),
        smaps_at_high_mb={k: mb(v) for k, v in sampler.smaps_at_high.items() if v >= 512},
        smaps_rss_mb=mb(sampler.smaps_rss_kb),
        series=[(round(t, 2), mb(kb)) for t, kb in samples[::step]],
    )


# -- the gateway under tracemalloc (--trace) ---------------------------------------------------


class MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (all size_t)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@functools.cache
def _mallinfo2() -> Any:
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = MallInfo2
    return fn


def mallinfo() -> dict[str, int] | None:
    """glibc malloc's counters over all arenas (None off glibc or before 2.33)."""
    fn = _mallinfo2()
    if fn is None:
        return None
    info = fn()
    return {
        "arena_bytes": info.arena,
        "mmapped_bytes": info.hblkhd,
        "in_use_bytes": info.uordblks,
        "free_in_arenas_bytes": info.fordblks,
        "trimmable_bytes": info.keepcost,
    }


@functools.cache
def _sqlite_lib() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libsqlite3.so.0")
    except OSError:
        return None


def sqlite_memory() -> dict[str, int] | None:
    """SQLite's own count of the bytes it has allocated (page caches, schemas, statements), now
    and at its high, for the whole process (None when the library cannot be loaded)."""
    lib = _sqlite_lib()
    if lib is None:
        return None
    now, high = ctypes.c_int64(), ctypes.c_int64()
    if lib.sqlite3_status64(0, ctypes.byref(now), ctypes.byref(high), 0) != 0:
        return None
    return {"used_bytes": now.value, "high_bytes": high.value}


def cyclic_garbage(top: int = 12) -> dict[str, Any]:
    """Collect every generation, keeping what only the cycle collector could free; return how
    many objects that was, by type (the most common `top`), with their shallow sizes."""
    import gc
    from collections import Counter

    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        found = gc.collect()
        kinds: Counter[str] = Counter()
        sizes: Counter[str] = Counter()
        for obj in gc.garbage:
            name = f"{type(obj).__module__}.{type(obj).__qualname__}"
            kinds[name] += 1
            sizes[name] += sys.getsizeof(obj)
        total = sum(sizes.values())
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
    return {
        "objects": found,
        "shallow_mb": round(total / 2**20, 2),
        "by_type": [
            {"type": k, "count": n, "shallow_mb": round(sizes[k] / 2**20, 2)}
            for k, n in kinds.most_common(top)
        ],
    }


def traced_main(argv: Sequence[str]) -> int:
    """``drain_rss.py _traced OUTDIR -- <gateway args>``: run ``python -m gateway <args>``;
    once the parent creates OUTDIR/go (the server listens: start-up is not traced, which would
    take minutes), start tracemalloc, dump the (empty) base snapshot to OUTDIR/base.snap and
    create OUTDIR/ready. From then on append {traced, mallinfo, rss} to OUTDIR/samples.jsonl
    every 0.25 s and dump a snapshot to OUTDIR/peak.snap whenever the traced total passes its
    last dump by 2 MB (at most every 2 s): only blocks allocated since the start are traced, so
    the last dump holds what the work made the process keep. When OUTDIR/dump appears (the
    parent, before stopping it), dump OUTDIR/final.snap and create OUTDIR/dumped."""
    import runpy
    import tracemalloc

    outdir = Path(argv[1])
    gateway_args = list(argv[argv.index("--") + 1 :])
    if gateway_args[:2] == ["-m", "gateway"]:
        gateway_args = gateway_args[2:]

    def sample_loop() -> None:
        while not (outdir / "go").exists():
            time.sleep(0.05)
        python = os.environ.get("DRAIN_RSS_TRACE") != "native"
        if python:
            tracemalloc.start(TRACE_FRAMES)
        begin = time.monotonic()
        if python:
            tracemalloc.take_snapshot().dump(str(outdir / "base.snap"))
        (outdir / "ready").touch()
        dumped, last_dump = 0, 0.0
        with (outdir / "samples.jsonl").open("a") as out:
            while True:
                if (outdir / "dump").exists() and not (outdir / "dumped").exists():
                    if python:
                        tracemalloc.take_snapshot().dump(str(outdir / "final.snap"))
                    (outdir / "garbage.json").write_text(json.dumps(cyclic_garbage()))
                    (outdir / "dumped").touch()
                current, peak = tracemalloc.get_traced_memory()
                now = time.monotonic() - begin
                row = {
                    "t": round(now, 2),
                    "traced": current,
                    "traced_peak": peak,
                    "rss_kb": status_kb(os.getpid()).get("VmRSS", 0),
                    "malloc": mallinfo(),
                    "sqlite": sqlite_memory(),
                }
                out.write(json.dumps(row) + "\n")
                out.flush()
                if python and current > dumped + 2 * 2**20 and now - last_dump >= 2.0:
                    tracemalloc.take_snapshot().dump(str(outdir / "peak.tmp"))
                    os.replace(outdir / "peak.tmp", outdir / "peak.snap")
                    dumped, last_dump = current, now
                time.sleep(0.25)

    threading.Thread(target=sample_loop, name="trace-sampler", daemon=True).start()
    sys.argv = ["gateway", *gateway_args]
    runpy.run_module("gateway", run_name="__main__", alter_sys=True)
    return 0


def final_snapshot(outdir: Path, timeout: float = 120.0) -> None:
    """Ask a `traced_main` child for OUTDIR/final.snap (before stopping it); wait for it."""
    (outdir / "dump").touch()
    deadline = time.monotonic() + timeout
    while not (outdir / "dumped").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def start_tracing(outdir: Path, timeout: float = 60.0) -> None:
    """Tell a `traced_main` child to start tracemalloc; wait until it has."""
    (outdir / "go").touch()
    deadline = time.monotonic() + timeout
    while not (outdir / "ready").exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the traced gateway did not start tracemalloc in {timeout:g} s")
        time.sleep(0.05)


def owner_frame(trace: Any) -> str:
    """The innermost frame of a traceback in gateway code (else the innermost frame), as
    ``path:line``, the path from ``gateway/`` (or the library's file name) on."""
    frames = list(reversed(trace))  # a Traceback runs from the oldest frame to the newest
    entry = ("/gateway/__main__.py", "/gateway/cli.py")
    chosen = next(
        (f for f in frames if "/gateway/" in f.filename and not f.filename.endswith(entry)),
        frames[0] if frames else None,
    )
    if chosen is None:
        return "?"
    path = chosen.filename
    at = path.rfind("/gateway/")
    short = path[at + 1 :] if at >= 0 else "/".join(path.split("/")[-2:])
    return f"{short}:{chosen.lineno}"


def short_site(frame: Any) -> str:
    path = frame.filename
    at = path.rfind("/gateway/")
    short = path[at + 1 :] if at >= 0 else "/".join(path.split("/")[-2:])
    return f"{short}:{frame.lineno}"


def trace_report(outdir: Path) -> dict[str, Any]:
    """What grew between the base and the peak snapshots of a traced run, by allocation site
    and by owning gateway line, plus the samples at the RSS peak."""
    import tracemalloc

    rows = [json.loads(x) for x in (outdir / "samples.jsonl").read_text().splitlines() if x]
    out: dict[str, Any] = {"samples": len(rows)}
    if rows:
        top = max(rows, key=lambda r: r["rss_kb"])
        out["at_rss_peak"] = {
            "t": top["t"],
            "rss_mb": mb(top["rss_kb"]),
            "traced_mb": round(top["traced"] / 2**20, 1),
            "traced_peak_mb": round(top["traced_peak"] / 2**20, 1),
            "malloc_mb": {k: round(v / 2**20, 1) for k, v in (top["malloc"] or {}).items()},
            "sqlite_mb": {k: round(v / 2**20, 1) for k, v in (top.get("sqlite") or {}).items()},
        }
    garbage = outdir / "garbage.json"
    if garbage.exists():
        out["cyclic_garbage_at_end"] = json.loads(garbage.read_text())
    base, peak = outdir / "base.snap", outdir / "peak.snap"
    if not peak.exists():
        peak = outdir / "final.snap"
    if not (base.exists() and peak.exists()):
        return out
    old = tracemalloc.Snapshot.load(str(base))
    new = tracemalloc.Snapshot.load(str(peak))
    skip = [tracemalloc.Filter(False, tracemalloc.__file__)]
    old, new = old.filter_traces(skip), new.filter_traces(skip)
    growth = new.compare_to(old, "lineno")
    out["traced_base_mb"] = round(sum(s.size for s in old.statistics("filename")) / 2**20, 1)
    out["traced_peak_snapshot_mb"] = round(
        sum(s.size for s in new.statistics("filename")) / 2**20, 1
    )
    out["growth_by_site"] = [
        {
            "site": short_site(s.traceback[0]),
            "grew_mb": round(s.size_diff / 2**20, 2),
            "now_mb": round(s.size / 2**20, 2),
            "blocks": s.count,
        }
        for s in growth[:TRACE_TOP]
    ]
    owners: dict[str, list[int]] = {}
    for s in new.compare_to(old, "traceback"):
        entry = owners.setdefault(owner_frame(s.traceback), [0, 0])
        entry[0] += s.size_diff
        entry[1] += s.size
    ranked = sorted(owners.items(), key=lambda kv: -kv[1][0])[:TRACE_TOP]
    out["growth_by_gateway_line"] = [
        {"owner": k, "grew_mb": round(v[0] / 2**20, 2), "now_mb": round(v[1] / 2**20, 2)}
        for k, v in ranked
    ]
    return out


def traced_cmd(outdir: Path, gateway_args: Sequence[str]) -> list[str]:
    outdir.mkdir(parents=True, exist_ok=True)
    script = str(Path(__file__).resolve())
    return [sys.executable, script, "_traced", str(outdir), "--", *gateway_args]


# -- one case ----------------------------------------------------------------------------------


class SlowStartServer(Server):
    """A `Server` given two minutes to listen (imports under tracemalloc are slow)."""

    def _wait_ready(self, timeout: float = 120.0) -> None:
        super()._wait_ready(timeout)


def start_server(name: str, cmd: list[str], port: int, opts: Options, traced: bool) -> Server:
    kind = SlowStartServer if traced else Server
    return kind(name, cmd, opts.server_cpu, port, opts.workdir, opts.source)


@dataclass
class Options:
    events: int
    server_cpu: int | None
    client_cpu: int | None
    quiet_wait: float
    stall: float
    workdir: Path
    source: Path
    parts: list[str]
    trace: bool = False
    cache_mb: int | None = None
    """``[storage] cache_mb`` of the gateway (None: its default)."""


@dataclass
class CaseResult:
    case: str
    destinations: list[str]
    events: int
    queueing: Phase
    draining: Phase
    outbox: dict[str, int]
    target_mb: float = TARGET_MB

    @property
    def passed(self) -> bool:
        return max(self.queueing.peak_mb, self.draining.peak_mb) <= self.target_mb


def event_bodies(parts: Sequence[str], prefix: str, events: int) -> Iterator[bytes]:
    """100-event bodies, made as they are sent (a million events' bodies would weigh on the
    bench process, not on the gateway, but there is no reason to hold them)."""
    for first in range(0, events, BATCH):
        yield body_for(parts, prefix, first, min(BATCH, events - first))


async def post_bodies(port: int, bodies: Iterator[bytes]) -> int:
    """POST every body over `FILL_CONNECTIONS` keep-alive connections; every answer must be
    202; return the events accepted."""
    import aiohttp

    url = f"http://127.0.0.1:{port}/v1/events"
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    accepted = 0
    connector = aiohttp.TCPConnector(limit=FILL_CONNECTIONS)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def poster() -> None:
            nonlocal accepted
            for body in bodies:  # one shared iterator: each body is posted once
                async with session.post(url, data=body, headers=headers) as resp:
                    text = await resp.text()
                    if resp.status != 202:
                        raise RuntimeError(f"queueing: HTTP {resp.status} {text[:300]}")
                    accepted += int(json.loads(text)["accepted"])

        await asyncio.gather(*(poster() for _ in range(FILL_CONNECTIONS)))
    return accepted


def queue_phase(
    opts: Options, names: Sequence[str], toml: str, tag: str, trace_dir: Path | None
) -> tuple[Phase, Path]:
    """Start the gateway without delivery, post `opts.events` events; return the phase and
    the outbox path (its config beside it)."""
    port = free_port()
    config, db = write_gateway_config(toml, opts.workdir, port, key=API_KEY)
    args = ["-m", "gateway", "run", "--config", str(config), "--no-delivery"]
    cmd = [sys.executable, *args] if trace_dir is None else traced_cmd(trace_dir, args)
    spawn = time.monotonic()
    server = start_server("gateway-queueing", cmd, port, opts, trace_dir is not None)
    sampler = RssSampler(server.proc.pid)
    sampler.start = spawn
    try:
        if trace_dir is not None:
            start_tracing(trace_dir)
        idle = status_kb(server.proc.pid).get("VmRSS", 0)
        accepted = asyncio.run(post_bodies(server.port, event_bodies(opts.parts, tag, opts.events)))
        seconds = time.monotonic() - spawn
        hwm = status_kb(server.proc.pid).get("VmHWM", 0)
        cpu = proc_times(server.proc.pid)[1]
        if trace_dir is not None:
            final_snapshot(trace_dir)
    finally:
        sampler.stop()
        server.stop()
    rows = outbox_rows(db, states=True)
    want = opts.events * len(names)
    if accepted != opts.events or rows["events"] != opts.events or rows["deliveries"] != want:
        raise RuntimeError(
            f"queueing: {accepted} of {opts.events} events accepted, outbox holds {rows}, "
            f"expected {want} delivery rows"
        )
    phase = phase_of("queueing", sampler, hwm, seconds, accepted, idle)
    phase.cpu_s = cpu
    return phase, db


def drain_phase(
    opts: Options,
    names: Sequence[str],
    db: Path,
    sandboxes: Sequence[SandboxProcess],
    trace_dir: Path | None,
) -> tuple[Phase, dict[str, int]]:
    """Start the gateway with delivery on the filled outbox; sample until every sandbox has
    every event and the outbox marks every row done."""
    want = opts.events * len(names)
    config = db.parent / "signalgate.toml"
    args = ["-m", "gateway", "run", "--config", str(config)]
    cmd = [sys.executable, *args] if trace_dir is None else traced_cmd(trace_dir, args)
    base = sum(t.accepted for t in tallies(sandboxes).values())
    spawn = time.monotonic()
    server = start_server("gateway-draining", cmd, port_of(config), opts, trace_dir is not None)
    sampler = RssSampler(server.proc.pid)
    sampler.start = spawn
    try:
        if trace_dir is not None:
            start_tracing(trace_dir)
        idle = status_kb(server.proc.pid).get("VmRSS", 0)
        delivered = wait_delivered(opts, server, sandboxes, base + want) - base
        done = wait_rows_done(db, want, opts.stall)
        seconds = time.monotonic() - spawn
        hwm = status_kb(server.proc.pid).get("VmHWM", 0)
        cpu = proc_times(server.proc.pid)[1]
        if trace_dir is not None:
            final_snapshot(trace_dir)
    finally:
        sampler.stop()
        server.stop()
    if done.get("deliveries_done", 0) != want:
        raise RuntimeError(f"draining: outbox holds {done}, expected {want} rows done")
    phase = phase_of("draining", sampler, hwm, seconds, delivered, idle)
    phase.cpu_s = cpu
    return phase, done


def wait_delivered(
    opts: Options, gateway: Server, sandboxes: Sequence[SandboxProcess], want: int
) -> int:
    """Poll the sandboxes until they accepted `want` events in all; RuntimeError when one
    rejects an event or nothing moves for `opts.stall` seconds."""
    seen, moved = -1, time.monotonic()
    while True:
        now_tallies = tallies(sandboxes)
        total = sum(t.accepted for t in now_tallies.values())
        if any(t.rejected for t in now_tallies.values()):
            raise RuntimeError(f"a sandbox rejected events: {tally_text(now_tallies)}")
        if total >= want:
            return total
        now = time.monotonic()
        if total > seen:
            seen, moved = total, now
        elif now - moved > opts.stall:
            raise RuntimeError(
                f"draining stalled at {total} of {want} deliveries; gateway log:\n"
                f"{gateway.log_tail()}"
            )
        time.sleep(0.2)


def wait_rows_done(db: Path, want: int, patience: float) -> dict[str, int]:
    deadline = time.monotonic() + patience
    while True:
        rows = outbox_rows(db, states=True)
        if rows.get("deliveries_done", 0) >= want or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def gateway_toml(opts: Options) -> str:
    """``delivery.py``'s gateway config, with ``--cache-mb`` when given."""
    if opts.cache_mb is None:
        return GATEWAY_TOML
    storage = 'synchronous = "NORMAL"\n'
    assert storage in GATEWAY_TOML
    return GATEWAY_TOML.replace(storage, f"{storage}cache_mb = {opts.cache_mb}\n")


def run_case(opts: Options, names: Sequence[str], tag: str) -> CaseResult:
    label = f"{len(names)} dest" + ("" if len(names) > 1 else f" ({names[0]})")
    cpus: list[int | None] = [opts.client_cpu]
    sandboxes = start_sandboxes(names, 1, cpus, opts.workdir, opts.source)
    try:
        urls = {n: f"http://127.0.0.1:{p.ports[n]}" for p in sandboxes for n in p.ports}
        toml = gateway_toml(opts) + destinations_toml(names, urls).replace("{", "{{").replace(
            "}", "}}"
        )
        stamp = f"{tag}-{int(time.time())}"
        wait_quiet(opts.quiet_wait)
        queueing, db = queue_phase(opts, names, toml, stamp, None)
        wait_quiet(opts.quiet_wait)
        draining, done = drain_phase(opts, names, db, sandboxes, None)
        if opts.trace:
            tq = opts.workdir / f"trace-{tag}-queue"
            _, tdb = queue_phase(opts, names, toml, stamp + "-t", tq)
            queueing.trace = trace_report(tq)
            td = opts.workdir / f"trace-{tag}-drain"
            drain_phase(opts, names, tdb, sandboxes, td)
            draining.trace = trace_report(td)
    finally:
        for proc in sandboxes:
            proc.server.stop()
    return CaseResult(label, list(names), opts.events, queueing, draining, done)


# -- report ------------------------------------------------------------------------------------


def table(results: Sequence[CaseResult]) -> str:
    head = (
        f"{'case':<16}{'phase':<10}{'events':>9}{'work/s':>9}{'seconds':>9}{'us CPU/item':>12}"
        f"{'idle MB':>9}"
        f"{'end MB':>8}{'peak MB':>9}{'target':>8}  verdict"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        for p in (r.queueing, r.draining):
            ok = "PASS" if p.peak_mb <= r.target_mb else "MISS"
            lines.append(
                f"{r.case:<16}{p.name:<10}{r.events:>9,}{fmt(p.rate):>9}{p.seconds:>9.1f}"
                f"{fmt(p.cpu_us_per_item, 1):>12}"
                f"{p.idle_mb:>9.1f}{p.end_mb:>8.1f}{p.peak_mb:>9.1f}{r.target_mb:>8.0f}  {ok}"
            )
    return "\n".join(lines)


def breakdown_lines(r: CaseResult) -> list[str]:
    lines = []
    for p in (r.queueing, r.draining):
        parts = ", ".join(f"{k} {v:.1f}" for k, v in p.smaps_at_high_mb.items())
        lines.append(f"  {r.case} {p.name}: at {p.smaps_rss_mb:.1f} MB RSS: {parts}")
    return lines


def trace_lines(r: CaseResult) -> list[str]:
    lines = []
    for p in (r.queueing, r.draining):
        t = p.trace
        if not t:
            continue
        lines.append(f"  {r.case} {p.name} under tracemalloc (extra run):")
        at = t.get("at_rss_peak")
        if at:
            m = at["malloc_mb"]
            lines.append(
                f"    at the RSS peak ({at['rss_mb']} MB, t={at['t']} s): Python-traced "
                f"{at['traced_mb']} MB (its own peak {at['traced_peak_mb']} MB); malloc arenas "
                f"{m.get('arena_bytes', '-')} MB of which free {m.get('free_in_arenas_bytes', '-')}"
                f" MB, mmapped blocks {m.get('mmapped_bytes', '-')} MB; SQLite's own "
                f"{at['sqlite_mb'].get('used_bytes', '-')} MB"
            )
        garbage = t.get("cyclic_garbage_at_end")
        if garbage:
            kinds = ", ".join(f"{g['type']} {g['count']:,}" for g in garbage["by_type"][:6])
            lines.append(
                f"    cyclic garbage at the end: {garbage['objects']:,} objects "
                f"({garbage['shallow_mb']} MB shallow): {kinds}"
            )
        if "growth_by_site" in t:
            lines.append(
                f"    traced since the server listened: {t['traced_peak_snapshot_mb']} MB still "
                "held at the last high; by allocation site:"
            )
            lines += [
                f"      {g['grew_mb']:+8.2f} MB (now {g['now_mb']:.2f} MB, {g['blocks']:,} blocks) "
                f"{g['site']}"
                for g in t["growth_by_site"]
                if abs(g["grew_mb"]) >= 0.05
            ]
            lines.append("    growth by innermost gateway line:")
            lines += [
                f"      {g['grew_mb']:+8.2f} MB (now {g['now_mb']:.2f} MB) {g['owner']}"
                for g in t["growth_by_gateway_line"]
                if abs(g["grew_mb"]) >= 0.05
            ]
    return lines


def figures(r: CaseResult) -> dict[str, Any]:
    doc = asdict(r)
    doc["pass"] = r.passed
    for key in ("queueing", "draining"):
        doc[key]["rate_per_s"] = getattr(r, key).rate
        doc[key]["cpu_us_per_item"] = getattr(r, key).cpu_us_per_item
    return doc


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/drain_rss.py",
        description="Peak RSS of the gateway while 100,000 queued events fill and drain.",
    )
    parser.add_argument("--events", type=int, default=EVENTS, help="events queued per case")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS:,} events")
    parser.add_argument("--only-meta", action="store_true", help="skip the all-destination case")
    parser.add_argument("--only-all", action="store_true", help="skip the Meta-alone case")
    parser.add_argument("--server-cpu", type=int, default=0, help="core of the gateway (-1: none)")
    parser.add_argument(
        "--client-cpu", type=int, default=1, help="core of the sandboxes and poster (-1: none)"
    )
    parser.add_argument(
        "--stall", type=float, default=60.0, help="fail when no delivery lands for S seconds"
    )
    parser.add_argument(
        "--cache-mb",
        type=int,
        metavar="MB",
        help="the gateway's [storage] cache_mb (SQLite page cache per connection; default: the "
        "gateway's own)",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="also run each phase under tracemalloc + mallinfo2 (extra runs) and print what grew",
    )
    add_quiet_arg(parser)
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--no-snapshot",
        action="store_true",
        help="run the work tree's gateway package instead of a copy taken at start",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.events = min(args.events, QUICK_EVENTS)
    return args


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] == "_traced":
        return traced_main(argv)
    args = parse_args(argv)
    if args.events < 1:
        print("--events must be at least 1", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="signalgate-drain-rss-"))
    source = ROOT if args.no_snapshot else snapshot_source(workdir)
    sys.path.insert(0, str(source))
    names = usable(registered(), sandbox=True)
    if not names:
        print("no usable destination", file=sys.stderr)
        return 2
    opts = Options(
        events=args.events,
        server_cpu=core_arg(args.server_cpu),
        client_cpu=core_arg(args.client_cpu),
        quiet_wait=args.quiet_wait,
        stall=args.stall,
        workdir=workdir,
        source=source,
        parts=event_template(int(time.time()), CLICK_IDS).split(ID_MARK),
        trace=args.trace,
        cache_mb=args.cache_mb,
    )
    import platform as host

    env = {
        "git_head": git_head(),
        "gateway_src": source_digest(source),
        "gateway_snapshot": source != ROOT,
        "python": host.python_version(),
        "cores": os.cpu_count(),
        "events": args.events,
        "destinations": names,
        "server_cpu": opts.server_cpu,
        "client_cpu": opts.client_cpu,
        "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX"),
        "cache_mb": args.cache_mb,
        "target_mb": TARGET_MB,
    }
    cases: list[list[str]] = []
    if not args.only_all and BASELINE in names:
        cases.append([BASELINE])
    if not args.only_meta and names != [BASELINE]:
        cases.append(names)
    print(
        f"signalgate drain RSS bench: {args.events:,} events queued then drained, cases "
        f"{[len(c) for c in cases]} destination(s); gateway on core {opts.server_cpu}, "
        f"sandboxes on core {opts.client_cpu}, Python {env['python']}, gateway code: HEAD "
        f"{env['git_head']}, sources {env['gateway_src']}",
        flush=True,
    )
    results: list[CaseResult] = []
    status = 0
    try:
        for case in cases:
            print(f"  {len(case)} destination(s) ...", flush=True)
            results.append(run_case(opts, case, f"n{len(case)}"))
    except RuntimeError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        status = 1
    finally:
        end_run(env, source, args.keep, workdir)
    print()
    print(table(results))
    print("\nRSS by mapping at the sampled high (MB):")
    for r in results:
        print("\n".join(breakdown_lines(r)))
    if args.trace:
        print()
        for r in results:
            print("\n".join(trace_lines(r)))
    verdict = {
        "target_mb": TARGET_MB,
        "events": args.events,
        "cases": {
            r.case: {
                "queueing_peak_mb": r.queueing.peak_mb,
                "draining_peak_mb": r.draining.peak_mb,
                "pass": r.passed,
            }
            for r in results
        },
    }
    print()
    for r in results:
        print(
            f"memory ({r.case}, {r.events:,} events): peak RSS queueing {r.queueing.peak_mb:.1f} "
            f"MB, draining {r.draining.peak_mb:.1f} MB (target <= {TARGET_MB:.0f} MB)  "
            f"{'PASS' if r.passed else 'MISS'}"
        )
    source_warnings(env)
    if args.json:
        write_json(
            args.json,
            {
                "environment": env,
                "results": [figures(r) for r in results],
                "verdict": verdict,
                "failed": bool(status),
            },
        )
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
