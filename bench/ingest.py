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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchlib import (
    ROOT,
    SPY_RATE,
    SPY_ROOTS,
    BenchSettings,
    Load,
    Server,
    add_core_args,
    add_output_args,
    add_timing_args,
    affinity_hook,
    banner,
    bench_json,
    check_answers,
    check_outbox,
    child_env,
    core_arg,
    end_run,
    environment,
    fmt,
    free_port,
    gateway_frame,
    load_figures,
    measured,
    median_run,
    outbox_rows,
    parse_bench_args,
    pinned,
    profile_row,
    run_forever,
    run_loadgen,
    serve_app,
    snapshot_source,
    source_warnings,
    spy_stacks,
    start_child,
    start_gateway_config,
    start_py_spy,
    wait_idle,
    wait_quiet,
    write_gateway_config,
    write_json,
    wrk_script,
)

SOURCE = ROOT
"""Directory holding the `gateway` package the servers run: the work tree, or a snapshot of
it taken at start (the default), so edits made while the benchmark runs do not leak in."""
API_KEY = "sg_bench_key_0123456789abcdef"
ID_MARK = "@@ID@@"
PIXEL_ID = "1234567890"
TARGET_SINGLE_RATIO = 0.80
TARGET_BATCH_EVENTS = 20_000.0
BUSY_OTHER_PCT = 20.0
"""Cases during which other processes used more CPU than this (% of a core) are flagged."""
QUIET_WAIT = 180.0
"""Longest wait for an idle machine before each case (`--quiet-wait`)."""
TARGET_AUDIT_RATIO = 0.95
"""`--audit`: events/s with rollups and /metrics scrapes on, as a share of them off (#12)."""
ADMIN_TOKEN = "sg_bench_admin_0123456789abcdef"  # noqa: S105 - a throwaway bench token
AUDIT_SCRAPE_SECONDS = 1.0
"""`--audit`: the on case scrapes /metrics this often (Prometheus' default is 15 s or more)."""
AUDIT_FLUSH_SECONDS = 1
"""`--audit`: the on case writes its rollups this often (the default is 60 s)."""


# -- event bodies ------------------------------------------------------------------------------


def event_template(now: int, click_ids: Mapping[str, str] | None = None) -> str:
    """Return one Purchase event as JSON text, ``@@ID@@`` where the unique id goes (with
    `click_ids` in ``user.click_ids`` when given: the fan-out benches send the GA client id)."""
    event: dict[str, Any] = {
        "event": "Purchase",
        "event_id": f"evt-{ID_MARK}",
        "time": now,
        "source": "website",
        "url": "https://shop.example/checkout/thank-you?order=" + ID_MARK,
        "user": {
            "email": f"Customer.{ID_MARK}@Example.com",
            "phone": "+1 (650) 555-1212",
            "ip": "203.0.113.7",
            "user_agent": (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
            ),
            "fbp": "fb.1.1596403881668.1116446470",
        },
        "data": {
            "value": 149.85,
            "currency": "EUR",
            "order_id": f"ORDER-{ID_MARK}",
            "contents": [
                {"id": "SKU-1042", "quantity": 2, "price": 49.95},
                {"id": "SKU-2210", "quantity": 1, "price": 49.95},
            ],
        },
    }
    if click_ids:
        event["user"]["click_ids"] = dict(click_ids)
    return json.dumps(event, separators=(",", ":"))


def body_for(parts: Sequence[str], prefix: str, first: int, batch: int) -> bytes:
    """Return a ``{"events": [...]}`` body of `batch` events numbered from `first`."""
    events = []
    for n in range(first, first + batch):
        events.append(f"{prefix}-{n}".join(parts))
    return ('{"events":[' + ",".join(events) + "]}").encode()


LUA_SCRIPT = """
-- generated by bench/ingest.py: POST %(batch)d unique events per request
local parts = { %(parts)s }
local nparts = #parts
local batch = %(batch)d
local headers = {
  ["Authorization"] = "Bearer %(key)s",
  ["Content-Type"] = "application/json",
}

function start(args)
  prefix = args[1] .. "t" .. tostring(tid)
end

function request()
  local buf = { '{"events":[' }
  local n = 1
  for i = 1, batch do
    counter = counter + 1
    local id = prefix .. "-" .. counter
    if i > 1 then n = n + 1; buf[n] = "," end
    for j = 1, nparts - 1 do
      n = n + 1; buf[n] = parts[j]
      n = n + 1; buf[n] = id
    end
    n = n + 1; buf[n] = parts[nparts]
  end
  n = n + 1; buf[n] = "]}"
  return wrk.format("POST", "/v1/events", headers, table.concat(buf))
end
"""


def lua_script(parts: Sequence[str], batch: int) -> str:
    """Return the wrk script posting `batch` events per request, built from `parts`."""
    for part in parts:
        if "]==]" in part:  # pragma: no cover - the template is ours
            raise ValueError("template part cannot be a Lua long string")
    quoted = ", ".join(f"[==[{p}]==]" for p in parts)
    return wrk_script(LUA_SCRIPT % {"parts": quoted, "batch": batch, "key": API_KEY}, 202)


# -- processes ---------------------------------------------------------------------------------


GATEWAY_TOML = """
[server]
host = "127.0.0.1"
port = {port}
max_body_bytes = 1048576
max_events_per_request = 1000

[storage]
backend = "sqlite"
path = "{db}"
synchronous = "NORMAL"

[delivery]
poll_interval = 0.05

[[sites]]
id = "shop"
api_keys = ["{key}"]
default_country = "us"

[sites.destinations.meta]
pixel_id = "{pixel}"
access_token = "bench-access-token"
api_base = "{api_base}"
max_batch = 500
"""


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
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /_bench/count HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(json.loads(data.split(b"\r\n\r\n", 1)[1])["accepted"])


# -- load generation ---------------------------------------------------------------------------


@dataclass
class Settings(BenchSettings):
    loadgen: str
    template_parts: list[str]
    nonce: str = field(default_factory=lambda: secrets.token_hex(3))


def run_load(settings: Settings, port: int, batch: int, seconds: float, prefix: str) -> Load:
    """Drive http://127.0.0.1:port/v1/events for `seconds`; return the load figures."""
    url = f"http://127.0.0.1:{port}/v1/events"
    if settings.loadgen == "wrk":
        script = settings.workdir / f"post-{batch}.lua"
        if not script.exists():
            script.write_text(lua_script(settings.template_parts, batch))
        cmd = [
            "wrk",
            "-t1",
            f"-c{settings.connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
            "--",
            prefix,
        ]
    else:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "_pyload",
            "--url",
            url,
            "--batch",
            str(batch),
            "--connections",
            str(settings.connections),
            "--duration",
            str(seconds),
            "--prefix",
            prefix,
            "--parts",
            json.dumps(settings.template_parts),
        ]
    return run_loadgen(cmd, settings.client_cpu, seconds, "load generator")


# -- cases -------------------------------------------------------------------------------------


@dataclass
class Result:
    """One (server, batch) measurement."""

    server: str
    batch: int
    connections: int
    duration_s: float
    requests_per_s: float
    events_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    ok_202: int
    non_202: int
    socket_errors: int
    server_cpu_pct: float
    server_core_busy_pct: float
    client_cpu_pct: float
    other_cpu_pct: float
    rows: dict[str, int] | None = None
    expected_rows: int | None = None
    delivered: int | None = None
    delivered_per_s: float | None = None
    backlog_after_s: dict[str, float] | None = None
    rolled_up: int | None = None
    """`--audit` on case: events the stored rollups count accepted (at least the 202 ones)."""
    scrapes: int | None = None
    """`--audit` on case: /metrics scrapes answered 200 during the measurement."""


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

AUDIT_OFF = "audit off"
AUDIT_ON = "audit on"


def audit_toml(on: bool) -> str:
    """GATEWAY_TOML with an admin token (for /metrics) and `[audit]` rollups off or on (on:
    written every AUDIT_FLUSH_SECONDS instead of every minute, so short runs pay for them)."""
    toml = GATEWAY_TOML.replace("[storage]", f'admin_token = "{ADMIN_TOKEN}"\n\n[storage]', 1)
    audit = f"rollups = true\nflush_seconds = {AUDIT_FLUSH_SECONDS}" if on else "rollups = false"
    return toml + f"\n[audit]\n{audit}\n"


class Scraper:
    """GET /metrics with the admin token every AUDIT_SCRAPE_SECONDS on a thread, counting the
    200 answers (a failed scrape counts as a check failure of the case)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ok = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics scraper", daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/metrics",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        while not self._stop.wait(AUDIT_SCRAPE_SECONDS):
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
                    answer.read()
                    self.ok += answer.status == 200
            except OSError:
                self.failed += 1


def rolled_up(db: Path) -> int:
    """Events the stored rollups count accepted (read-only)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (n,) = conn.execute(
            "SELECT coalesce(sum(value), 0) FROM stats_minute WHERE metric = 'accepted'"
        ).fetchone()
    finally:
        conn.close()
    return int(n)


def run_audit(settings: Settings, batch: int, tag: str, on: bool) -> Result:
    """The gateway with rollups off, or on with /metrics scraped during the measurement."""
    name = AUDIT_ON if on else AUDIT_OFF
    wait_quiet(QUIET_WAIT)
    server, db = start_gateway_config(
        audit_toml(on),
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


def audit_costs(workdir: Path, flushes: int = 20) -> dict[str, float]:
    """CPU per rollup flush and per /metrics render, in this process, with every counter of a
    busy site moving between flushes (each destination, standard event, source, identifier
    kind and latency bucket): a bound on what `--audit` costs, independent of machine load."""
    from gateway.config import AuditConfig
    from gateway.core.event import STANDARD_EVENTS
    from gateway.core.rollup import snapshot
    from gateway.core.tally import IDENTIFIERS, LATENCY_BUCKETS, IngestTally, RouteTally
    from gateway.destinations import DESTINATIONS
    from gateway.store.sqlite import SqliteStore
    from gateway.web.metrics import RouteView, Sources, render
    from gateway.web.rollups import Flusher

    ingest = IngestTally()
    routes = {f"shop:{name}": RouteTally() for name in DESTINATIONS}
    labels = [*sorted(STANDARD_EVENTS), "custom"]

    def bump() -> None:
        for source in ("backend", "loader", "hit:meta"):
            ingest.accepted("shop", source, dict.fromkeys(labels, 1))
            ingest.refused("shop", source, "invalid")
        ingest.queued_names(tuple(routes), dict.fromkeys(labels, 1))
        for tally in routes.values():
            for label in labels:
                tally.delivered[label] = tally.delivered.get(label, 0) + 1
                for kind in sorted(IDENTIFIERS)[:12]:
                    key = (label, kind)
                    tally.identifiers[key] = tally.identifiers.get(key, 0) + 1
            for i in range(len(LATENCY_BUCKETS) + 1):
                tally.latency_buckets[i] += 1

    async def backlog(names: Any, limit: int) -> dict[str, Any]:
        return {}

    async def main() -> dict[str, float]:
        store = SqliteStore(workdir / "audit-costs.db")
        await store.open()
        try:
            clock = [1_790_000_000.0]
            read = lambda: snapshot(ingest, routes, {}, {})  # noqa: E731
            flusher = Flusher(store, read, lambda: clock[0], AuditConfig())
            flusher.start()
            spent = 0.0
            rows = 0
            for _ in range(flushes):
                bump()
                clock[0] += 60
                started = time.process_time()
                rows = await flusher.flush()
                spent += time.process_time() - started
            sources = Sources(
                ingest=ingest,
                consent_denied={},
                routes=lambda: {r: RouteView(t, {}) for r, t in routes.items()},
                backlog=backlog,
                clock=time.time,
            )
            started = time.process_time()
            for _ in range(flushes):
                await render(sources, 1000)
            scrape = (time.process_time() - started) / flushes
        finally:
            await store.close()
        return {
            "rows_per_flush": rows,
            "flush_ms": spent / flushes * 1000,
            "scrape_ms": scrape * 1000,
        }

    return asyncio.run(main())


def audit_cost_lines(costs: dict[str, float]) -> list[str]:
    flush, scrape = costs["flush_ms"], costs["scrape_ms"]
    return [
        f"audit costs (in-process CPU, every counter moving): one flush of"
        f" {costs['rows_per_flush']:,.0f} rows {flush:.1f} ms (every 60 s by default ="
        f" {flush / 600:.3f}% of a core; every {AUDIT_FLUSH_SECONDS} s as benched ="
        f" {flush / (10 * AUDIT_FLUSH_SECONDS):.2f}%), one /metrics render {scrape:.1f} ms (every"
        f" 15 s = {scrape / 150:.3f}%; every {AUDIT_SCRAPE_SECONDS:g} s as benched ="
        f" {scrape / (10 * AUDIT_SCRAPE_SECONDS):.2f}%)"
    ]


def audit_verdicts(results: Sequence[Result]) -> dict[str, Any]:
    """Per batch size: the on case's events/s as a share of the off case's (median runs)."""
    out: dict[str, Any] = {}
    for batch in sorted({r.batch for r in results if r.server == AUDIT_ON}):
        off, on = pick(results, AUDIT_OFF, batch), pick(results, AUDIT_ON, batch)
        if off and on and off.events_per_s:
            ratio = on.events_per_s / off.events_per_s
            out[str(batch)] = {
                "off_events_per_s": off.events_per_s,
                "on_events_per_s": on.events_per_s,
                "ratio": ratio,
                "target_ratio": TARGET_AUDIT_RATIO,
                "pass": ratio >= TARGET_AUDIT_RATIO,
                "scrapes": on.scrapes,
                "rolled_up": on.rolled_up,
            }
    return out


def audit_lines(v: dict[str, Any]) -> list[str]:
    return [
        f"audit {batch:>3}/req: rollups (every {AUDIT_FLUSH_SECONDS} s) + /metrics (every"
        f" {AUDIT_SCRAPE_SECONDS:g} s, {a['scrapes']} scrapes) on {fmt(a['on_events_per_s'])}"
        f" events/s vs off {fmt(a['off_events_per_s'])} = {a['ratio']:.1%}"
        f" (target >= {a['target_ratio']:.0%})  {'PASS' if a['pass'] else 'MISS'}"
        for batch, a in v.items()
    ]


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


def budget(results: Sequence[Result], micro: dict[str, float]) -> dict[str, Any]:
    """Split the gateway's extra core time over bare into measured in-process costs."""
    out: dict[str, Any] = {}
    b1, g1 = pick(results, "bare", 1), pick(results, "gateway", 1)
    if b1 and g1:
        bare_us, gw_us = 1e6 / b1.requests_per_s, 1e6 / g1.requests_per_s
        parts = {
            "auth (KeyRing.site_for)": micro["auth_us"],
            "parse + hash (Pipeline.prepare)": micro["prepare_us"],
            "record encode": micro["encode_us"],
            "request id (uuid4)": micro["uuid4_us"],
            "bigger JSON answer": micro["gateway_answer_us"] - micro["bare_answer_us"],
            "Pipeline.enrich, 64 concurrent (visitor-profile read on the reader thread)": micro.get(
                "enrich_conc64_1_per_event_us", 0.0
            ),
            "store.append, 64 concurrent 1-event jobs (handoff + SQL + COMMIT, amortised)": micro[
                "append_conc64_1_per_event_us"
            ],
        }
        out["single_us_per_request"] = {
            "bare": bare_us,
            "gateway": gw_us,
            "extra": gw_us - bare_us,
            "parts": parts,
            "unexplained": gw_us - bare_us - sum(parts.values()),
            "budget_for_80pct": bare_us / TARGET_SINGLE_RATIO - bare_us,
        }
    b100, g100 = pick(results, "bare", 100), pick(results, "gateway", 100)
    if g100:
        gw_us = 1e6 / g100.events_per_s
        typed = micro.get("wire_100_per_event_us")
        stored = micro.get("stored_100_per_event_us")
        parse: dict[str, float]
        if stored is not None:  # the road of a site without profiles, records included
            parse = {"decode + parse + hash + record (core.wire stored road)": stored}
        elif typed is not None:
            parse = {
                "decode + parse + hash (core.wire typed pass; bare decodes too)": typed,
                "record encode": micro["encode_us"],
            }
        else:
            parse = {
                "parse + hash (Pipeline.prepare)": micro["prepare_us"],
                "record encode": micro["encode_us"],
            }
        parts = {
            **parse,
            "Pipeline.enrich, 64 concurrent 100-event jobs": micro.get(
                "enrich_conc64_100_per_event_us", 0.0
            ),
            "store.append, 64 concurrent 100-event jobs (amortised)": micro[
                "append_conc64_100_per_event_us"
            ],
        }
        bare_us = 1e6 / b100.events_per_s if b100 else 0.0
        out["batch100_us_per_event"] = {
            "bare": bare_us,
            "gateway": gw_us,
            "extra": gw_us - bare_us,
            "parts": parts,
            "unexplained": gw_us - bare_us - sum(parts.values()),
            "budget_for_target": 1e6 / TARGET_BATCH_EVENTS,
            "ceiling_events_per_s": 1e6 / (bare_us + sum(parts.values())),
        }
    out["micro"] = micro
    return out


def budget_lines(b: dict[str, Any]) -> list[str]:
    m = b["micro"]
    lines = [
        "where the time goes (core microseconds; gateway parts measured in-process on the server "
        "core, see --no-breakdown):"
    ]
    if "single_us_per_request" in b:
        s = b["single_us_per_request"]
        lines += [
            f"  1 event/request: bare {s['bare']:.0f} us/req, gateway {s['gateway']:.0f} us/req, "
            f"extra {s['extra']:.0f} us/req (80% of bare allows {s['budget_for_80pct']:.0f})",
        ]
        lines += [f"    {v:7.1f} us  {k}" for k, v in s["parts"].items()]
        lines.append(
            f"    {s['unexplained']:7.1f} us  rest (GIL/thread handoffs under HTTP load, event "
            "loop wake-ups, GC, body read)"
        )
        lines.append(
            f"    store alone: {m['append_seq_1_per_event_us']:.0f} us per sequential 1-event "
            f"commit; with 64 concurrent jobs {m['append_conc64_1_events_per_commit']:.1f} "
            "events per group commit"
        )
    if "batch100_us_per_event" in b:
        s = b["batch100_us_per_event"]
        lines += [
            f"  100 events/request: bare {s['bare']:.1f} us/event, gateway {s['gateway']:.1f} "
            f"us/event, extra {s['extra']:.1f} us/event "
            f"(20,000 events/s allows {s['budget_for_target']:.0f} us/event in all)",
        ]
        lines += [f"    {v:7.1f} us  {k}" for k, v in s["parts"].items()]
        lines.append(f"    {s['unexplained']:7.1f} us  rest")
        lines.append(
            f"    ceiling with these parts and a free-of-charge everything else: "
            f"{fmt(s['ceiling_events_per_s'])} events/s; store alone "
            f"{fmt(1e6 / m['append_conc64_100_per_event_us'])} events/s "
            f"({m['append_conc64_100_events_per_commit']:.0f} events per commit)"
        )
    return lines


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
            perf_cmd = [perf, "record", "-q", "-e", "cpu-clock", "-F", "999"]
            perf_cmd += ["-C", str(settings.server_cpu), "-o", str(perf_data)]
            perf_cmd += ["--", "sleep", str(seconds)]
            tools.append(
                subprocess.Popen(
                    pinned(perf_cmd, settings.client_cpu),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
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


# -- report ------------------------------------------------------------------------------------


def table(results: Sequence[Result]) -> str:
    head = (
        f"{'case':<16}{'server':<18}{'req/s':>10}{'events/s':>11}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'202s':>9}{'non-202':>9}{'srv CPU':>9}{'core':>6}{'gen CPU':>9}{'other':>7}"
        "  outbox rows / expected"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        case = "1 event/req" if r.batch == 1 else f"{r.batch} events/req"
        rows = ""
        if r.rows is not None:
            rows = f"{r.rows['deliveries']:,} / {r.expected_rows:,}"
            if r.delivered is not None:
                drain = (r.backlog_after_s or {}).get("drain_seconds", float("nan"))
                rows += (
                    f"  (delivered {r.delivered:,}; {fmt(r.delivered_per_s or 0)}/s under load, "
                    f"backlog drained {drain:.1f} s after)"
                )
        if r.other_cpu_pct > BUSY_OTHER_PCT:
            rows += "  !"
        lines.append(
            f"{case:<16}{r.server:<18}{fmt(r.requests_per_s):>10}{fmt(r.events_per_s):>11}"
            f"{fmt(r.p50_ms, 2):>9}{fmt(r.p99_ms, 2):>9}{r.ok_202:>9,}"
            f"{r.non_202 + r.socket_errors:>9,}{fmt(r.server_cpu_pct):>8}%"
            f"{fmt(r.server_core_busy_pct):>5}%"
            f"{fmt(r.client_cpu_pct):>8}%{fmt(r.other_cpu_pct):>6}%  {rows}"
        )
    if any(r.other_cpu_pct > BUSY_OTHER_PCT for r in results):
        lines.append(
            f"! other processes used more than {BUSY_OTHER_PCT:g}% of a core during this case: "
            "it may have shared the server's core (srv CPU < ~97% says it did)"
        )
    return "\n".join(lines)


def pick(results: Sequence[Result], server: str, batch: int) -> Result | None:
    """The median run (by requests/s) of one case, if it was run."""
    return median_run(r for r in results if r.server == server and r.batch == batch)


def verdicts(results: Sequence[Result]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    b1, g1 = pick(results, "bare", 1), pick(results, "gateway", 1)
    b100, g100 = pick(results, "bare", 100), pick(results, "gateway", 100)
    if b1 and g1:
        ratio = g1.requests_per_s / b1.requests_per_s
        out["single"] = {
            "gateway_requests_per_s": g1.requests_per_s,
            "bare_requests_per_s": b1.requests_per_s,
            "ratio": ratio,
            "target_ratio": TARGET_SINGLE_RATIO,
            "pass": ratio >= TARGET_SINGLE_RATIO,
            "p50_ratio": g1.p50_ms / b1.p50_ms if b1.p50_ms else None,
            "p99_ratio": g1.p99_ms / b1.p99_ms if b1.p99_ms else None,
        }
    if g100:
        out["batch100"] = {
            "gateway_events_per_s": g100.events_per_s,
            "bare_events_per_s": b100.events_per_s if b100 else None,
            "ratio": g100.events_per_s / b100.events_per_s if b100 else None,
            "target_events_per_s": TARGET_BATCH_EVENTS,
            "pass": g100.events_per_s >= TARGET_BATCH_EVENTS,
        }
    return out


def verdict_lines(v: dict[str, Any]) -> list[str]:
    lines = []
    if "single" in v:
        s = v["single"]
        lines.append(
            f"single event : gateway {fmt(s['gateway_requests_per_s'])} req/s vs bare "
            f"{fmt(s['bare_requests_per_s'])} req/s = {s['ratio']:.0%} of bare "
            f"(target >= {s['target_ratio']:.0%})  {'PASS' if s['pass'] else 'MISS'}"
            f"   [latency gateway/bare: p50 x{s['p50_ratio']:.2f}, p99 x{s['p99_ratio']:.2f}]"
        )
    if "batch100" in v:
        b = v["batch100"]
        ratio = f" = {b['ratio']:.0%} of bare" if b["ratio"] is not None else ""
        bare = (
            f" vs bare {fmt(b['bare_events_per_s'])} events/s"
            if b["bare_events_per_s"] is not None
            else ""
        )
        lines.append(
            f"100-event    : gateway {fmt(b['gateway_events_per_s'])} events/s{bare}{ratio} "
            f"(target >= {fmt(b['target_events_per_s'])} events/s)  "
            f"{'PASS' if b['pass'] else 'MISS'}"
        )
    return lines


def profile_lines(report: dict[str, Any]) -> list[str]:
    gateway = report["server"] == "gateway"
    lines = [
        f"py-spy ({SPY_RATE} Hz, non-blocking, idle excluded): {report['server']} under "
        f"{report['batch']}-event load, {fmt(report['requests_per_s_while_sampled'])} req/s "
        f"while sampled, {report['samples']:,} samples "
        f"({report['complete_stacks']:,} with complete stacks) = "
        f"{report['sampled_us_per_request']:.0f} us of Python-visible thread time per request",
        "  by thread:   " + ", ".join(f"{k} {p}%" for k, p, _ in report["threads"]),
    ]
    if gateway:
        lines.append("  by stage (inclusive; from complete stacks):")
        lines += [profile_row(item) for item in report["stages"]]
        lines.append("  by innermost gateway function (stdlib/aiohttp time charged to its caller):")
        lines += [profile_row(item) for item in report["owner"]]
    lines.append("  by leaf function (self time):")
    lines += [profile_row(item) for item in report["self"]]
    if "perf" in report:
        perf = report["perf"]
        own = perf["server_by_thread"]
        if sum(p for _, p in own) < 90:
            lines.append(
                "  WARNING: other processes used the server core during this profile "
                f"(the server had {sum(p for _, p in own):.0f}% of it)"
            )
        lines.append("  perf, server core (cpu-clock), by process:")
        lines += [f"    {p:5.1f}%  {k}" for k, p in perf["core_by_process"][:6]]
        lines.append(
            "  perf, server threads: " + ", ".join(f"{k} {p}%" for k, p in perf["server_by_thread"])
        )
        lines.append("  perf, server process, by library:")
        lines += [f"    {p:5.1f}%  {k}" for k, p in perf["server_by_library"][:8]]
        lines.append("  perf, server process, by symbol:")
        lines += [f"    {p:5.1f}%  {k}" for k, p in perf["server_by_symbol"]]
    return lines


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


async def _pyload(
    url: str, batch: int, connections: int, duration: float, prefix: str, parts: list[str]
) -> dict[str, Any]:
    """The fallback load generator: `connections` keep-alive clients posting in a loop."""
    import aiohttp

    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    latencies: list[float] = []
    ok = bad = errors = 0
    sample = ""
    counter = 0
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        cpu0 = time.process_time()
        start = loop.time()
        deadline = start + duration

        async def client() -> None:
            nonlocal ok, bad, errors, sample, counter
            while loop.time() < deadline:
                body = body_for(parts, prefix, counter + 1, batch)
                counter += batch
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        text = await resp.read()
                        status = resp.status
                except (TimeoutError, aiohttp.ClientError):
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                if status == 202:
                    ok += 1
                else:
                    bad += 1
                    sample = sample or f"{status} {text[:160]!r}"

        await asyncio.gather(*(client() for _ in range(connections)))
        elapsed = loop.time() - start
        cpu = time.process_time() - cpu0
    latencies.sort()

    def pct(q: float) -> float:
        if not latencies:
            return 0.0
        return 1000 * latencies[min(len(latencies) - 1, int(q / 100 * len(latencies)))]

    return {
        "requests": len(latencies),
        "duration_s": elapsed,
        "ok": ok,
        "bad": bad,
        "socket_errors": errors,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": 1000 * latencies[-1] if latencies else 0.0,
        "mean_ms": 1000 * statistics.fmean(latencies) if latencies else 0.0,
        "sample": sample,
        "client_cpu_s": cpu,
    }


def _best_us(fn: Any, items: Sequence[Any], repeat: int = 5) -> float:
    """Best-of-`repeat` microseconds per call of fn(item) over `items`."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - t0)
    return 1e6 * best / len(items)


def _typed_pass(pipeline: Any, site: Any, bodies: list[bytes]) -> dict[str, float]:
    """Per-event cost of the typed pass over whole 100-event bodies (core.wire), if present."""
    prepare_wire = getattr(pipeline, "prepare_wire", None)
    if prepare_wire is None:
        return {}
    from gateway.core.wire import decode_document

    now = time.time()

    def run(body: bytes) -> None:
        items = decode_document(body)
        if items is None or prepare_wire(site, items, prefix="events", now=now) is None:
            raise RuntimeError("the bench's body left the typed pass")

    out = {"wire_100_per_event_us": _best_us(run, bodies) / 100}
    prepare_stored = getattr(pipeline, "prepare_stored", None)
    if prepare_stored is not None:  # a site without profiles: straight to the stored form
        from gateway.core.record import encode_stored
        from gateway.core.wire import is_clean

        def stored(body: bytes) -> None:
            items = decode_document(body)
            done = None
            if items is not None:
                done = prepare_stored(site, items, prefix="events", now=now, clean=is_clean(body))
            if done is None:
                raise RuntimeError("the bench's body left the stored road")
            for s in done[0]:
                encode_stored(s)

        out["stored_100_per_event_us"] = _best_us(stored, bodies) / 100
    return out


async def _micro(config_path: str, parts: list[str], seconds: float) -> dict[str, float]:
    """In-process costs of the gateway's request path, without HTTP (see `budget_lines`)."""
    import uuid

    from aiohttp import web

    from gateway.config import load
    from gateway.core.record import encode
    from gateway.store.base import NewEvent
    from gateway.store.sqlite import SqliteStore
    from gateway.web.api import KeyRing
    from gateway.web.pipeline import Pipeline, Site

    config = load(config_path)
    site = Site.from_config(config.sites[0])
    store = SqliteStore(Path(config.storage.path), synchronous=config.storage.synchronous)
    pipeline = Pipeline(store, clock=time.time)
    keys = KeyRing([site])
    header = f"Bearer {API_KEY}"
    n = 2000
    bodies = [body_for(parts, "m", i, 1) for i in range(n)]
    objs = [json.loads(b)["events"][0] for b in bodies]
    now = time.time()
    events = [pipeline.prepare(site, o, path="events[0]", now=now).event for o in objs]
    big = body_for(parts, "b", 0, 100)
    answer = {"accepted": 1, "deduplicated": 0, "rejected": []}
    out = {
        "auth_us": _best_us(lambda _: keys.site_for(header), range(n)),
        "json_loads_1_us": _best_us(json.loads, bodies),
        "json_loads_100_per_event_us": _best_us(json.loads, [big] * 50) / 100,
        "prepare_us": _best_us(lambda o: pipeline.prepare(site, o, path="events[0]"), objs),
        "encode_us": _best_us(encode, [e for e in events if e is not None]),
        **_typed_pass(pipeline, site, [body_for(parts, f"w{i}", 0, 100) for i in range(20)]),
        "uuid4_us": _best_us(lambda _: uuid.uuid4().hex[:16], range(n)),
        "gateway_answer_us": _best_us(lambda _: web.json_response(answer, status=202), range(n)),
        "bare_answer_us": _best_us(
            lambda _: web.json_response({"accepted": 1}, status=202), range(n)
        ),
    }
    await store.open()
    try:
        records = [encode(e) for e in events if e is not None]
        counter = 0

        async def appender(batch: int, deadline: float) -> int:
            nonlocal counter
            done = 0
            while time.perf_counter() < deadline:
                chunk = []
                for _ in range(batch):
                    counter += 1
                    chunk.append(
                        NewEvent(
                            site=site.config.id,
                            event_name="Purchase",
                            event_id=f"s{counter}",
                            event_time=now,
                            record=records[counter % len(records)],
                            routes=site.routes,
                        )
                    )
                await store.append(chunk, time.time())
                done += batch
            return done

        ready = [e for e in events if e is not None]
        enrich = getattr(pipeline, "enrich", None)  # visitor-profile lookup, where it exists

        async def enricher(batch: int, deadline: float) -> int:
            done = 0
            while time.perf_counter() < deadline:
                await enrich(site, ready[done % n : done % n + batch])
                done += batch
            return done

        for label, tasks, batch in (("enrich_conc64_1", 64, 1), ("enrich_conc64_100", 64, 100)):
            if enrich is None:
                break
            deadline = time.perf_counter() + seconds
            t0 = time.perf_counter()
            total = sum(await asyncio.gather(*(enricher(batch, deadline) for _ in range(tasks))))
            out[f"{label}_per_event_us"] = 1e6 * (time.perf_counter() - t0) / total

        for label, tasks, batch in (
            ("append_seq_1", 1, 1),
            ("append_conc64_1", 64, 1),
            ("append_conc64_100", 64, 100),
        ):
            commits = store.commits
            deadline = time.perf_counter() + seconds
            t0 = time.perf_counter()
            total = sum(await asyncio.gather(*(appender(batch, deadline) for _ in range(tasks))))
            out[f"{label}_per_event_us"] = 1e6 * (time.perf_counter() - t0) / total
            out[f"{label}_events_per_commit"] = total / max(1, store.commits - commits)
    finally:
        await store.close()
    return out


def child_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="ingest.py " + argv[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--url", default="")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--prefix", default="x")
    parser.add_argument("--parts", default="[]")
    parser.add_argument("--config", default="")
    args = parser.parse_args(argv[1:])
    if argv[0] == "_bare":
        run_forever(_serve_bare(args.port))
    elif argv[0] == "_sandbox":
        run_forever(_serve_sandbox(args.port))
    elif argv[0] == "_micro":
        import uvloop

        micro = uvloop.run(_micro(args.config, json.loads(args.parts), args.duration))
        print("BENCH_JSON " + json.dumps(micro), flush=True)
    else:
        import uvloop

        out = uvloop.run(
            _pyload(
                args.url,
                args.batch,
                args.connections,
                args.duration,
                args.prefix,
                json.loads(args.parts),
            )
        )
        print("BENCH_JSON " + json.dumps(out), flush=True)
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
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=180.0,
        help="longest wait (s) for an idle machine before each case; 0: start at once",
    )
    parser.add_argument(
        "--no-breakdown",
        action="store_true",
        help="skip the in-process micro-benchmarks that split the gateway's extra time",
    )
    add_output_args(parser)
    return parse_bench_args(parser, argv)


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] in ("_bare", "_sandbox", "_pyload", "_micro"):
        return child_main(argv)
    args = parse_args(argv)
    loadgen = args.loadgen
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "python"
    elif loadgen == "wrk" and not shutil.which("wrk"):
        print("wrk is not on PATH (apt-get install wrk)", file=sys.stderr)
        return 2
    server_cpu, client_cpu = core_arg(args.server_cpu), core_arg(args.client_cpu)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="signalgate-bench-"))
    global SOURCE, QUIET_WAIT
    SOURCE = ROOT if args.no_snapshot else snapshot_source(workdir)
    QUIET_WAIT = args.quiet_wait
    parts = event_template(int(time.time())).split(ID_MARK)
    settings = Settings(
        loadgen=loadgen,
        connections=args.connections,
        duration=args.duration,
        warmup=args.warmup,
        server_cpu=server_cpu,
        client_cpu=client_cpu,
        template_parts=parts,
        workdir=workdir,
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
