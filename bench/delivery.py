"""Aggregate delivery benchmark: one gateway core delivering a full outbox to every sandbox.

Run on demand (never in CI): ``.venv/bin/python bench/delivery.py [--quick] [--json out.json]``.

Each case:

1. starts the sandboxes of the case's platforms (``bench/platforms.py``) in a separate process
   pinned to ``--client-cpu`` (one aiohttp app per sandbox, each on its own port, all on one
   event loop; ``--sandbox-procs K`` spreads them over K processes and ``--sandbox-cpus`` over
   more cores on a bigger machine). The sandboxes validate exactly as in the tests; a counting
   middleware tallies what each accepted and forgets the recorded events so memory stays flat;
2. fills the outbox through the gateway's own ingest: ``signalgate run --no-delivery`` on a site
   with the case's destinations (each pointing at its sandbox), ``--events`` Purchase events
   posted 100 per request, then a graceful stop; the outbox must hold one pending delivery row
   per event and destination;
3. waits for an idle machine, starts ``signalgate run`` with delivery workers on the same config
   and outbox, pinned to ``--server-cpu``, and polls the sandboxes until every event has reached
   every platform (or nothing moves for ``--stall`` seconds);
4. checks that each platform accepted every event exactly once and rejected none, and that the
   outbox marks every delivery row done.

deliveries/s = events x destinations / (last acceptance at any sandbox - first request at any
sandbox): the first request arrives within milliseconds of the workers' start, so process
start-up is left out (it is reported separately). The baseline in the same run is the same with
Meta alone; the issue's target is >= 10,000 deliveries/s with every destination. The CPU of the
gateway process and of each sandbox process over the delivery window says which side limits
the rate: a sandbox process near 100% means the sandboxes' own validation is the bottleneck and
the figure is a floor for the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchlib import (
    add_output_args,
    code_identity,
    core_arg,
    core_times,
    end_run,
    fmt,
    outbox_rows,
    proc_times,
    run_dirs,
    source_warnings,
    wait_quiet,
    wait_rows_done,
    write_json,
)
from benchload import API_KEY, event_bodies, post_bodies, template_parts
from benchprofile import hotspots, profile_row, start_py_spy
from benchservers import (
    DELIVERY_TOML,
    SERVER_TOML,
    SITE_TOML,
    SQLITE_TOML,
    Server,
    start_gateway_config,
)
from platforms import (
    CLICK_IDS,
    add_quiet_arg,
    case_label,
    destinations_template,
    registered,
    usable,
)
from sandboxes import SandboxProcess, sandbox_urls, start_sandboxes, tallies, tally_text

TARGET_DELIVERIES = 10_000.0
"""Issue #11: deliveries per second from one gateway core to every platform's sandbox."""
BASELINE = "meta"
SANDBOX_BUSY_PCT = 90.0
"""A sandbox process above this CPU share limited the rate (reported as sandbox-bound)."""

GATEWAY_TOML = (
    SERVER_TOML
    + SQLITE_TOML
    + DELIVERY_TOML
    + """# rows are due at once: the merge window only delays, and the outbox is filled before the
# workers start anyway
merge_seconds = 0.0
"""
    + SITE_TOML
)


# -- filling the outbox ------------------------------------------------------------------------


# -- one case ----------------------------------------------------------------------------------


@dataclass
class Options:
    events: int
    sandbox_procs: int
    sandbox_cpus: list[int | None]
    server_cpu: int | None
    quiet_wait: float
    stall: float
    timeout: float
    workdir: Path
    source: Path
    parts: list[str]
    profile: str | None = None
    """Path prefix: sample the delivering gateway with py-spy (an extra, unreported run)."""


@dataclass
class Result:
    """One delivery run: `events` to each of `destinations`."""

    case: str
    destinations: list[str]
    events: int
    deliveries: int
    seconds: float
    """First request at any sandbox to the last acceptance at any sandbox."""
    deliveries_per_s: float
    seconds_from_spawn: float
    """From starting the gateway process (imports, store open) to the last acceptance."""
    gateway_cpu_pct: float
    server_core_busy_pct: float
    sandbox_cpu_pct: list[float]
    other_cpu_pct: float
    fill_events_per_s: float
    cpu_window_s: float
    """The CPU columns cover this window: it brackets the delivery (poll to poll)."""
    cpu_window_complete: bool
    """False when deliveries had begun before the first poll (the CPU window starts late)."""
    gateway_us_per_delivery: float
    """Gateway process CPU per delivery (lease, decode, map, send, classify, mark done)."""
    sandbox_us_per_delivery: float
    """Sandbox processes' CPU per delivery (HTTP, JSON, validation, answer)."""
    per_platform: dict[str, dict[str, Any]] = field(default_factory=dict)
    outbox: dict[str, int] = field(default_factory=dict)
    profile: dict[str, Any] | None = None

    @property
    def sandbox_bound(self) -> bool:
        return any(p >= SANDBOX_BUSY_PCT for p in self.sandbox_cpu_pct)


def fill(opts: Options, names: Sequence[str], toml: str, tag: str) -> tuple[Path, float]:
    """Fill a fresh outbox with `opts.events` events through the gateway's ingest (no delivery
    workers); return (outbox path, fill events/s). The config sits beside the outbox."""
    server, db = start_gateway_config(toml, opts.workdir, opts.server_cpu, opts.source, key=API_KEY)
    try:
        payloads = list(event_bodies(opts.parts, tag, opts.events))
        t0 = time.monotonic()
        accepted = asyncio.run(post_bodies(server.port, payloads, "fill", patience=60))
        rate = accepted / (time.monotonic() - t0)
    finally:
        server.stop()
    rows = outbox_rows(db, states=True)
    want = opts.events * len(names)
    if accepted != opts.events or rows["events"] != opts.events or rows["deliveries"] != want:
        raise RuntimeError(
            f"fill: {accepted} of {opts.events} events accepted, outbox holds {rows}, "
            f"expected {want} delivery rows"
        )
    return db, rate


def run_case(opts: Options, names: Sequence[str], tag: str) -> Result:
    """Fill, then time the delivery of every row to the sandboxes (see the module doc)."""
    label = case_label(names)
    sandboxes = start_sandboxes(
        names, opts.sandbox_procs, opts.sandbox_cpus, opts.workdir, opts.source
    )
    try:
        urls = sandbox_urls(sandboxes)
        toml = GATEWAY_TOML + destinations_template(names, urls)
        db, fill_rate = fill(opts, names, toml, f"{tag}-{int(time.time())}")
        wait_quiet(opts.quiet_wait)
        return deliver(opts, names, label, db, sandboxes, fill_rate)
    finally:
        for proc in sandboxes:
            proc.server.stop()


def deliver(
    opts: Options,
    names: Sequence[str],
    label: str,
    db: Path,
    sandboxes: Sequence[SandboxProcess],
    fill_rate: float,
) -> Result:
    want = opts.events * len(names)
    config = db.parent / "signalgate.toml"
    cmd = [sys.executable, "-m", "gateway", "run", "--config", str(config)]
    spawn = time.monotonic()
    gateway = Server(
        "gateway-delivering", cmd, opts.server_cpu, port_of(config), opts.workdir, opts.source
    )
    spy = None
    raw = Path(f"{opts.profile}.gateway.txt")
    try:
        if opts.profile:
            spy = start_py_spy(gateway.proc.pid, 3600, raw, opts.sandbox_cpus[0])
        window = watch(opts, gateway, sandboxes, want)
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
            output, _ = spy.communicate(timeout=120)
            if not raw.exists():
                raise RuntimeError(f"py-spy wrote nothing: {output[-1000:]}")
        done = wait_rows_done(db, want, opts.stall)
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
            spy.wait()
        gateway.stop()
    final = tallies(sandboxes)
    first = min(t.first for t in final.values())
    last = max(t.last for t in final.values())
    delivered = sum(t.accepted for t in final.values())
    seconds = last - first
    per_platform = {
        name: {
            "accepted": t.accepted,
            "rejected": t.rejected,
            "requests": t.requests,
            "events_per_request": t.accepted / t.requests if t.requests else 0.0,
            "seconds": t.last - t.first,
            "first_rejection": t.sample,
        }
        for name, t in final.items()
    }
    result = Result(
        case=label,
        destinations=list(names),
        events=opts.events,
        deliveries=delivered,
        seconds=seconds,
        deliveries_per_s=delivered / seconds if seconds > 0 else math.nan,
        seconds_from_spawn=last - spawn,
        fill_events_per_s=fill_rate,
        per_platform=per_platform,
        outbox=done,
        profile={**hotspots(raw, requests=want), "py_spy_raw": str(raw)} if spy else None,
        **window,
    )
    wrong = [n for n, t in final.items() if (t.accepted, t.rejected) != (opts.events, 0)]
    if wrong:
        raise RuntimeError(
            f"{label}: not every platform accepted each of the {opts.events} events exactly "
            f"once: {tally_text({n: final[n] for n in wrong})}"
        )
    if done.get("deliveries_done", 0) != want:
        raise RuntimeError(f"{label}: outbox holds {done}, expected {want} rows done")
    return result


def port_of(config: Path) -> int:
    for line in config.read_text().splitlines():
        if line.startswith("port = "):
            return int(line.split("=", 1)[1])
    raise RuntimeError(f"no port in {config}")


def watch(
    opts: Options, gateway: Server, sandboxes: Sequence[SandboxProcess], want: int
) -> dict[str, Any]:
    """Poll the sandboxes until `want` events were accepted in all (RuntimeError when nothing
    moves for `opts.stall` seconds or `opts.timeout` passes); return the CPU figures (see
    `cpu_figures`) between the last poll that saw no delivery yet and the first that saw all.
    Each poll reads the CPU counters before asking the sandboxes, the last one after too, so
    the window brackets the whole delivery."""
    start = time.monotonic()
    seen, moved = 0, start
    before: tuple[float, Any] | None = None
    complete = False
    while True:
        sample = (time.monotonic(), cpu_sample(gateway, sandboxes, opts.server_cpu))
        seen_now = tallies(sandboxes)
        total = sum(t.accepted for t in seen_now.values())
        if any(t.rejected for t in seen_now.values()):
            raise RuntimeError(f"a sandbox rejected events: {tally_text(seen_now)}")
        if total == 0:
            before, complete = sample, True
        elif before is None:  # delivering already at the first poll: the window starts late
            before = sample
        if total >= want:
            break
        now = time.monotonic()
        if total > seen:
            seen, moved = total, now
        elif now - moved > opts.stall or now - start > opts.timeout:
            raise RuntimeError(
                f"delivery stalled at {total} of {want} deliveries ({tally_text(seen_now)}); "
                f"gateway log:\n{gateway.log_tail()}"
            )
        time.sleep(0.05)
    end = (time.monotonic(), cpu_sample(gateway, sandboxes, opts.server_cpu))
    return {**cpu_figures(before, end, want), "cpu_window_complete": complete}


def cpu_sample(
    gateway: Server, sandboxes: Sequence[SandboxProcess], cpu: int | None
) -> dict[str, Any]:
    return {
        "gateway": proc_times(gateway.proc.pid),
        "sandboxes": [proc_times(p.server.proc.pid) for p in sandboxes],
        "core": core_times(cpu),
        "machine": core_times(None),
    }


def cpu_figures(
    first: tuple[float, Any], end: tuple[float, Any], deliveries: int
) -> dict[str, Any]:
    """CPU between two `cpu_sample`s: shares of a core over the window for the gateway, its
    core's busy share, each sandbox process and everyone else's user CPU; and the gateway's and
    the sandboxes' CPU microseconds per delivery."""
    wall = end[0] - first[0]
    a, b = first[1], end[1]
    gw = b["gateway"][1] - a["gateway"][1]
    boxes = [y[1] - x[1] for x, y in zip(a["sandboxes"], b["sandboxes"], strict=True)]
    total = b["core"][1] - a["core"][1]
    machine_user = (b["machine"][2] - a["machine"][2]) / os.sysconf("SC_CLK_TCK")
    ours = (b["gateway"][0] - a["gateway"][0]) + sum(
        y[0] - x[0] for x, y in zip(a["sandboxes"], b["sandboxes"], strict=True)
    )
    return {
        "cpu_window_s": wall,
        "gateway_cpu_pct": 100 * gw / wall,
        "server_core_busy_pct": 100 * (b["core"][0] - a["core"][0]) / total if total else math.nan,
        "sandbox_cpu_pct": [100 * x / wall for x in boxes],
        "other_cpu_pct": 100 * (machine_user - ours) / wall,
        "gateway_us_per_delivery": 1e6 * gw / deliveries,
        "sandbox_us_per_delivery": 1e6 * sum(boxes) / deliveries,
    }


# -- report ------------------------------------------------------------------------------------


def table(results: Sequence[Result]) -> str:
    head = (
        f"{'case':<16}{'events':>8}{'deliveries':>12}{'seconds':>9}{'deliv/s':>10}"
        f"{'from spawn':>12}{'gw CPU':>8}{'core':>6}{'sandbox CPU':>13}{'other':>7}"
        f"{'fill ev/s':>11}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        boxes = "/".join(f"{p:.0f}%" for p in r.sandbox_cpu_pct)
        mark = "  sandbox-bound" if r.sandbox_bound else ""
        mark += "" if r.cpu_window_complete else "  (CPU window started late)"
        mark += "  !" if r.other_cpu_pct > 20 else ""
        lines.append(
            f"{r.case:<16}{r.events:>8,}{r.deliveries:>12,}{r.seconds:>9.2f}"
            f"{fmt(r.deliveries_per_s):>10}{r.seconds_from_spawn:>11.2f}s"
            f"{fmt(r.gateway_cpu_pct):>7}%{fmt(r.server_core_busy_pct):>5}%{boxes:>13}"
            f"{fmt(r.other_cpu_pct):>6}%{fmt(r.fill_events_per_s):>11}{mark}"
        )
    if any(r.other_cpu_pct > 20 for r in results):
        lines.append(
            "! other processes used more than 20% of a core during the delivery: the figures "
            "are not clean"
        )
    if any(r.sandbox_bound for r in results):
        lines.append(
            f"sandbox-bound: a sandbox process used >= {SANDBOX_BUSY_PCT:g}% of its core, so the "
            "sandboxes' validation limited the rate (a floor for the gateway; try "
            "--sandbox-procs/--sandbox-cpus on a machine with more cores)"
        )
    return "\n".join(lines)


def platform_lines(r: Result) -> list[str]:
    lines = [f"  {r.case}, per platform:"]
    for name, p in r.per_platform.items():
        rate = p["accepted"] / p["seconds"] if p["seconds"] > 0 else math.nan
        lines.append(
            f"    {name:<12}{p['accepted']:>9,} accepted in {p['requests']:>6,} requests "
            f"({p['events_per_request']:.0f}/request) over {p['seconds']:.2f} s = "
            f"{fmt(rate)}/s"
        )
    lines.append(
        f"    gateway CPU {fmt(r.gateway_us_per_delivery, 1)} us/delivery (ceiling on one core "
        f"{fmt(ceiling(r.gateway_us_per_delivery))}/s); sandbox CPU "
        f"{fmt(r.sandbox_us_per_delivery, 1)} us/delivery (one sandbox core takes at most "
        f"{fmt(ceiling(r.sandbox_us_per_delivery))}/s)"
    )
    return lines


def ceiling(us: float) -> float:
    """Deliveries per second of a core spending `us` microseconds on each (NaN if unknown)."""
    return 1e6 / us if us > 0 else math.nan


def figures(r: Result) -> dict[str, Any]:
    """A result as JSON, with its derived per-delivery costs."""
    return {
        **asdict(r),
        "sandbox_bound": r.sandbox_bound,
    }


def profile_lines(r: Result) -> list[str]:
    """The py-spy summary of a `--profile` run, in us of sampled thread time per delivery."""
    p = r.profile or {}
    return [
        f"py-spy of the delivering gateway ({r.case}, {r.deliveries:,} deliveries, extra run): "
        f"{p['samples']:,} samples = {p['sampled_us_per_request']:.0f} us of Python-visible "
        f"thread time per delivery; raw samples in {p['py_spy_raw']}",
        "  by thread:   " + ", ".join(f"{k} {pct}%" for k, pct, _ in p["threads"]),
        "  by innermost gateway function (stdlib/httpx time charged to its caller), us/delivery:",
        *[profile_row(item) for item in p["owner"]],
        "  by leaf function (self time), us/delivery:",
        *[profile_row(item) for item in p["self"]],
    ]


def median(results: Sequence[Result], count: int) -> Result | None:
    runs = sorted(
        (r for r in results if len(r.destinations) == count), key=lambda r: r.deliveries_per_s
    )
    return runs[(len(runs) - 1) // 2] if runs else None


def verdict(results: Sequence[Result], all_count: int) -> dict[str, Any] | None:
    full = median(results, all_count)
    if full is None:
        return None
    one = median(results, 1)
    return {
        "destinations": all_count,
        "all_deliveries_per_s": full.deliveries_per_s,
        "one_deliveries_per_s": one.deliveries_per_s if one else None,
        "ratio": full.deliveries_per_s / one.deliveries_per_s if one else None,
        "target_deliveries_per_s": TARGET_DELIVERIES,
        "pass": full.deliveries_per_s >= TARGET_DELIVERIES,
        "sandbox_bound": full.sandbox_bound,
    }


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/delivery.py",
        description="Deliveries/s from one gateway core to every platform's sandbox vs Meta alone.",
    )
    parser.add_argument("--events", type=int, default=20_000, help="events in the outbox")
    parser.add_argument("--quick", action="store_true", help="2,000 events, one round")
    parser.add_argument("--rounds", type=int, default=1, help="repeat both cases; report medians")
    parser.add_argument("--server-cpu", type=int, default=0, help="core of the gateway (-1: none)")
    parser.add_argument(
        "--client-cpu", type=int, default=1, help="core of the sandbox process (-1: none)"
    )
    parser.add_argument(
        "--sandbox-procs", type=int, default=1, help="sandbox processes (platforms dealt out)"
    )
    parser.add_argument(
        "--sandbox-cpus",
        default="",
        help="comma-separated cores for the sandbox processes in turn (default: --client-cpu)",
    )
    parser.add_argument(
        "--stall", type=float, default=30.0, help="fail when no delivery lands for S seconds"
    )
    parser.add_argument("--only-all", action="store_true", help="skip the Meta-alone baseline")
    parser.add_argument(
        "--profile",
        metavar="PREFIX",
        help="after the cases, one more all-destination run with py-spy sampling the gateway "
        "(raw samples in PREFIX.gateway.txt); prints its hotspots per delivery",
    )
    add_quiet_arg(parser)
    add_output_args(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.events = min(args.events, 2_000)
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.events < 1 or args.sandbox_procs < 1:
        print("--events and --sandbox-procs must be at least 1", file=sys.stderr)
        return 2
    workdir, source = run_dirs("signalgate-delivery-", args.no_snapshot)
    sys.path.insert(0, str(source))  # the destination list and sandboxes of the code measured
    names = usable(all_names := registered(), sandbox=True)
    if not names:
        print("no usable destination", file=sys.stderr)
        return 2
    client = core_arg(args.client_cpu)
    cpus: list[int | None] = [client]
    if args.sandbox_cpus:
        cpus = [core_arg(int(c)) for c in args.sandbox_cpus.split(",") if c.strip()]
    opts = Options(
        events=args.events,
        sandbox_procs=args.sandbox_procs,
        sandbox_cpus=cpus,
        server_cpu=core_arg(args.server_cpu),
        quiet_wait=args.quiet_wait,
        stall=args.stall,
        timeout=max(600.0, args.events * len(names) / 500),
        workdir=workdir,
        source=source,
        parts=template_parts(CLICK_IDS),
    )
    env = {
        **code_identity(source),
        "events": args.events,
        "destinations": names,
        "skipped_destinations": [n for n in all_names if n not in names],
        "server_cpu": opts.server_cpu,
        "sandbox_cpus": cpus,
        "sandbox_procs": args.sandbox_procs,
    }
    print(
        f"signalgate delivery bench: {args.events:,} events to {len(names)} destinations "
        f"({', '.join(names)}) vs {BASELINE} alone; gateway on core {opts.server_cpu}, "
        f"{args.sandbox_procs} sandbox process(es) on core(s) {cpus}, Python {env['python']}, "
        f"gateway code: HEAD {env['git_head']}, sources {env['gateway_src']}"
        + (
            f"; left out: {', '.join(env['skipped_destinations'])}"
            if env["skipped_destinations"]
            else ""
        ),
        flush=True,
    )
    cases = [names] if args.only_all or names == [BASELINE] else [[BASELINE], names]
    if BASELINE not in names and not args.only_all:
        print(f"warning: baseline {BASELINE!r} not usable; no ratio", file=sys.stderr)
        cases = [names]
    results: list[Result] = []
    profiled: Result | None = None
    status = 0
    try:
        for rnd in range(args.rounds):
            for case in cases:
                print(f"  round {rnd + 1}: {len(case)} destination(s) ...", flush=True)
                results.append(run_case(opts, case, f"r{rnd}n{len(case)}"))
        if args.profile:
            print(f"  profiling the gateway delivering to {len(names)} destination(s) ...")
            opts.profile = args.profile
            profiled = run_case(opts, names, "prof")
    except RuntimeError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        status = 1
    finally:
        end_run(env, source, args.keep, workdir)
    print()
    print(table(results))
    for r in results:
        print("\n".join(platform_lines(r)))
    print()
    v = verdict(results, len(names))
    if v is not None:
        ratio = ""
        if v["ratio"] is not None:
            ratio = (
                f" vs {BASELINE} alone {fmt(v['one_deliveries_per_s'])} deliveries/s "
                f"(x{v['ratio']:.2f})"
            )
        print(
            f"delivery: {v['destinations']} destinations {fmt(v['all_deliveries_per_s'])} "
            f"deliveries/s{ratio} (target >= {fmt(v['target_deliveries_per_s'])})  "
            f"{'PASS' if v['pass'] else 'MISS'}"
            + ("  [sandbox-bound: a floor for the gateway]" if v["sandbox_bound"] else "")
        )
    if profiled is not None:
        print()
        print("\n".join(profile_lines(profiled)))
    source_warnings(env)
    if args.json:
        write_json(
            args.json,
            {
                "environment": env,
                "results": [figures(r) for r in results],
                "verdict": v,
                "profile": figures(profiled) if profiled else None,
                "failed": bool(status),
            },
        )
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
