"""Command line: `signalgate run | demo | check-config | check-site | healthcheck | replay | resume
| audit | certs dev`.

The only place that prints and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway import __version__, admin_client, audit_cli, healthcheck, sitecheck, supervisor
from gateway.app import cookie_key
from gateway.config import Config, ConfigError, load
from gateway.config_warnings import warnings as config_warnings
from gateway.demo import run_demo
from gateway.devcerts import DevCertError, write_dev_certs
from gateway.lifecycle import StartupError, WorkerSlot, prepare_sqlite_store, serve
from gateway.store.base import NOT_REPLAYABLE, DeadReason
from gateway.telemetry import setup_logging, tag_worker
from gateway.web.static import AssetMissing

GC_YOUNG_THRESHOLD = 200_000
"""Young-generation GC threshold of the server process (see `_run`)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return _check(args.config)
    if args.command == "healthcheck":
        return _healthcheck(args.config, args.url, args.timeout)
    if args.command == "check-site":
        return _check_site(args)
    if args.command in ("replay", "resume"):
        return _admin_command(args, parser)
    if args.command == "audit":
        return _audit(args)
    if args.command == "certs":
        return _dev_certs(args.hosts, Path(args.dir))
    if args.command == "run":
        return _run_command(args)
    return _demo(args)


def _parser() -> argparse.ArgumentParser:
    """The command line: one subcommand each (the admin, check-site and audit ones are built
    by their own modules' parsers)."""
    parser = argparse.ArgumentParser(prog="signalgate", description="First-party tracking gateway.")
    parser.add_argument("--version", action="version", version=f"signalgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve with a config file")
    run.add_argument("--config", required=True, help="TOML config file")
    run.add_argument(
        "--no-delivery", action="store_true", help="accept and store only; run no delivery workers"
    )
    run.add_argument(
        "--workers",
        default="1",
        metavar="N",
        help="processes serving the same port(s) and sharing the store: a number, or 'auto'"
        " for one per usable core (default: 1)",
    )
    run.add_argument("--worker-slot", type=int, default=None, help=argparse.SUPPRESS)
    run.add_argument("--metrics-socket", default=None, help=argparse.SUPPRESS)
    check = sub.add_parser("check-config", help="validate a config file; exit 1 on errors")
    check.add_argument("--config", required=True)
    health = sub.add_parser(
        "healthcheck", help="exit 1 unless the running gateway answers /healthz and its scripts"
    )
    health.add_argument("--config", required=True, help="the running gateway's TOML config")
    health.add_argument("--url", default=None, help="base URL; default: from [server]")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds per request")
    _admin_parsers(sub)
    _check_site_parser(sub)
    audit_cli.add_parser(sub)
    demo = sub.add_parser(
        "demo", help="run on embedded defaults against a local sandbox of every platform"
    )
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--sandbox-port", type=int, default=8090)
    demo.add_argument("--shop-port", type=int, default=8081)
    demo.add_argument("--data-dir", default=None, help="default: a fresh temporary directory")
    certs = sub.add_parser("certs", help="certificates for serving HTTPS ([tls])")
    certs_sub = certs.add_subparsers(dest="certs_command", required=True)
    dev = certs_sub.add_parser("dev", help="a local CA and a certificate for HOST… (testing only)")
    dev.add_argument("hosts", nargs="+", metavar="HOST", help="DNS names or IP addresses")
    dev.add_argument("--dir", default="certs", help="output directory (default: certs/)")
    return parser


def _audit(args: argparse.Namespace) -> int:
    outcome = audit_cli.run(args)
    if outcome.out:
        print(outcome.out)
    if outcome.err:
        print(f"signalgate: {outcome.err}", file=sys.stderr)
    return outcome.status


def _run_command(args: argparse.Namespace) -> int:
    """`signalgate run`: one process, a supervisor of N workers, or a worker it started."""
    try:
        config = load(args.config)
    except ConfigError as exc:
        _print_errors(exc)
        return 1
    level = os.environ.get("SIGNALGATE_LOG_LEVEL", config.server.log_level)
    if level.upper() not in logging.getLevelNamesMapping():
        print(f"signalgate: SIGNALGATE_LOG_LEVEL: unknown level {level!r}", file=sys.stderr)
        return 1
    try:
        workers = supervisor.parse_workers(args.workers)
    except supervisor.WorkersError as exc:
        print(f"signalgate: {exc}", file=sys.stderr)
        return 1
    setup_logging(level.upper(), config.server.log_format)
    worker = None
    if args.worker_slot is not None:  # started by the supervisor (gateway/supervisor.py)
        worker = WorkerSlot(args.worker_slot, args.metrics_socket)
        tag_worker(args.worker_slot)
    try:
        if worker is None and workers > 1:
            return _supervise(args.config, config, workers, delivery=not args.no_delivery)
        return _serve(_run(config, delivery=not args.no_delivery, worker=worker))
    except StartupError as exc:
        print(f"signalgate: {exc}", file=sys.stderr)
        return 1


def _demo(args: argparse.Namespace) -> int:
    setup_logging(os.environ.get("SIGNALGATE_LOG_LEVEL", "INFO"))
    return _serve(
        run_demo(
            args.host,
            args.port,
            args.sandbox_port,
            args.shop_port,
            args.data_dir,
            show=lambda text: print(text, flush=True),
        )
    )


def _dev_certs(hosts: list[str], directory: Path) -> int:
    try:
        made = write_dev_certs(directory, hosts, datetime.now(UTC))
    except DevCertError as exc:
        print(f"signalgate: {exc}", file=sys.stderr)
        return 1
    print(made.summary())
    return 0


def _check(path: str) -> int:
    try:
        config = load(path)
    except ConfigError as exc:
        _print_errors(exc)
        return 1
    for key, reason in config_warnings(config):
        print(f"warning: {key}: {reason}", file=sys.stderr)
    print("OK")
    return 0


def _healthcheck(config_path: str, url: str | None, timeout: float) -> int:
    try:
        config = load(config_path)
    except ConfigError as exc:
        _print_errors(exc)
        return 1
    problems = healthcheck.check(
        url or healthcheck.local_base_url(config), healthcheck.probes(config), timeout
    )
    if problems:
        print("signalgate healthcheck: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


# --- cookie and Safari check (gateway/sitecheck.py) ---
def _check_site_parser(sub: Any) -> None:
    cmd = sub.add_parser(
        "check-site",
        help="would Safari cap the gateway's cookies? exit 0 no, 1 yes (or unknown), 2 error",
    )
    cmd.add_argument(
        "url", help="the gateway as pages reach it: …/selfcheck, its base URL or its loader URL"
    )
    cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    cmd.add_argument(
        "--page-host",
        action="append",
        default=[],
        metavar="HOST",
        help="host the shop's pages are served from (repeatable); default: from the gateway",
    )
    cmd.add_argument("--timeout", type=float, default=10.0, help="seconds for the fetch")


def _check_site(args: argparse.Namespace) -> int:
    return sitecheck.run(
        args.url,
        as_json=args.json,
        page_hosts=args.page_host,
        timeout=args.timeout,
        show=print,
        warn=lambda line: print(line, file=sys.stderr),
    )


# --- end cookie and Safari check ---


# --- dead letters: replay / resume (gateway/admin_client.py) ---
def _admin_parsers(sub: Any) -> None:
    for name, text in (
        ("replay", "make dead letters of a route pending again (running gateway's admin API)"),
        ("resume", "lift a paused route's pause now (running gateway's admin API)"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--config", required=True, help="the running gateway's TOML config")
        cmd.add_argument("--route", required=True, help="<site>:<destination>, e.g. shop:meta")
        cmd.add_argument("--url", default=None, help="base URL; default: from [server]")
        cmd.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
        if name == "replay":
            which = cmd.add_mutually_exclusive_group(required=True)
            which.add_argument("--ids", help="comma-separated dead-letter ids, e.g. 1,2,3")
            which.add_argument("--all", action="store_true", help="every dead letter of the route")
            cmd.add_argument(
                "--reason",
                default=None,
                choices=sorted(r.value for r in DeadReason if r not in NOT_REPLAYABLE),
                help="only dead letters of this reason",
            )


def _admin_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    ids: list[int] | None = None
    if args.command == "replay" and args.ids is not None:
        parts = [p.strip() for p in args.ids.split(",") if p.strip()]
        if not parts or not all(p.isascii() and p.isdigit() and int(p) > 0 for p in parts):
            parser.error("--ids: expected comma-separated positive integers, e.g. 1,2,3")
        ids = [int(p) for p in parts]
    try:
        config = load(args.config)
    except ConfigError as exc:
        _print_errors(exc)
        return 1
    if config.server.admin_token is None:
        print("signalgate: server.admin_token is not set: no admin API", file=sys.stderr)
        return 1
    client = admin_client.AdminClient(
        args.url or healthcheck.local_base_url(config),
        config.server.admin_token.value,
        args.timeout,
    )
    tty = sys.stdout.isatty()  # a terminal: one bar redrawn in place; else a line per page

    def show(step: admin_client.Progress) -> None:
        line = f"replay {args.route} {admin_client.bar(step.done, step.total)}"
        print("\r" + line if tty else line, end="" if tty else "\n", flush=True)

    try:
        if args.command == "resume":
            answer = admin_client.resume(client, args.route)
            state = "was paused" if answer.get("was_paused") else "was not paused"
            print(f"{args.route}: {state}; {answer.get('released', 0)} waiting rows due now")
            return 0
        summary = admin_client.replay(client, args.route, ids, args.reason, show)
    except admin_client.AdminError as exc:
        if tty:
            print()
        print(f"signalgate: {exc}", file=sys.stderr)
        return 1
    if tty:
        print()
    print(f"{args.route}: {summary.replayed} replayed, {summary.skipped} skipped")
    if summary.paused_reason is not None:
        print(
            f"warning: {args.route} is paused ({summary.paused_reason}): the replayed rows wait;"
            f" run signalgate resume --route {args.route} once it is fixed",
            file=sys.stderr,
        )
    return 0


# --- end dead letters ---


def _print_errors(exc: ConfigError) -> None:
    if len(exc.errors) == 1 and exc.errors[0][0] == "(file)":  # missing, unreadable, not TOML
        print(f"signalgate: {exc.errors[0][1]}", file=sys.stderr)
        return
    print(f"config has {len(exc.errors)} error(s):", file=sys.stderr)
    for key, reason in exc.errors:
        print(f"  {key}: {reason}", file=sys.stderr)


def _serve(coro: Any) -> int:
    """Run the server coroutine until interrupted; a missing browser asset is one line, exit 2."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        runner = asyncio.run
    try:
        with contextlib.suppress(KeyboardInterrupt):
            return int(runner(coro) or 0)
    except AssetMissing as exc:
        print(f"signalgate: {exc}", file=sys.stderr)
        return 2
    return 0


def _supervise(path: str, config: Config, workers: int, *, delivery: bool) -> int:
    """`run --workers N` (N > 1): the supervisor of N worker processes."""
    problems = supervisor.sharing_problems(config)
    if problems:
        for problem in problems:
            print(f"signalgate: --workers {workers}: {problem}", file=sys.stderr)
        return 1
    if config.storage.backend != "postgres":
        prepare_sqlite_store(config)  # once, before N workers race to create the new file
    if config.server.cookie_secret is None and (config.sites or config.server.admin_token):
        cookie_key(config)  # a generated key: created here once, read by every worker
    return supervisor.supervise(
        supervisor.plan_of(config, path, workers, delivery=delivery),
        show=lambda line: print(line, flush=True),
    )


async def _run(config: Config, *, delivery: bool = True, worker: WorkerSlot | None = None) -> None:
    def ready(url: str) -> None:
        # Long-lived start-up objects leave the GC's view, and young-generation collections
        # run less often. A young collection starts once the count of live container objects
        # has grown by the threshold, and then walks every one of them; under load that growth
        # is mostly the in-flight requests' parsed events, which are alive (nothing to collect)
        # and freed by reference counting moments later. At 50,000, 64 connections posting
        # 100-event batches set off ~5 collections a second, 6.5% of the CPU; at 200,000 none,
        # while cycles (rare here) are still collected once that much garbage has piled up.
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
        print(f"signalgate listening on {url}", flush=True)

    await serve(config, delivery=delivery, on_ready=ready, worker=worker)  # until SIGTERM / SIGINT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
