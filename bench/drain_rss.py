"""Memory while a deep outbox fills and drains (issue #13): peak RSS of the gateway process.

Run on demand (never in CI): ``.venv/bin/python bench/drain_rss.py [--quick] [--json out.json]``.

Each case (Meta alone, then every destination of ``bench/platforms.py``):

1. starts the case's sandboxes in a separate process (``bench/sandboxes.py``, pinned to
   ``--client-cpu``; they count what they accept and forget it);
2. **queueing**: ``signalgate run --no-delivery`` on a site with the case's destinations (each
   pointing at its sandbox), ``--events`` realistic Purchase events (``bench/benchload.py``'s)
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

Reading a process's memory from outside is procmem.py; the ``--trace`` child and its report are
memtrace.py; the sandbox processes are sandboxes.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from benchlib import (
    add_output_args,
    code_identity,
    core_arg,
    end_run,
    fmt,
    free_port,
    outbox_rows,
    proc_times,
    run_dirs,
    source_warnings,
    wait_quiet,
    wait_rows_done,
    write_json,
)
from benchload import API_KEY, event_bodies, post_bodies, template_parts
from benchservers import Server, write_gateway_config
from delivery import BASELINE, GATEWAY_TOML, port_of
from memtrace import final_snapshot, start_tracing, trace_report, traced_main
from platforms import (
    CLICK_IDS,
    add_quiet_arg,
    case_label,
    destinations_template,
    registered,
    usable,
)
from procmem import RssSampler, mb, status_kb
from sandboxes import SandboxProcess, sandbox_urls, start_sandboxes, tallies, tally_text

TARGET_MB = 150.0
"""Issue #13: peak RSS while 100,000 queued events drain."""
EVENTS = 100_000
QUICK_EVENTS = 10_000
SERIES_POINTS = 200
"""RSS samples kept per phase in the JSON output (evenly thinned)."""
T = TypeVar("T")


# -- the gateway's RSS over a phase ------------------------------------------------------------


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


# -- one case ----------------------------------------------------------------------------------


def traced_cmd(outdir: Path, gateway_args: Sequence[str]) -> list[str]:
    """The command running the gateway under tracemalloc: this file's ``_traced`` mode
    (`memtrace.traced_main`), writing into `outdir`."""
    outdir.mkdir(parents=True, exist_ok=True)
    script = str(Path(__file__).resolve())
    return [sys.executable, script, "_traced", str(outdir), "--", *gateway_args]


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


def sampled_phase(
    name: str,
    gateway_args: list[str],
    port: int,
    opts: Options,
    trace_dir: Path | None,
    work: Callable[[Server], tuple[int, T]],
) -> tuple[Phase, T]:
    """Start the gateway (``python <gateway_args>``, under tracemalloc into `trace_dir` when
    given) as ``gateway-<name>`` and sample its RSS from the spawn while `work` runs against it;
    then read its peak (VmHWM) and CPU before the graceful stop. `work` returns the work done
    (events or deliveries) and a result of its own, returned with the phase."""
    cmd = (
        [sys.executable, *gateway_args]
        if trace_dir is None
        else traced_cmd(trace_dir, gateway_args)
    )
    spawn = time.monotonic()
    server = start_server(f"gateway-{name}", cmd, port, opts, trace_dir is not None)
    sampler = RssSampler(server.proc.pid)
    sampler.start = spawn
    try:
        if trace_dir is not None:
            start_tracing(trace_dir)
        idle = status_kb(server.proc.pid).get("VmRSS", 0)
        done, result = work(server)
        seconds = time.monotonic() - spawn
        hwm = status_kb(server.proc.pid).get("VmHWM", 0)
        cpu = proc_times(server.proc.pid)[1]
        if trace_dir is not None:
            final_snapshot(trace_dir)
    finally:
        sampler.stop()
        server.stop()
    phase = phase_of(name, sampler, hwm, seconds, done, idle)
    phase.cpu_s = cpu
    return phase, result


def queue_phase(
    opts: Options, names: Sequence[str], toml: str, tag: str, trace_dir: Path | None
) -> tuple[Phase, Path]:
    """Start the gateway without delivery, post `opts.events` events; return the phase and
    the outbox path (its config beside it)."""
    port = free_port()
    config, db = write_gateway_config(toml, opts.workdir, port, key=API_KEY)
    args = ["-m", "gateway", "run", "--config", str(config), "--no-delivery"]

    def post(server: Server) -> tuple[int, int]:
        bodies = event_bodies(opts.parts, tag, opts.events)
        accepted = asyncio.run(post_bodies(server.port, bodies, "queueing", patience=120))
        return accepted, accepted

    phase, accepted = sampled_phase("queueing", args, port, opts, trace_dir, post)
    rows = outbox_rows(db, states=True)
    want = opts.events * len(names)
    if accepted != opts.events or rows["events"] != opts.events or rows["deliveries"] != want:
        raise RuntimeError(
            f"queueing: {accepted} of {opts.events} events accepted, outbox holds {rows}, "
            f"expected {want} delivery rows"
        )
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
    base = sum(t.accepted for t in tallies(sandboxes).values())

    def drain(server: Server) -> tuple[int, dict[str, int]]:
        delivered = wait_delivered(opts, server, sandboxes, base + want) - base
        return delivered, wait_rows_done(db, want, opts.stall)

    phase, done = sampled_phase("draining", args, port_of(config), opts, trace_dir, drain)
    if done.get("deliveries_done", 0) != want:
        raise RuntimeError(f"draining: outbox holds {done}, expected {want} rows done")
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


def gateway_toml(opts: Options) -> str:
    """``delivery.py``'s gateway config, with ``--cache-mb`` when given."""
    if opts.cache_mb is None:
        return GATEWAY_TOML
    storage = 'synchronous = "NORMAL"\n'
    assert storage in GATEWAY_TOML
    return GATEWAY_TOML.replace(storage, f"{storage}cache_mb = {opts.cache_mb}\n")


def run_case(opts: Options, names: Sequence[str], tag: str) -> CaseResult:
    label = case_label(names)
    cpus: list[int | None] = [opts.client_cpu]
    sandboxes = start_sandboxes(names, 1, cpus, opts.workdir, opts.source)
    try:
        urls = sandbox_urls(sandboxes)
        toml = gateway_toml(opts) + destinations_template(names, urls)
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
    add_output_args(parser)
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
    workdir, source = run_dirs("signalgate-drain-rss-", args.no_snapshot)
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
        parts=template_parts(CLICK_IDS),
        trace=args.trace,
        cache_mb=args.cache_mb,
    )
    env = {
        **code_identity(source),
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
