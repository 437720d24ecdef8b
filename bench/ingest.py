"""Ingest benchmark: `POST /v1/events` with durable commit vs. a bare aiohttp handler.

Run on demand (never in CI): ``.venv/bin/python bench/ingest.py [--quick] [--json out.json]``.

Each case starts a fresh server process pinned to one core (``--server-cpu``, default 0) and
drives it from a load generator pinned to another core (``--client-cpu``, default 1):

* **bare**: aiohttp on uvloop, one POST handler that reads the body, ``json.loads`` it and
  answers ``202 {"accepted": n}`` without storing anything (the ceiling of the stack);
* **gateway**: ``signalgate run --no-delivery`` on a temporary config whose SQLite outbox
  (WAL, ``synchronous = NORMAL``: a 202 means committed) lives in a temporary directory.

Both get the same realistic website ``Purchase`` events (e-mail, phone, IP, user agent, URL,
value, currency, order id, contents), 1 or 100 per request, every event with a unique
``event_id`` so deduplication never short-circuits the store. The load generator is ``wrk``
with a generated Lua script when ``wrk`` is on PATH, else an aiohttp client in a separate
process. After every gateway case the outbox is opened read-only and its rows are counted
against the 202 answers, so a broken gateway cannot look fast.

Optional extras: ``--delivery-mode`` repeats the gateway cases with delivery workers running
against the Meta sandbox in a third process (informational), and ``--profile FILE`` samples the
gateway under the single-event load with py-spy and prints the hotspots.

The cases, servers and child modes are here; the load (event bodies, wrk script, Python client)
is in benchload.py, the report (table, verdicts, time budget) in ingestreport.py and the
in-process micro-benchmarks in ingestmicro.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchlib import (
    ROOT,
    Load,
    add_core_args,
    add_output_args,
    add_quiet_wait_arg,
    add_timing_args,
    affinity_hook,
    banner,
    bench_json,
    check_answers,
    check_outbox,
    child_env,
    end_run,
    environment,
    free_port,
    load_figures,
    measured,
    outbox_rows,
    parse_bench_args,
    pinned,
    run_dirs,
    source_warnings,
    wait_idle,
    wait_quiet,
    write_json,
)
from benchload import API_KEY, Settings, resolve_loadgen, run_load, template_parts
from benchprofile import (
    hotspots,
    perf_record_cmd,
    perf_summary,
    spy_threads,
    start_py_spy,
    start_sampler,
)
from benchservers import (
    INGEST_TOML,
    META_TOML,
    Server,
    http_get_json,
    run_forever,
    serve_app,
    start_child,
    start_gateway_config,
    write_gateway_config,
)
from ingestaudit import Scraper, audit_toml, rolled_up
from ingestmicro import audit_costs, request_path_costs
from ingestreport import (
    AUDIT_OFF,
    AUDIT_ON,
    Result,
    audit_cost_lines,
    audit_lines,
    audit_verdicts,
    budget,
    budget_lines,
    profile_lines,
    table,
    verdict_lines,
    verdicts,
)

SOURCE = ROOT
"""Directory holding the `gateway` package the servers run: the work tree, or a snapshot of
it taken at start (the default), so edits made while the benchmark runs do not leak in."""
PIXEL_ID = "1234567890"
QUIET_WAIT = 180.0
"""Longest wait for an idle machine before each case (`--quiet-wait`)."""


# -- processes ---------------------------------------------------------------------------------


GATEWAY_TOML = INGEST_TOML + META_TOML


def write_config(workdir: Path, port: int, api_base: str) -> tuple[Path, Path]:
    """Write a gateway config with its outbox in a fresh directory; return (config, db)."""
    return write_gateway_config(
        GATEWAY_TOML, workdir, port, key=API_KEY, pixel=PIXEL_ID, api_base=api_base
    )


def start_gateway(
    workdir: Path, cpu: int | None, *, api_base: str, delivery: bool
) -> tuple[Server, Path]:
    return start_gateway_config(
        GATEWAY_TOML,
        workdir,
        cpu,
        SOURCE,
        delivery=delivery,
        key=API_KEY,
        pixel=PIXEL_ID,
        api_base=api_base,
    )


def start_bare(workdir: Path, cpu: int | None) -> Server:
    return start_child(__file__, "_bare", workdir, cpu, SOURCE)


def start_sandbox(workdir: Path, cpu: int | None) -> Server:
    return start_child(__file__, "_sandbox", workdir, cpu, SOURCE)


def sandbox_count(port: int) -> int:
    """Events the sandbox accepted so far (its own counter, see `_serve_sandbox`)."""
    return int(http_get_json(port, "/_bench/count", timeout=5)["accepted"])


# -- cases -------------------------------------------------------------------------------------


def measure(
    settings: Settings, server: Server, name: str, batch: int, tag: str
) -> tuple[Load, Load]:
    """Warm up, then measure with fresh ids; return (warm-up, measurement) loads."""
    prefix = f"{settings.nonce}{tag}"
    warm = run_load(settings, server.port, batch, settings.warmup, prefix + "w")
    check_answers(f"{name} warm-up", warm, 202)
    wait_idle(server.proc.pid)
    load = measured(
        server.proc.pid,
        settings.server_cpu,
        lambda: run_load(settings, server.port, batch, settings.duration, prefix + "m"),
    )
    check_answers(name, load, 202)
    return warm, load


def result(name: str, batch: int, settings: Settings, load: Load) -> Result:
    return Result(
        server=name,
        batch=batch,
        connections=settings.connections,
        events_per_s=load.ok * batch / load.duration_s,
        **load_figures(load, 202),
    )


def run_bare(settings: Settings, batch: int, tag: str) -> Result:
    wait_quiet(QUIET_WAIT)
    server = start_bare(settings.workdir, settings.server_cpu)
    try:
        _, load = measure(settings, server, "bare", batch, tag)
    finally:
        server.stop()
    return result("bare", batch, settings, load)


def verify_rows(
    name: str, db: Path, batch: int, loads: Sequence[Load], conns: int
) -> tuple[dict[str, int], int]:
    """Count the outbox rows against the 202 answers; raise if any accepted event is missing."""
    rows = outbox_rows(db, states=True)
    expected = sum(x.ok for x in loads) * batch
    check_outbox(name, rows, expected, len(loads) * conns * batch, "events were answered 202")
    return rows, expected


def run_gateway(settings: Settings, batch: int, tag: str) -> Result:
    wait_quiet(QUIET_WAIT)
    server, db = start_gateway(
        settings.workdir, settings.server_cpu, api_base="http://127.0.0.1:9", delivery=False
    )
    try:
        warm, load = measure(settings, server, "gateway", batch, tag)
    finally:
        server.stop()
    res = result("gateway", batch, settings, load)
    res.rows, res.expected_rows = verify_rows(
        "gateway", db, batch, [warm, load], settings.connections
    )
    return res


# -- --audit: metrics and rollups off vs on (issue #12) -------------------------------------


def run_audit(settings: Settings, batch: int, tag: str, on: bool) -> Result:
    """The gateway with rollups off, or on with /metrics scraped during the measurement."""
    name = AUDIT_ON if on else AUDIT_OFF
    wait_quiet(QUIET_WAIT)
    server, db = start_gateway_config(
        audit_toml(GATEWAY_TOML, on),
        settings.workdir,
        settings.server_cpu,
        SOURCE,
        key=API_KEY,
        pixel=PIXEL_ID,
        api_base="http://127.0.0.1:9",
    )
    scraper = Scraper(server.port)
    try:
        if on:
            with scraper:
                warm, load = measure(settings, server, name, batch, tag)
        else:
            warm, load = measure(settings, server, name, batch, tag)
    finally:
        server.stop()  # graceful: the last rollup flush runs before the store closes
    res = result(name, batch, settings, load)
    res.rows, res.expected_rows = verify_rows(name, db, batch, [warm, load], settings.connections)
    if on:
        res.scrapes = scraper.ok
        res.rolled_up = rolled_up(db)
        if scraper.failed or not scraper.ok:
            raise RuntimeError(f"{name}: {scraper.failed} /metrics scrapes failed, {scraper.ok} ok")
        if res.rolled_up < res.expected_rows:
            raise RuntimeError(
                f"{name}: rollups count {res.rolled_up:,} accepted events,"
                f" {res.expected_rows:,} were answered 202"
            )
    return res


def run_gateway_delivering(settings: Settings, batch: int, tag: str) -> Result:
    """Gateway with delivery workers, Meta sandbox in a third process on the client core."""
    wait_quiet(QUIET_WAIT)
    sandbox = start_sandbox(settings.workdir, settings.client_cpu)
    try:
        server, db = start_gateway(
            settings.workdir,
            settings.server_cpu,
            api_base=f"http://127.0.0.1:{sandbox.port}",
            delivery=True,
        )
        try:
            prefix = f"{settings.nonce}{tag}"
            warm = run_load(settings, server.port, batch, settings.warmup, prefix + "w")
            check_answers("gateway+delivery warm-up", warm, 202)
            wait_idle(server.proc.pid)
            sent0 = sandbox_count(sandbox.port)
            load = measured(  # the sandbox counts as other CPU here
                server.proc.pid,
                settings.server_cpu,
                lambda: run_load(settings, server.port, batch, settings.duration, prefix + "m"),
            )
            sent1 = sandbox_count(sandbox.port)
            check_answers("gateway+delivery", load, 202)
            accepted = (warm.ok + load.ok) * batch
            start = time.monotonic()
            drained = float("nan")
            while time.monotonic() - start < 120:
                if sandbox_count(sandbox.port) >= accepted:
                    drained = time.monotonic() - start
                    break
                time.sleep(0.1)
            delivered = sandbox_count(sandbox.port)
        finally:
            server.stop()
    finally:
        sandbox.stop()
    res = result("gateway+delivery", batch, settings, load)
    res.rows, res.expected_rows = verify_rows(
        "gateway+delivery", db, batch, [warm, load], settings.connections
    )
    res.delivered = delivered
    res.delivered_per_s = (sent1 - sent0) / load.duration_s
    res.backlog_after_s = {"drain_seconds": drained}
    return res


def run_micro(settings: Settings, seconds: float) -> dict[str, float]:
    """Run `_micro` in a child pinned to the server core; return its costs."""
    wait_quiet(QUIET_WAIT)
    config, _db = write_config(settings.workdir, free_port(), "http://127.0.0.1:9")
    cmd = [sys.executable, str(Path(__file__).resolve()), "_micro", "--config", str(config)]
    cmd += ["--parts", json.dumps(settings.template_parts), "--duration", str(seconds)]
    done = subprocess.run(
        pinned(cmd, settings.server_cpu),
        capture_output=True,
        text=True,
        check=False,
        cwd=SOURCE,
        env=child_env(SOURCE),
        preexec_fn=affinity_hook(settings.server_cpu),
        timeout=seconds * 3 + 300,
    )
    doc = bench_json(done.stdout)
    if done.returncode != 0 or doc is None:
        raise RuntimeError(f"micro-benchmark failed:\n{done.stdout[-2000:]}\n{done.stderr}")
    return {k: float(v) for k, v in doc.items()}


# -- profile -----------------------------------------------------------------------------------


def profile_server(settings: Settings, kind: str, prefix: str, batch: int) -> dict[str, Any]:
    """Sample a server (gateway or bare) under load; return its hotspots.

    py-spy samples non-blocking (its pausing mode halves the gateway's throughput on this kind
    of VM and counts idle threads as busy); the price is torn stacks, so stages are computed
    from complete stacks only. When ``perf`` is on PATH it samples the server's core at the same
    time (kernel + native libraries, which py-spy cannot see). Profiling is a separate run, never
    the one whose figures are reported.
    """
    perf = shutil.which("perf") if settings.server_cpu is not None else None
    raw = Path(f"{prefix}.{kind}.b{batch}.txt")
    perf_data = Path(f"{prefix}.{kind}.b{batch}.perf.data")
    wait_quiet(QUIET_WAIT)
    if kind == "gateway":
        server, _db = start_gateway(
            settings.workdir, settings.server_cpu, api_base="http://127.0.0.1:9", delivery=False
        )
    else:
        server = start_bare(settings.workdir, settings.server_cpu)
    seconds = max(3, round(settings.duration))
    try:
        run_load(settings, server.port, batch, settings.warmup, f"{settings.nonce}p{kind}w")
        wait_idle(server.proc.pid)
        tools = [start_py_spy(server.proc.pid, seconds, raw, settings.client_cpu)]
        if perf:
            perf_cmd = perf_record_cmd(perf, settings.server_cpu, perf_data, seconds)
            tools.append(start_sampler(perf_cmd, settings.client_cpu))
        time.sleep(0.3)
        load = run_load(settings, server.port, batch, seconds + 1, f"{settings.nonce}p{kind}m")
        for tool in tools:
            output, _ = tool.communicate(timeout=seconds + 60)
            if tool.returncode != 0:
                raise RuntimeError(f"{tool.args[0]} failed: {output}")
    finally:
        server.stop()
    rps = load.ok / load.duration_s
    report = hotspots(raw, requests=rps * seconds)
    report.update(server=kind, batch=batch, requests_per_s_while_sampled=rps, py_spy_raw=str(raw))
    if perf:
        report["perf"] = perf_summary(perf, perf_data, spy_threads(raw, server.proc.pid))
    return report


# -- report ------------------------------------------------------------------------------------


# -- child modes -------------------------------------------------------------------------------


async def _serve_bare(port: int) -> None:
    """The baseline: read, json.loads, answer 202; nothing stored."""
    from aiohttp import web

    async def post_events(request: web.Request) -> web.Response:
        raw = await request.read()
        doc = json.loads(raw)
        return web.json_response({"accepted": len(doc["events"])}, status=202)

    app = web.Application(client_max_size=1_048_576)
    app.router.add_post("/v1/events", post_events)
    await serve_app(app, port, "bare")


async def _serve_sandbox(port: int) -> None:
    """The Meta sandbox, forgetting accepted events every 0.5 s but counting them."""
    from aiohttp import web

    from gateway.sandbox.meta import MetaSandbox

    sandbox = MetaSandbox()
    accepted = 0

    def settle() -> int:
        nonlocal accepted
        accepted += len(sandbox.recorder.accepted)
        sandbox.recorder.accepted.clear()
        return accepted

    async def count(request: web.Request) -> web.Response:
        return web.json_response({"accepted": settle(), "requests": sandbox.recorder.requests})

    async def forget() -> None:
        while True:
            await asyncio.sleep(0.5)
            settle()

    app = sandbox.app()
    app.router.add_get("/_bench/count", count)
    task = asyncio.create_task(forget())
    try:
        await serve_app(app, port, "sandbox")
    finally:
        task.cancel()


def child_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="ingest.py " + argv[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--parts", default="[]")
    parser.add_argument("--config", default="")
    args = parser.parse_args(argv[1:])
    if argv[0] == "_bare":
        run_forever(_serve_bare(args.port))
    elif argv[0] == "_sandbox":
        run_forever(_serve_sandbox(args.port))
    else:
        import uvloop

        micro = uvloop.run(request_path_costs(args.config, json.loads(args.parts), args.duration))
        print("BENCH_JSON " + json.dumps(micro), flush=True)
    return 0


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/ingest.py",
        description="POST /v1/events throughput: gateway (durable commit) vs bare aiohttp.",
    )
    add_timing_args(parser)
    parser.add_argument("--batches", default="1,100", help="events per request, comma-separated")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    add_core_args(parser, "core of the load generator")
    parser.add_argument(
        "--delivery-mode",
        action="store_true",
        help="also run the gateway with delivery to the Meta sandbox (informational)",
    )
    parser.add_argument(
        "--profile",
        metavar="PREFIX",
        help="py-spy (and perf, if present) bare and gateway under load in extra runs; "
        "raw samples go to PREFIX.<server>.b<batch>.txt / .perf.data",
    )
    parser.add_argument(
        "--profile-batches", default="1", help="batch sizes to profile, comma-separated"
    )
    parser.add_argument(
        "--audit",
        action="store_true",
        help="also run the gateway with rollups off and on (+ /metrics scraped) and report the"
        " ratio (issue #12, target >= 95%%)",
    )
    parser.add_argument(
        "--audit-only", action="store_true", help="run only the --audit cases (no bare/gateway)"
    )
    add_quiet_wait_arg(parser)
    parser.add_argument(
        "--no-breakdown",
        action="store_true",
        help="skip the in-process micro-benchmarks that split the gateway's extra time",
    )
    add_output_args(parser)
    return parse_bench_args(parser, argv)


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] in ("_bare", "_sandbox", "_micro"):
        return child_main(argv)
    args = parse_args(argv)
    loadgen = resolve_loadgen(args.loadgen)
    if loadgen is None:
        return 2
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    global SOURCE, QUIET_WAIT
    workdir, SOURCE = run_dirs("signalgate-bench-", args.no_snapshot)
    QUIET_WAIT = args.quiet_wait
    settings = Settings.from_args(
        args,
        workdir,
        loadgen=loadgen,
        template_parts=template_parts(),
    )
    env = environment(SOURCE, settings, loadgen)
    env["pinning"] = "taskset" if shutil.which("taskset") else "sched_setaffinity"
    banner("ingest", "", env, settings, "load generator")
    results: list[Result] = []
    delivering: list[Result] = []
    reports: list[dict[str, Any]] = []
    micro: dict[str, float] | None = None
    audit_cost: dict[str, float] | None = None
    status = 0
    try:
        for rnd in range(args.rounds):
            for batch in batches:
                if not args.audit_only:
                    for name, run in (("bare", run_bare), ("gateway", run_gateway)):
                        print(
                            f"  round {rnd + 1}: {name}, {batch} event(s)/request ...", flush=True
                        )
                        results.append(run(settings, batch, f"r{rnd}b{batch}{name[0]}"))
                if args.audit or args.audit_only:
                    order = (False, True) if rnd % 2 == 0 else (True, False)  # drift cancels
                    for on in order:
                        name = AUDIT_ON if on else AUDIT_OFF
                        print(
                            f"  round {rnd + 1}: {name}, {batch} event(s)/request ...", flush=True
                        )
                        tag = f"r{rnd}b{batch}a{int(on)}"
                        results.append(run_audit(settings, batch, tag, on))
        if args.audit or args.audit_only:
            print("  in-process cost of one rollup flush and one /metrics render ...", flush=True)
            audit_cost = audit_costs(workdir)
        if not args.no_breakdown and not args.audit_only:
            print("  in-process micro-benchmarks of the request path ...", flush=True)
            micro = run_micro(settings, min(3.0, args.duration))
        if args.delivery_mode:
            for batch in batches:
                print(f"  gateway+delivery, {batch} event(s)/request ...", flush=True)
                delivering.append(run_gateway_delivering(settings, batch, f"d{batch}"))
        if args.profile:
            for batch in [int(b) for b in args.profile_batches.split(",") if b.strip()]:
                for kind in ("bare", "gateway"):
                    print(f"  profiling {kind} under {batch}-event load ...", flush=True)
                    reports.append(profile_server(settings, kind, args.profile, batch))
    except RuntimeError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        status = 1
    finally:
        end_run(env, SOURCE, args.keep, workdir)
    print()
    print(table(results + delivering))
    print()
    v = verdicts(results)
    for line in verdict_lines(v):
        print(line)
    audit = audit_verdicts(results)
    for line in audit_lines(audit):
        print(line)
    if audit_cost is not None:
        print("\n".join(audit_cost_lines(audit_cost)))
    source_warnings(env)
    breakdown = budget(results, micro) if micro else None
    if breakdown:
        print()
        print("\n".join(budget_lines(breakdown)))
    if delivering:
        print()
        print(
            "gateway+delivery rows are informational: the Meta sandbox runs on the load "
            "generator's core and delivery workers share the gateway's core."
        )
    for report in reports:
        print()
        print("\n".join(profile_lines(report)))
    if args.json:
        write_json(
            args.json,
            {
                "environment": env,
                "results": [asdict(r) for r in results],
                "delivery_mode": [asdict(r) for r in delivering],
                "verdicts": v,
                "audit": audit,
                "audit_costs": audit_cost,
                "breakdown": breakdown,
                "profiles": reports,
                "failed": bool(status),
            },
        )
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
