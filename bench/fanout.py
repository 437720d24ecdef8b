"""Ingest fan-out benchmark: 100-event `POST /v1/events` with every destination vs one.

Run on demand (never in CI): ``.venv/bin/python bench/fanout.py [--quick] [--json out.json]``.

Two gateway cases in the same run, each a fresh ``signalgate run --no-delivery`` process pinned
to the same core (``--server-cpu``), driven by the same load generator as ``ingest.py`` (wrk or
the Python client, on ``--client-cpu``) with the same realistic ``Purchase`` events:

* **one**: the bench site has one destination, Meta (the baseline);
* **all**: the site has every registered destination (``gateway.destinations.DESTINATIONS``)
  with valid settings from ``bench/platforms.py``, so each accepted event is stored with one
  delivery row per destination.

Destinations point at an unreachable local address (nothing is delivered). The verdict is the
events/s of **all** as a share of **one** (issue #11's target: at least 50%). After each case the
outbox is opened read-only: it must hold every accepted event and one delivery row per event and
destination, so a gateway that skipped the fan-out cannot look fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ingest
from benchlib import (
    Load,
    add_core_args,
    add_output_args,
    add_timing_args,
    banner,
    end_run,
    environment,
    fmt,
    median_run,
    outbox_rows,
    parse_bench_args,
    run_dirs,
    source_warnings,
    wait_quiet,
    write_json,
)
from benchload import API_KEY, Settings, resolve_loadgen, template_parts
from benchservers import INGEST_TOML, start_gateway_config
from ingestreport import Result, table
from platforms import (
    CLICK_IDS,
    UNREACHABLE,
    add_quiet_arg,
    case_label,
    destinations_template,
    registered,
    usable,
)

TARGET_RATIO = 0.50
"""Issue #11: with every destination, at least half the one-destination events/s."""
BASELINE = "meta"


def config_toml(names: Sequence[str]) -> str:
    """The gateway config template of a case whose site enables `names`."""
    return INGEST_TOML + destinations_template(names, UNREACHABLE)


def run_case(
    settings: Settings,
    source: Path,
    names: Sequence[str],
    batch: int,
    tag: str,
    quiet_wait: float,
) -> Result:
    """One gateway with `names` enabled under `batch`-event load; rows checked afterwards."""
    label = case_label(names)
    wait_quiet(quiet_wait)
    server, db = start_gateway_config(
        config_toml(names), settings.workdir, settings.server_cpu, source, key=API_KEY
    )
    try:
        warm, load = ingest.measure(settings, server, label, batch, tag)
    finally:
        server.stop()
    res = ingest.result(label, batch, settings, load)
    res.rows, res.expected_rows = check_rows(label, db, batch, [warm, load], settings, len(names))
    return res


def check_rows(
    name: str,
    db: Path,
    batch: int,
    loads: Sequence[Load],
    settings: Settings,
    destinations: int,
) -> tuple[dict[str, int], int]:
    """The outbox must hold every accepted event and `destinations` delivery rows for each (up
    to the requests cut off at the end of each load run, which may still commit)."""
    rows = outbox_rows(db, states=True)
    accepted = sum(x.ok for x in loads) * batch
    slack = len(loads) * settings.connections * batch
    expected = accepted * destinations
    if rows["events"] < accepted or not expected <= rows["deliveries"] <= expected + (
        slack * destinations
    ):
        raise RuntimeError(
            f"{name}: outbox holds {rows} but {accepted} events were answered 202 to "
            f"{destinations} destination(s), i.e. {expected} delivery rows (allowed surplus "
            f"{slack * destinations}): the gateway is not storing what it accepts"
        )
    return rows, expected


def verdict(results: Sequence[Result], all_count: int) -> dict[str, Any] | None:
    one = median_run(r for r in results if r.server.startswith("1 dest"))
    full = median_run(r for r in results if r.server == f"{all_count} dest")
    if one is None or full is None or all_count < 2:
        return None
    ratio = full.events_per_s / one.events_per_s
    return {
        "one_destination_events_per_s": one.events_per_s,
        "all_destinations_events_per_s": full.events_per_s,
        "destinations": all_count,
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "pass": ratio >= TARGET_RATIO,
    }


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/fanout.py",
        description="100-event POST /v1/events with every destination enabled vs Meta alone.",
    )
    add_timing_args(parser)
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    add_core_args(parser, "core of the load generator")
    add_quiet_arg(parser)
    add_output_args(parser)
    return parse_bench_args(parser, argv)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    loadgen = resolve_loadgen(args.loadgen)
    if loadgen is None:
        return 2
    workdir, source = run_dirs("signalgate-fanout-", args.no_snapshot)
    sys.path.insert(0, str(source))  # the destination list of the code measured
    names = usable(all_names := registered(), sandbox=False)
    if BASELINE not in names:
        print(f"the baseline destination {BASELINE!r} is not usable", file=sys.stderr)
        return 2
    settings = Settings.from_args(
        args,
        workdir,
        loadgen=loadgen,
        template_parts=template_parts(CLICK_IDS),
    )
    env = environment(source, settings, loadgen)
    env["destinations"] = names
    env["skipped_destinations"] = [n for n in all_names if n not in names]
    banner("fan-out", f"{args.batch} events/request", env, settings, "load generator")
    skipped = env["skipped_destinations"]
    print(
        f"  all destinations: {', '.join(names)}"
        + (f" (left out: {', '.join(skipped)})" if skipped else ""),
        flush=True,
    )
    results: list[Result] = []
    status = 0
    try:
        for rnd in range(args.rounds):
            for case in [[BASELINE], names] if len(names) > 1 else [[BASELINE]]:
                print(f"  round {rnd + 1}: {len(case)} destination(s) ...", flush=True)
                tag = f"r{rnd}n{len(case)}"
                results.append(run_case(settings, source, case, args.batch, tag, args.quiet_wait))
    except RuntimeError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        status = 1
    finally:
        end_run(env, source, args.keep, workdir)
    print()
    print(table(results))
    print()
    v = verdict(results, len(names))
    if v is not None:
        print(
            f"fan-out: {v['destinations']} destinations {fmt(v['all_destinations_events_per_s'])} "
            f"events/s vs {BASELINE} alone {fmt(v['one_destination_events_per_s'])} events/s = "
            f"{v['ratio']:.0%} (target >= {v['target_ratio']:.0%})  "
            f"{'PASS' if v['pass'] else 'MISS'}"
        )
    elif len(names) < 2:
        print("fan-out: only one usable destination; nothing to compare")
    source_warnings(env)
    if args.json:
        write_json(
            args.json,
            {
                "environment": env,
                "results": [asdict(r) for r in results],
                "verdict": v,
                "failed": bool(status),
            },
        )
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
