"""Platform sandboxes in child processes for the delivery benches (delivery.py, drain_rss.py):
each platform's sandbox on a port of its own, a counting middleware that tallies what it accepted
and forgets it, and a control port that tells the ports and the tallies. Run as a child:
``sandboxes.py _sandboxes --port CONTROL --sandboxes meta,google,...``."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchlib import free_port
from benchservers import Server, http_get_json, run_forever, serve_app
from platforms import PLATFORMS


@dataclass
class Tally:
    """What one sandbox saw (kept by the counting middleware)."""

    accepted: int = 0
    rejected: int = 0
    requests: int = 0
    first: float = math.nan
    """time.monotonic() of the first request (system-wide clock, comparable across processes)."""
    last: float = math.nan
    """time.monotonic() of the last request that accepted events."""
    sample: str = ""
    """The first rejection, shortened (synthetic bench data only)."""


def counting(sandbox: Any, tally: Tally) -> Any:
    """An aiohttp middleware that counts every request and what the sandbox recorded for it,
    then forgets the recorded events (the bench sends hundreds of thousands)."""
    from aiohttp import web

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        tally.requests += 1
        if math.isnan(tally.first):
            tally.first = time.monotonic()
        try:
            return await handler(request)  # type: ignore[no-any-return]
        finally:
            recorder = sandbox.recorder
            if recorder.accepted:
                tally.accepted += len(recorder.accepted)
                tally.last = time.monotonic()
                recorder.accepted.clear()
            if recorder.rejected:
                tally.rejected += len(recorder.rejected)
                if not tally.sample:
                    tally.sample = json.dumps(recorder.rejected[0], default=str)[:400]
                recorder.rejected.clear()

    return middleware


async def _serve_sandboxes(names: Sequence[str], control: int) -> None:
    """Serve each platform's sandbox on a port of its own (chosen by the kernel: no race with
    other programs for a port picked in advance), and on `control` the ports (``/ports``) and
    the tallies (``/stats``)."""
    from aiohttp import web

    tallies: dict[str, Tally] = {}
    ports: dict[str, int] = {}
    runners = []
    for name in names:
        sandbox = PLATFORMS[name].build_sandbox(name)
        tallies[name] = Tally()
        app = sandbox.app()
        app.middlewares.append(counting(sandbox, tallies[name]))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        ports[name] = next(a[1] for a in runner.addresses if isinstance(a, tuple))

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({name: asdict(t) for name, t in tallies.items()})

    async def bound(request: web.Request) -> web.Response:
        return web.json_response(ports)

    control_app = web.Application()
    control_app.router.add_get("/stats", stats)
    control_app.router.add_get("/ports", bound)
    try:
        await serve_app(control_app, control, "sandboxes")
    finally:
        for runner in runners:
            await runner.cleanup()


def main(argv: Sequence[str]) -> int:
    """``sandboxes.py _sandboxes --port CONTROL --sandboxes NAMES``: serve until SIGINT."""
    parser = argparse.ArgumentParser(prog="sandboxes.py _sandboxes")
    parser.add_argument("--port", type=int, required=True, help="control port")
    parser.add_argument("--sandboxes", required=True, help="platform names, comma-separated")
    args = parser.parse_args(argv[1:])
    run_forever(_serve_sandboxes(args.sandboxes.split(","), args.port))
    return 0


@dataclass
class SandboxProcess:
    """One sandbox child: its server (the control port) and the platforms it serves."""

    server: Server
    ports: dict[str, int]

    def stats(self) -> dict[str, Tally]:
        doc = http_get_json(self.server.port, "/stats")
        return {name: Tally(**t) for name, t in doc.items()}


def start_sandboxes(
    names: Sequence[str], procs: int, cpus: Sequence[int | None], workdir: Path, source: Path
) -> list[SandboxProcess]:
    """Start `procs` sandbox processes (platforms dealt out in turn, process i on cpus[i])."""
    started: list[SandboxProcess] = []
    try:
        for i in range(min(procs, len(names))):
            control = free_port()
            cmd = [sys.executable, str(Path(__file__).resolve()), "_sandboxes"]
            cmd += ["--port", str(control), "--sandboxes", ",".join(names[i::procs])]
            server = Server(f"sandboxes{i}", cmd, cpus[i % len(cpus)], control, workdir, source)
            started.append(SandboxProcess(server, {}))
            started[-1].ports = dict(http_get_json(control, "/ports"))
    except BaseException:
        for proc in started:
            proc.server.stop()
        raise
    return started


def tallies(processes: Sequence[SandboxProcess]) -> dict[str, Tally]:
    out: dict[str, Tally] = {}
    for proc in processes:
        out.update(proc.stats())
    return out


def tally_text(seen: dict[str, Tally]) -> str:
    """Per platform: accepted/rejected and the first rejection, for error messages."""
    return "; ".join(
        f"{name}: {t.accepted} accepted, {t.rejected} rejected"
        + (f", first rejection {t.sample}" if t.sample else "")
        for name, t in seen.items()
    )


def sandbox_urls(processes: Sequence[SandboxProcess]) -> dict[str, str]:
    """Each platform's sandbox base URL."""
    return {n: f"http://127.0.0.1:{p.ports[n]}" for p in processes for n in p.ports}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
