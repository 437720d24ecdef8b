"""What the ingest bench reports: its `Result` rows, their table, the verdicts against the
targets (single event, 100 events per request, ``--audit``), where the gateway's extra time goes
(``budget``) and the py-spy/perf profile summaries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from benchlib import fmt, median_run
from benchprofile import SPY_RATE, profile_row

TARGET_SINGLE_RATIO = 0.80


TARGET_BATCH_EVENTS = 20_000.0


BUSY_OTHER_PCT = 20.0
"""Cases during which other processes used more CPU than this (% of a core) are flagged."""


TARGET_AUDIT_RATIO = 0.95
"""`--audit`: events/s with rollups and /metrics scrapes on, as a share of them off (#12)."""


AUDIT_SCRAPE_SECONDS = 1.0
"""`--audit`: the on case scrapes /metrics this often (Prometheus' default is 15 s or more)."""


AUDIT_FLUSH_SECONDS = 1
"""`--audit`: the on case writes its rollups this often (the default is 60 s)."""


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


AUDIT_OFF = "audit off"


AUDIT_ON = "audit on"


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
