"""The py-spy summaries of bench/collect.py's profiled runs: `hotspots` turns a raw file into
shares and microseconds per request, `profile_lines` prints them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from benchlib import fmt
from benchprofile import SPY_RATE, SPY_ROOTS, gateway_frame, profile_row, spy_stacks


def hotspots(path: Path, cost_us: float, top: int = 20) -> dict[str, Any]:
    """Summarise a py-spy raw file as % of samples and microseconds per request, i.e. that
    share of `cost_us` (the server's measured CPU time per request).

    Non-blocking sampling tears many stacks: their outer frames are lost, the inner ones are
    right. So every sample is charged to its innermost gateway function ("owner": stdlib and
    aiohttp time goes to the gateway code that called it) and module; a sample without any
    gateway frame is "outside the gateway" when its stack is complete (aiohttp, uvloop: the
    part bare has too) and "torn" otherwise (aiohttp, or stdlib called by the gateway).
    """
    threads: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    owner: Counter[str] = Counter()
    module: Counter[str] = Counter()
    total = complete = 0
    for thread, parsed, count in spy_stacks(path):
        whole = parsed[0][0] in SPY_ROOTS
        total += count
        complete += count if whole else 0
        threads[thread] += count
        leaf[f"{parsed[-1][0]} ({parsed[-1][1]})"] += count
        mine = [f for f in parsed if gateway_frame(f[1])]
        if mine:
            owner[f"{mine[-1][0]} ({mine[-1][1]})"] += count
            module[f"{thread}: {mine[-1][1]}"] += count
        else:
            where = "outside the gateway: aiohttp, uvloop" if whole else "torn, no gateway frame"
            owner[f"({thread}, {where})"] += count
            module[f"{thread}: ({where})"] += count
    per_sample_us = cost_us / max(1, total)

    def rows(c: Counter[str], n: int | None = top) -> list[tuple[str, float, float]]:
        return [
            (k, round(100 * v / max(1, total), 1), round(v * per_sample_us, 1))
            for k, v in c.most_common(n)
        ]

    return {
        "samples": total,
        "complete_stacks": complete,
        "threads": rows(threads),
        "modules": rows(module, None),
        "owner": rows(owner),
        "self": rows(leaf),
    }


def profile_lines(report: dict[str, Any]) -> list[str]:
    lines = [
        f"py-spy ({SPY_RATE} Hz, non-blocking, idle excluded): {report['server']} under "
        f"first-hit load, {fmt(report['requests_per_s_while_sampled'])} req/s while sampled, "
        f"{report['samples']:,} samples ({report['complete_stacks']:,} with complete stacks); "
        f"server CPU {report['cpu_us_per_request']:.0f} us/request, split by sample share:",
        "  by thread: "
        + ", ".join(f"{k} {p}% ({us:.0f} us/req)" for k, p, us in report["threads"]),
    ]
    if report["server"] == "gateway":
        lines.append("  by thread and innermost gateway module:")
        lines += [profile_row(item) for item in report["modules"] if item[1] >= 0.5]
        lines.append("  by innermost gateway function (stdlib/aiohttp time charged to its caller):")
        lines += [profile_row(item) for item in report["owner"]]
    lines.append("  by leaf function (self time):")
    lines += [profile_row(item) for item in report["self"]]
    return lines
