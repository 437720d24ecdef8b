"""Scale benchmark: CPU seconds per acknowledged event, 1 and 2 workers, SQLite and PostgreSQL.

Run on demand (never in CI): ``.venv/bin/python bench/scale.py [--quick] [--json out.json]``.

Issue #13 measures scaling as cost, not as wall-clock speed-up (the machines have 2 cores): for
every combination of store (SQLite, PostgreSQL), workers (``signalgate run --workers 1`` and
``2``) and batch size (1 and 100 events per request) — 8 cases in the same run — a fresh
``signalgate run --no-delivery`` is driven by the same load generator as ``ingest.py`` (wrk or
the Python client, on ``--client-cpu``) with the same realistic ``Purchase`` events, and the
CPU time (user + system, from /proc) of the gateway's whole process tree (the supervisor and
its workers, pinned together to ``--server-cpu``) over the measurement is divided by the
events answered 202. PostgreSQL's own processes (the postmaster and every backend, the ones
that exited included) are counted the same way in a column of their own. The PostgreSQL server
is a throwaway one the bench starts (tests/pgcluster.py, the tests' harness), on
``--pg-cpu`` (default: the load generator's core, so the gateway keeps its core to itself),
with durable commits unless ``--pg-no-fsync``; each PostgreSQL case gets a fresh database.

After each case the store is counted (the SQLite file read-only, the PostgreSQL database over
a connection): it must hold every event answered 202 and one delivery row each, so a gateway
that dropped work cannot look cheap. Verdicts, on the median of the rounds:

* 2 workers cost at most 1.15x the CPU per event of 1 worker on the same store;
* PostgreSQL costs the gateway at most 1.5x its CPU per event on SQLite.

A miss is followed by a py-spy profile (``--subprocesses``: supervisor and workers) of the
case that costs more, summarised per event, unless ``--no-profile``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ingest
from benchlib import (
    add_core_args,
    add_output_args,
    add_quiet_wait_arg,
    add_timing_args,
    banner,
    check_answers,
    core_arg,
    end_run,
    environment,
    fmt,
    free_port,
    parse_bench_args,
    run_dirs,
    source_warnings,
    wait_quiet,
    write_json,
)
from benchload import API_KEY, Settings, resolve_loadgen, run_load, template_parts
from benchprofile import SPY_RATE, perf_record_cmd, perf_summary, py_spy, start_sampler
from benchservers import (
    DELIVERY_TOML,
    META_TOML,
    SERVER_TOML,
    SITE_TOML,
    SQLITE_STORAGE,
    Server,
    write_gateway_config,
)
from benchstores import LOCK_SAMPLE_HZ, Postgres, check_rows, postgres_server, sqlite_rows
from proctree import place_workers, spent_during, spy_summary, thread_names, wait_tree_idle

TARGET_WORKERS_RATIO = 1.15
"""Issue #13: 2 workers cost at most this many times the CPU per event of 1 (same store)."""
TARGET_POSTGRES_RATIO = 1.5
"""Issue #13: the gateway on PostgreSQL costs at most this many times its CPU per event on
SQLite (same workers and batch)."""
BUSY_OTHER_PCT = 20.0
"""Cases during which other processes used more CPU than this (% of a core) are flagged."""
CONNECTIONS = 128
"""The load generator's concurrent connections (default of --connections): 64 per worker in
the 2-worker cases, so every worker is as busy as the single one."""
READY_TIMEOUT = 90.0
"""Seconds a gateway (all its workers, PostgreSQL migrations included) has to start."""
STORES = ("sqlite", "postgres")
PLACEMENTS = ("auto", "spread", "stacked")
"""Where several workers run (`worker_cores`): ``spread`` gives each a core of its own from
``--server-cpu`` on (the load generator, light, shares one), ``stacked`` puts them all on
``--server-cpu``, and ``auto`` (the default) spreads them over every core but the database
server's: on SQLite (no server) that is ``spread``; on PostgreSQL pinned to the other of two
cores it is ``stacked``. On a 2-core machine some placement must share a core, and a worker
time-slicing a core with another busy process pays for it in switches and cold caches, which
is not the contention the workers target is about; ``auto`` keeps the database server apart,
as it is on its own machine in production."""
COOKIE_SECRET = "bench-cookie-secret-0123456789abcdef"  # noqa: S105 - a throwaway bench key

GATEWAY_TOML = (
    SERVER_TOML
    + 'cookie_secret = "{cookie}"\n'
    + "\n[storage]\n{storage}\n"
    + DELIVERY_TOML
    + SITE_TOML
    + META_TOML
)

POSTGRES_STORAGE = """backend = "postgres"
dsn = "{dsn}"
pool_min = 2
pool_max = 10
"""


# -- cases -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    store: str
    workers: int
    batch: int

    @property
    def label(self) -> str:
        size = "1 event/req" if self.batch == 1 else f"{self.batch} events/req"
        return f"{self.store}, {self.workers} worker{'s' if self.workers > 1 else ''}, {size}"

    @property
    def tag(self) -> str:
        return f"{self.store[0]}{self.workers}b{self.batch}"


@dataclass
class Result:
    """One measured run of a case."""

    store: str
    workers: int
    batch: int
    round: int
    duration_s: float
    acknowledged_events: int
    events_per_s: float
    p50_ms: float
    p99_ms: float
    gateway_cpu_s: float
    gateway_us_per_event: float
    postgres_cpu_s: float | None
    postgres_us_per_event: float | None
    gateway_processes: int
    client_cpu_pct: float
    other_cpu_pct: float
    """CPU of everything but the gateway, PostgreSQL and the load generator (% of a core)."""
    rows: dict[str, int]
    expected_rows: int
    switches_per_1000: tuple[float, float] = (0.0, 0.0)
    """The gateway's context switches per 1,000 events (voluntary, involuntary)."""
    postgres_waits: dict[str, float] | None = None
    """On PostgreSQL: backends of the case's database per sample, on average, waiting on a
    lock, on an LWLock, and active (benchstores.LockWaits), while measured."""

    @property
    def case(self) -> Case:
        return Case(self.store, self.workers, self.batch)


def worker_cores(
    placement: str, server_cpu: int | None, cpus: int, db_core: int | None
) -> tuple[int, ...]:
    """The cores the workers of a case are spread over, from `server_cpu` on (see
    PLACEMENTS); () leaves them where the supervisor is (``stacked``, or nothing pinned)."""
    if server_cpu is None or placement == "stacked":
        return ()
    order = [(server_cpu + i) % cpus for i in range(cpus)]
    if placement == "auto" and db_core is not None:
        order = [c for c in order if c != db_core] or [server_cpu]
    return tuple(order) if len(order) > 1 else ()


def case_cores(
    case: Case, placement: str, server_cpu: int | None, db_core: int | None
) -> tuple[int, ...]:
    """`worker_cores` of `case` on this machine (`db_core`: PostgreSQL's core, if pinned)."""
    db = db_core if case.store == "postgres" else None
    return worker_cores(placement, server_cpu, os.cpu_count() or 1, db)


class Gateway:
    """A running `signalgate run --workers N --no-delivery` of a case, with its store."""

    def __init__(
        self,
        case: Case,
        settings: Settings,
        source: Path,
        pg: Postgres | None,
        cores: Sequence[int] = (),
    ):
        self.case = case
        self.pg = pg
        self.database = ""
        port = free_port()
        if case.store == "postgres":
            assert pg is not None
            self.database, dsn = pg.new_database(case.tag)
            storage = POSTGRES_STORAGE.replace("{dsn}", dsn)
        else:
            storage = SQLITE_STORAGE  # its {db} is filled in by write_gateway_config
        config, self.db = write_gateway_config(
            GATEWAY_TOML.replace("{storage}", storage),
            settings.workdir,
            port,
            key=API_KEY,
            pixel=ingest.PIXEL_ID,
            api_base="http://127.0.0.1:9",
            cookie=COOKIE_SECRET,
        )
        cmd = [sys.executable, "-m", "gateway", "run", "--config", str(config), "--no-delivery"]
        cmd += ["--workers", str(case.workers)]
        self.server = Server("gateway", cmd, settings.server_cpu, port, settings.workdir, source)
        self._wait_all_workers()
        if case.workers > 1 and len(cores) > 1:
            place_workers(self.server.proc.pid, cores)

    def _wait_all_workers(self) -> None:
        """The port answers once one worker listens; wait for the ready line (printed by the
        supervisor once every worker serves)."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if "signalgate listening on" in self.server.log_tail(200):
                return
            if self.server.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.server.stop()
        raise RuntimeError(f"{self.case.label}: not ready:\n{self.server.log_tail()}")

    @property
    def pid(self) -> int:
        return self.server.proc.pid

    def stop(self) -> None:
        self.server.stop()

    def rows(self) -> dict[str, int]:
        if self.pg is not None and self.database:
            return self.pg.rows(self.database)
        return sqlite_rows(self.db)

    def drop(self) -> None:
        if self.pg is not None and self.database:
            self.pg.drop(self.database)


def run_case(
    case: Case,
    settings: Settings,
    source: Path,
    pg: Postgres | None,
    rnd: int,
    quiet_wait: float,
    placement: str = "auto",
    db_core: int | None = None,
) -> Result:
    """Start the case's gateway, warm it up, measure it, stop it, count its store."""
    wait_quiet(quiet_wait)
    cores = case_cores(case, placement, settings.server_cpu, db_core)
    gateway = Gateway(case, settings, source, pg, cores)
    try:
        prefix = f"{settings.nonce}r{rnd}{case.tag}"
        port = gateway.server.port
        try:
            warm = run_load(settings, port, case.batch, settings.warmup, prefix + "w")
            check_answers(f"{case.label} warm-up", warm, 202)
            wait_tree_idle(gateway.pid)
            with ExitStack() as stack:
                waits = None
                if pg is not None and gateway.database:
                    waits = stack.enter_context(pg.lock_waits(gateway.database))
                load, spent = spent_during(
                    gateway.pid,
                    pg.server.pid if pg is not None and case.store == "postgres" else None,
                    lambda: run_load(settings, port, case.batch, settings.duration, prefix + "m"),
                )
            check_answers(case.label, load, 202)
        finally:
            gateway.stop()  # graceful: what was accepted is committed before it exits
        rows = gateway.rows()
    finally:
        gateway.drop()
    accepted = (warm.ok + load.ok) * case.batch
    check_rows(case.label, rows, accepted, 2 * settings.connections * case.batch)
    events = load.ok * case.batch
    d = load.duration_s
    pg_cpu = spent.postgres if case.store == "postgres" else None
    other = spent.machine - spent.gateway - spent.postgres - load.client_cpu_s
    return Result(
        store=case.store,
        workers=case.workers,
        batch=case.batch,
        round=rnd,
        duration_s=round(d, 3),
        acknowledged_events=events,
        events_per_s=events / d,
        p50_ms=load.p50_ms,
        p99_ms=load.p99_ms,
        gateway_cpu_s=spent.gateway,
        gateway_us_per_event=1e6 * spent.gateway / events,
        postgres_cpu_s=pg_cpu,
        postgres_us_per_event=None if pg_cpu is None else 1e6 * pg_cpu / events,
        gateway_processes=spent.processes,
        client_cpu_pct=100 * load.client_cpu_s / d,
        other_cpu_pct=100 * max(0.0, other) / d,
        rows=rows,
        expected_rows=accepted,
        switches_per_1000=(
            1000 * spent.switches[0] / max(1, events),
            1000 * spent.switches[1] / max(1, events),
        ),
        postgres_waits=None if waits is None else waits.mean(),
    )


# -- verdicts ----------------------------------------------------------------------------------


def median_of(results: Sequence[Result], case: Case) -> Result | None:
    """The run of `case` with the median gateway CPU per event (the lower of an even count)."""
    runs = sorted(
        (r for r in results if r.case == case),
        key=lambda r: r.gateway_us_per_event,
    )
    return runs[(len(runs) - 1) // 2] if runs else None


def verdicts(results: Sequence[Result], cases: Sequence[Case]) -> list[dict[str, Any]]:
    """Each target compared on the median runs: [{what, cheap, dear, ratio, target, pass}]."""
    out: list[dict[str, Any]] = []
    medians = {c: m for c in cases if (m := median_of(results, c)) is not None}

    def compare(kind: str, base: Case, other: Case, target: float) -> None:
        if base in medians and other in medians:
            ratio = medians[other].gateway_us_per_event / medians[base].gateway_us_per_event
            out.append(
                {
                    "kind": kind,
                    "base": asdict(base),
                    "other": asdict(other),
                    "base_us_per_event": medians[base].gateway_us_per_event,
                    "other_us_per_event": medians[other].gateway_us_per_event,
                    "ratio": ratio,
                    "target_ratio": target,
                    "pass": ratio <= target,
                }
            )

    for case in cases:
        if case.workers > 1:
            compare("workers", Case(case.store, 1, case.batch), case, TARGET_WORKERS_RATIO)
    for case in cases:
        if case.store == "postgres":
            compare(
                "postgres", Case("sqlite", case.workers, case.batch), case, TARGET_POSTGRES_RATIO
            )
    return out


def verdict_line(v: dict[str, Any]) -> str:
    other = Case(**v["other"])
    if v["kind"] == "workers":
        what = f"{other.store}, {other.batch}/req: {other.workers} workers vs 1"
    else:
        what = f"{other.workers}w, {other.batch}/req: postgres vs sqlite"
    return (
        f"{what:<36} {v['other_us_per_event']:8.1f} vs {v['base_us_per_event']:8.1f} us/event"
        f" = x{v['ratio']:.2f} (target <= x{v['target_ratio']:.2f})"
        f"  {'PASS' if v['pass'] else 'MISS'}"
    )


# -- report ------------------------------------------------------------------------------------


def table(results: Sequence[Result]) -> str:
    head = (
        f"{'case':<36}{'events/s':>10}{'gw us/ev':>10}{'pg us/ev':>10}{'ev/s/core':>11}"
        f"{'p50 ms':>10}{'p99 ms':>10}{'procs':>6}{'gen CPU':>8}{'other':>7}  store rows / acked"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        case = r.case
        pg = "-" if r.postgres_us_per_event is None else f"{r.postgres_us_per_event:.1f}"
        flag = "  !" if r.other_cpu_pct > BUSY_OTHER_PCT else ""
        lines.append(
            f"{case.label:<36}{fmt(r.events_per_s):>10}{r.gateway_us_per_event:>10.1f}{pg:>10}"
            f"{fmt(1e6 / r.gateway_us_per_event):>11}{fmt(r.p50_ms, 1):>10}{fmt(r.p99_ms, 1):>10}"
            f"{r.gateway_processes:>6}{fmt(r.client_cpu_pct):>7}%{fmt(r.other_cpu_pct):>6}%"
            f"  {r.rows['events']:,} / {r.expected_rows:,}{flag}"
        )
    lines.append(
        "gw us/ev: CPU (user + system) of the gateway's processes per event answered 202;"
        " pg us/ev: PostgreSQL's processes per event; ev/s/core = 1e6 / gw us/ev"
    )
    lines.append(
        "the gateway's context switches per 1,000 events, voluntary (blocked: the loop waited"
        " for work) / involuntary (the scheduler gave its core to another process):"
    )
    for r in results:
        v, i = r.switches_per_1000
        lines.append(f"  {r.case.label:<34} {v:8.1f} / {i:8.1f}")
    waited = [r for r in results if r.postgres_waits is not None]
    if waited:
        lines.append(
            f"PostgreSQL backends of the case, on average over {LOCK_SAMPLE_HZ} samples a second:"
            " waiting on a lock (rows, transactions) / on an LWLock (buffers, WAL) / active"
        )
        for r in waited:
            w = r.postgres_waits or {}
            lines.append(
                f"  {r.case.label:<34} {w['lock']:6.2f} / {w['lwlock']:6.2f} / {w['active']:6.2f}"
                f"  ({int(w['samples'])} samples)"
            )
    if any(r.other_cpu_pct > BUSY_OTHER_PCT for r in results):
        lines.append(
            f"! other processes used more than {BUSY_OTHER_PCT:g}% of a core during this run: the"
            " machine was busy (cache and scheduler noise inflate the CPU per event)"
        )
    return "\n".join(lines)


def capacity(results: Sequence[Result], cases: Sequence[Case]) -> list[dict[str, Any]]:
    """Per case (median run): events/s per core of the gateway (1 / CPU s per event) and, on
    PostgreSQL, per core of gateway + database together."""
    rows = []
    for case in cases:
        m = median_of(results, case)
        if m is None:
            continue
        both = m.gateway_us_per_event + (m.postgres_us_per_event or 0.0)
        rows.append(
            {
                **asdict(case),
                "gateway_us_per_event": m.gateway_us_per_event,
                "postgres_us_per_event": m.postgres_us_per_event,
                "events_per_s_per_gateway_core": 1e6 / m.gateway_us_per_event,
                "events_per_s_per_core_with_postgres": 1e6 / both,
            }
        )
    return rows


# -- profile of a miss -------------------------------------------------------------------------


def profile_case(
    case: Case,
    settings: Settings,
    source: Path,
    pg: Postgres | None,
    prefix: Path,
    cores: Sequence[int] = (),
) -> dict[str, Any]:
    """A separate run of `case` under py-spy (every process of the gateway, non-blocking) and,
    when ``perf`` is on PATH and the gateway is pinned, ``perf record`` of its core (native
    code: the event loop, asyncpg's and SQLite's C parts, the kernel); return the hotspots."""
    seconds = max(3, round(settings.duration))
    raw = prefix.with_name(f"{prefix.name}.{case.tag}.txt")
    perf = shutil.which("perf") if settings.server_cpu is not None else None
    perf_data = raw.with_suffix(".perf.data")
    wait_quiet(60)
    gateway = Gateway(case, settings, source, pg, cores)
    try:
        port = gateway.server.port
        try:
            tag = f"{settings.nonce}p{case.tag}"
            run_load(settings, port, case.batch, settings.warmup, tag + "w")
            wait_tree_idle(gateway.pid)
            cmd = [py_spy(), "record", "--pid", str(gateway.pid), "--duration", str(seconds)]
            cmd += ["--rate", str(SPY_RATE), "--nonblocking", "--threads", "--subprocesses"]
            cmd += ["--format", "raw", "--output", str(raw)]
            tools = [cmd]
            if perf:
                tools.append(perf_record_cmd(perf, settings.server_cpu, perf_data, seconds))
            running = [start_sampler(tool, settings.client_cpu) for tool in tools]
            time.sleep(0.5)
            load, spent = spent_during(
                gateway.pid,
                None,
                lambda: run_load(settings, port, case.batch, seconds, tag + "m"),
            )
            for tool in running:
                output, _ = tool.communicate(timeout=seconds + 60)
                if tool.returncode != 0:
                    raise RuntimeError(f"{tool.args[0]} failed: {output[-1000:]}")
        finally:
            gateway.stop()
    finally:
        gateway.drop()
    us_per_event = 1e6 * spent.gateway / max(1, load.ok * case.batch)
    report = {"case": asdict(case), "raw": str(raw), **spy_summary(raw, us_per_event)}
    if perf:
        report["perf"] = perf_summary(perf, perf_data, thread_names(raw))
    return report


def profile_lines(report: dict[str, Any]) -> list[str]:
    case = Case(**report["case"])
    lines = [
        f"py-spy profile of {case.label} ({SPY_RATE} Hz per thread, non-blocking, every process;"
        f" {report['samples']:,} samples; {report['measured_us_per_event']:.1f} us of CPU per"
        f" event measured meanwhile, split by sample share; raw: {report['raw']})",
        "  by thread:",
    ]
    row = "    {1:5.1f}%  {2:8.2f} us/event  {0}"
    lines += [row.format(*item) for item in report["threads"]]
    lines.append("  by innermost gateway function (complete stacks; library time charged to it):")
    lines += [row.format(*item) for item in report["owner"]]
    lines.append("  by leaf function (self time):")
    lines += [row.format(*item) for item in report["self"]]
    if "difference" in report:
        base = Case(**report["difference"]["base"])
        lines.append(
            f"  more per event than {base.label}, by innermost gateway function"
            " (cheaper, dearer, difference; us/event):"
        )
        lines += [
            f"    {c:8.2f} {d:8.2f} {x:+8.2f}  {k}" for k, c, d, x in report["difference"]["rows"]
        ]
    if "perf" in report:
        perf = report["perf"]
        own = sum(p for _, p in perf["server_by_thread"])
        lines.append(
            "  perf (cpu-clock) of the gateway's core, % of its samples: the gateway's threads"
            f" {own:.0f}%; by command:"
        )
        lines += [f"    {p:5.1f}%  {k}" for k, p in perf["core_by_process"][:6]]
        lines.append("  perf, the gateway's threads by library (native code py-spy cannot see):")
        lines += [f"    {p:5.1f}%  {k}" for k, p in perf["server_by_library"][:8]]
        lines.append("  perf, the gateway's threads by symbol:")
        lines += [f"    {p:5.1f}%  {k}" for k, p in perf["server_by_symbol"]]
    return lines


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/scale.py",
        description="CPU seconds per acknowledged event: 1 and 2 workers, SQLite and PostgreSQL.",
    )
    add_timing_args(parser)
    # 128, not the other benches' 64: each of 2 workers then has the 64 concurrent connections
    # that keep one worker's core busy. With 64 in all, 2 workers each idle a quarter of the
    # time and pay more event-loop turns and commits per event (x1.17 for SQLite single events,
    # against x1.11 with 128, in runs of 2026-12-06) than a busy worker does.
    parser.set_defaults(connections=CONNECTIONS)
    parser.add_argument("--batches", default="1,100", help="events per request, comma-separated")
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--stores", default=",".join(STORES), help="sqlite,postgres or one")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    add_core_args(parser, "core of the load generator")
    parser.add_argument(
        "--pg-cpu",
        type=int,
        default=None,
        help="core of PostgreSQL (default: the load generator's; -1: none)",
    )
    parser.add_argument(
        "--pg-no-fsync",
        action="store_true",
        help="PostgreSQL without durable commits (fsync, synchronous_commit off)",
    )
    add_quiet_wait_arg(parser)
    parser.add_argument(
        "--no-profile", action="store_true", help="no py-spy profile of the cases that miss"
    )
    parser.add_argument(
        "--profile-always",
        action="store_true",
        help="profile the cases of every target as if it had missed (what a second worker costs)",
    )
    parser.add_argument(
        "--placement",
        choices=PLACEMENTS,
        default="auto",
        help="several workers each on a core of its own from --server-cpu on (spread), all on"
        " --server-cpu (stacked), or spread over every core but the database server's (auto)",
    )
    add_output_args(parser)
    args = parse_bench_args(parser, argv)
    try:
        args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
        args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        parser.error("--batches and --workers take comma-separated integers")
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if not set(args.stores) <= set(STORES) or not args.stores:
        parser.error(f"--stores: choose from {', '.join(STORES)}")
    if min(args.workers, default=0) < 1 or min(args.batches, default=0) < 1:
        parser.error("--batches and --workers must be positive")
    return args


def all_cases(args: argparse.Namespace) -> list[Case]:
    return [Case(s, w, b) for s in args.stores for w in args.workers for b in args.batches]


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    loadgen = resolve_loadgen(args.loadgen)
    if loadgen is None:
        return 2
    workdir, source = run_dirs("signalgate-scale-", args.no_snapshot)
    settings = Settings.from_args(
        args,
        workdir,
        loadgen=loadgen,
        template_parts=template_parts(),
    )
    cases = all_cases(args)
    env = environment(source, settings, loadgen)
    env["cases"] = [asdict(c) for c in cases]
    env["placement"] = args.placement
    results: list[Result] = []
    reports: list[dict[str, Any]] = []
    v: list[dict[str, Any]] = []
    status = 0
    with ExitStack() as stack:
        try:
            pg: Postgres | None = None
            pg_cpu: int | None = None
            if "postgres" in args.stores:
                pg_cpu = settings.client_cpu if args.pg_cpu is None else core_arg(args.pg_cpu)
                pg = stack.enter_context(postgres_server(not args.pg_no_fsync, pg_cpu))
                env["postgres"] = pg.environment()
            banner("scale", "CPU per event, --no-delivery", env, settings, "load generator")
            print(f"  several workers placed: {args.placement}", flush=True)
            if pg is not None:
                print(f"  PostgreSQL: {env['postgres']}", flush=True)
            for rnd in range(args.rounds):
                for case in cases:
                    print(f"  round {rnd + 1}: {case.label} ...", flush=True)
                    results.append(
                        run_case(
                            case,
                            settings,
                            source,
                            pg,
                            rnd,
                            args.quiet_wait,
                            args.placement,
                            pg_cpu,
                        )
                    )
            v = verdicts(results, cases)
            if not args.no_profile:
                asked = [{**x, "pass": False} for x in v] if args.profile_always else v
                reports = profile_misses(
                    asked, settings, source, pg, workdir, args.placement, pg_cpu
                )
        except RuntimeError as exc:
            print(f"\nFAILED: {exc}", file=sys.stderr)
            status = 1
    end_run(env, source, args.keep, workdir)
    print()
    print(table(results))
    print()
    for line in map(verdict_line, v):
        print(line)
    for report in reports:
        print()
        print("\n".join(profile_lines(report)))
    source_warnings(env)
    if args.json:
        write_json(
            args.json,
            {
                "environment": env,
                "results": [asdict(r) for r in results],
                "medians": [asdict(m) for c in cases if (m := median_of(results, c)) is not None],
                "capacity": capacity(results, cases),
                "verdicts": v,
                "profiles": reports,
                "failed": bool(status),
            },
        )
    return status


def profile_misses(
    v: Sequence[dict[str, Any]],
    settings: Settings,
    source: Path,
    pg: Postgres | None,
    workdir: Path,
    placement: str = "auto",
    db_core: int | None = None,
) -> list[dict[str, Any]]:
    """Profile both cases of every missed target (each case once), their workers placed as
    in the measurement; the dearer case's report gets `difference` rows against the cheaper
    one's (`profile_difference`)."""
    missed = [(Case(**x["base"]), Case(**x["other"])) for x in v if not x["pass"]]
    misses = list(dict.fromkeys(c for pair in missed for c in pair))
    if not misses:
        return []
    try:
        py_spy()
    except RuntimeError:
        print("  targets missed; no profile: py-spy is not installed (pip install py-spy)")
        return []
    prefix = workdir / "scale-profile"  # raw files: kept with --keep
    reports = []
    for case in misses:
        print(f"  profiling {case.label} (missed a target) ...", flush=True)
        try:
            cores = case_cores(case, placement, settings.server_cpu, db_core)
            reports.append(profile_case(case, settings, source, pg, prefix, cores))
        except RuntimeError as exc:  # the measurements stand; only the explanation is missing
            print(f"  profile of {case.label} failed: {exc}", file=sys.stderr)
    by_case = {Case(**r["case"]): r for r in reports}
    for base, other in missed:
        if base in by_case and other in by_case:
            by_case[other]["difference"] = profile_difference(by_case[base], by_case[other])
    return reports


def profile_difference(
    base: dict[str, Any], other: dict[str, Any], top: int = 15
) -> dict[str, Any]:
    """What the dearer case spends more per event than the cheaper one, by innermost gateway
    function: [(function, cheaper us/event, dearer us/event, difference)], largest first."""
    cheap, dear = base["owner_us"], other["owner_us"]
    rows = [
        (k, round(cheap.get(k, 0.0), 2), round(dear.get(k, 0.0), 2)) for k in set(cheap) | set(dear)
    ]
    rows.sort(key=lambda r: r[2] - r[1], reverse=True)
    return {
        "base": base["case"],
        "rows": [(k, c, d, round(d - c, 2)) for k, c, d in rows[:top]],
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
