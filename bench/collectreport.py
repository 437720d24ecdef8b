"""bench/collect.py's results and verdicts: one `Result` per (case, server) run, the table,
and the gateway against bare per case (median runs by requests/s; target >= TARGET_RATIO)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from benchlib import fmt, median_run

TARGET_RATIO = 0.75
CASES = ("first hit", "returning")


@dataclass
class Result:
    """One (case, server) measurement."""

    case: str
    server: str
    connections: int
    duration_s: float
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    ok_204: int
    non_204: int
    socket_errors: int
    server_cpu_pct: float
    server_cpu_us_per_request: float
    server_core_busy_pct: float
    client_cpu_pct: float
    other_cpu_pct: float
    rows: dict[str, int] | None = None
    expected_rows: int | None = None


def table(results: Sequence[Result]) -> str:
    head = (
        f"{'case':<11}{'server':<9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'204s':>10}"
        f"{'non-204':>9}{'srv CPU':>9}{'us/req':>8}{'core':>6}{'gen CPU':>9}{'other':>7}"
        "  outbox deliveries / 204s, profiles"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        rows = ""
        if r.rows is not None:
            rows = f"{r.rows['deliveries']:,} / {r.expected_rows:,}, {r.rows['profiles']:,}"
        lines.append(
            f"{r.case:<11}{r.server:<9}{fmt(r.requests_per_s):>9}{fmt(r.p50_ms, 2):>9}"
            f"{fmt(r.p99_ms, 2):>9}{r.ok_204:>10,}{r.non_204 + r.socket_errors:>9,}"
            f"{fmt(r.server_cpu_pct):>8}%{fmt(r.server_cpu_us_per_request):>8}"
            f"{fmt(r.server_core_busy_pct):>5}%"
            f"{fmt(r.client_cpu_pct):>8}%{fmt(r.other_cpu_pct):>6}%  {rows}"
        )
    return "\n".join(lines)


def pick(results: Sequence[Result], case: str, server: str) -> Result | None:
    """The median run (by requests/s) of one case and server."""
    return median_run(r for r in results if r.case == case and r.server == server)


def verdicts(results: Sequence[Result]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for case in CASES:
        bare, gw = pick(results, case, "bare"), pick(results, case, "gateway")
        if bare and gw:
            ratio = gw.requests_per_s / bare.requests_per_s
            out[case] = {
                "gateway_requests_per_s": gw.requests_per_s,
                "bare_requests_per_s": bare.requests_per_s,
                "ratio": ratio,
                "target_ratio": TARGET_RATIO,
                "pass": ratio >= TARGET_RATIO,
                "p50_ratio": gw.p50_ms / bare.p50_ms if bare.p50_ms else float("nan"),
                "p99_ratio": gw.p99_ms / bare.p99_ms if bare.p99_ms else float("nan"),
                "bare_cpu_us_per_request": bare.server_cpu_us_per_request,
                "gateway_cpu_us_per_request": gw.server_cpu_us_per_request,
                "cpu_ratio": bare.server_cpu_us_per_request / gw.server_cpu_us_per_request,
            }
    return out


def verdict_lines(v: dict[str, Any]) -> list[str]:
    lines = []
    for case, s in v.items():
        lines.append(
            f"{case:<10}: gateway {fmt(s['gateway_requests_per_s'])} req/s vs bare "
            f"{fmt(s['bare_requests_per_s'])} req/s = {s['ratio']:.0%} of bare "
            f"(target >= {s['target_ratio']:.0%})  {'PASS' if s['pass'] else 'MISS'}"
            f"   [latency gateway/bare p50 x{s['p50_ratio']:.2f}, p99 x{s['p99_ratio']:.2f}]"
        )
        lines.append(
            f"{'':<10}  server CPU per request: gateway {s['gateway_cpu_us_per_request']:.0f} us, "
            f"bare {s['bare_cpu_us_per_request']:.0f} us = {s['cpu_ratio']:.0%} by CPU cost "
            "(less sensitive to other load on the machine)"
        )
    return lines
