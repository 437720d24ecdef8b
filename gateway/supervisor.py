"""`signalgate run --workers N`: a supervisor process and N worker processes on one port.

The supervisor serves nothing itself (except the `[metrics]` port, see below). It starts N
copies of `signalgate run --config FILE --worker-slot I`; each is a complete gateway (the usual
start-up and graceful stop of gateway/lifecycle.py) that binds the configured port(s) with
``SO_REUSEPORT``, so the kernel spreads new connections over the workers. What the workers share
and what each keeps:

* shared through the one SQLite store file: the outbox and its delivery leases (a row is
  leased inside a ``BEGIN IMMEDIATE`` transaction, which holds the file's write lock, so two
  workers never lease the same row), dedup keys and the merge window, the order ledger, visitor
  profiles, stats rollups (each worker adds its own counts to the per-minute rows);
* shared through the config and the files beside the store: the cookie key (a generated key is
  created once, atomically, by the supervisor before any worker starts) and the TLS files;
* per worker: the in-memory counters (`/metrics` on the main port and the dashboard show the
  worker that answered; the `[metrics]` port shows the sum, see below), the debug view's rings,
  each route's circuit breaker and pause, the dashboard's login limiter and logout list.

The `[metrics]` listener: the supervisor binds `metrics.host:metrics.port`; each worker serves
its own `/metrics` on a Unix socket in a private temporary directory, and one scrape of the
supervisor reads every worker and answers the merge (gateway/web/metrics_merge.py).

A worker that exits while the supervisor is not stopping is started again after a back-off
(0.5 s, doubling up to 30 s; reset once a worker has run for 30 s) and logged. SIGTERM or SIGINT
to the supervisor is passed on as SIGTERM to every worker, which stops gracefully within
`server.shutdown_grace_seconds`; a worker still running some seconds after that is killed.
The exit status is 1 if a worker failed to start (or had to be killed), else 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from gateway.config import Config

log = logging.getLogger("signalgate.supervisor")

AUTO: Final = "auto"
MAX_WORKERS: Final = 256
READY_PREFIX: Final = "signalgate listening on "
"""The line a worker prints on stdout once it serves (gateway/cli.py)."""
START_TIMEOUT: Final = 60.0
"""Seconds every worker has to print its ready line at start-up."""
STOP_MARGIN: Final = 5.0
"""Seconds past the grace period before a worker that has not exited is killed."""
BACKOFF_FIRST: Final = 0.5
BACKOFF_CAP: Final = 30.0
STABLE_SECONDS: Final = 30.0
"""A worker that ran this long before it died is restarted after the first back-off again."""
_PR_SET_PDEATHSIG: Final = 1


class WorkersError(ValueError):
    """Bad --workers value, or a config several workers cannot share (one line to print)."""


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def parse_workers(text: str, cores: Callable[[], int] = usable_cores) -> int:
    """Return the worker count of `--workers TEXT`: a positive integer or "auto"."""
    value = text.strip().lower()
    if value == AUTO:
        return min(MAX_WORKERS, max(1, cores()))
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise WorkersError(f"--workers: expected a positive integer or 'auto', got {text!r}")
    if int(value) > MAX_WORKERS:
        raise WorkersError(f"--workers: at most {MAX_WORKERS}")
    return int(value)


def sharing_problems(config: Config) -> list[str]:
    """Why this config cannot run as several workers (empty when it can)."""
    problems: list[str] = []
    if config.server.port == 0:
        problems.append(
            "server.port: 0 (any free port) cannot be shared by several workers; set a port"
        )
    if config.acme.enabled:
        problems.append(
            "acme.enabled: an HTTP-01 challenge must be answered by the worker that asked for"
            " it; run one worker with [acme], or several with certificate files ([tls])"
        )
    return problems


@dataclass(frozen=True, slots=True)
class Plan:
    """What the supervisor runs."""

    config_path: str
    workers: int
    url: str
    """The main listener's URL, for the ready line."""
    grace: float
    """`server.shutdown_grace_seconds`."""
    delivery: bool = True
    metrics: tuple[str, int] | None = None
    """`metrics.host`, `metrics.port` when the separate metrics listener is configured."""


def plan_of(config: Config, config_path: str, workers: int, *, delivery: bool) -> Plan:
    """The Plan of a loaded config (check `sharing_problems` first)."""
    server = config.server
    scheme = "https" if config.tls.enabled else "http"
    metrics = (config.metrics.host, config.metrics.port) if config.metrics.port else None
    return Plan(
        config_path=config_path,
        workers=workers,
        url=f"{scheme}://{server.host}:{server.port}",
        grace=server.shutdown_grace_seconds,
        delivery=delivery,
        metrics=metrics,
    )


def worker_command(plan: Plan, slot: int, metrics_socket: str | None) -> list[str]:
    """The command line of worker `slot`."""
    argv = [sys.executable, "-m", "gateway", "run", "--config", plan.config_path]
    argv += ["--worker-slot", str(slot)]
    if not plan.delivery:
        argv.append("--no-delivery")
    if metrics_socket is not None:
        argv += ["--metrics-socket", metrics_socket]
    return argv


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Own process group (a terminal's Ctrl-C reaches the supervisor only, which passes it on),
    and SIGTERM when the supervisor dies, whatever kills it."""
    os.setpgid(0, 0)
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


@dataclass(slots=True)
class _Slot:
    index: int
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    failures: int = 0
    """Consecutive short-lived runs (the back-off's exponent)."""
    restarts: int = 0
    reader: asyncio.Task[None] | None = None


class Supervisor:
    """Starts, watches, restarts and stops the worker processes of one Plan."""

    def __init__(
        self,
        plan: Plan,
        *,
        show: Callable[[str], None],
        command: Callable[[Plan, int, str | None], Sequence[str]] = worker_command,
    ) -> None:
        self.plan = plan
        self.show = show
        self.command = command
        self.slots = [_Slot(i) for i in range(plan.workers)]
        self.stopping = asyncio.Event()
        self.killed = 0
        """Workers that had to be killed at the stop (not gone within the grace period)."""
        self._sockets: Path | None = None

    def metrics_socket(self, slot: int) -> str | None:
        """Where worker `slot` serves its /metrics (None without a `[metrics]` port)."""
        if self._sockets is None:
            return None
        return str(self._sockets / f"worker-{slot}.sock")

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; return the exit status."""
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stopping.set)
                installed.append(sig)
        try:
            with contextlib.ExitStack() as stack:
                if self.plan.metrics is not None:
                    temp = stack.enter_context(tempfile.TemporaryDirectory(prefix="signalgate-"))
                    self._sockets = Path(temp)
                return await self._run()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    async def _run(self) -> int:
        from gateway.web.metrics_merge import MetricsMerger  # aiohttp only when needed

        merger: MetricsMerger | None = None
        if self.plan.metrics is not None:
            sockets = [s for i in range(self.plan.workers) if (s := self.metrics_socket(i))]
            merger = MetricsMerger(sockets)
            try:
                await merger.start(*self.plan.metrics)
            except OSError as exc:
                host, port = self.plan.metrics
                reason = os.strerror(exc.errno).lower() if exc.errno else type(exc).__name__
                log.error("Cannot listen on %s:%d (metrics.port): %s.", host, port, reason)
                return 1
        try:
            if not await self._start_all():
                clean = await self._stop_all()
                return 0 if clean and self.stopping.is_set() else 1  # stopped while starting
            self.show(f"{READY_PREFIX}{self.plan.url} ({self.plan.workers} workers)")
            watchers = [
                asyncio.create_task(self._watch(slot), name=f"watch worker {slot.index}")
                for slot in self.slots
            ]
            await self.stopping.wait()
            log.info("stopping: draining every worker", extra={"status": "stopping"})
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            started = time.monotonic()
            clean = await self._stop_all()
            log.info("stopped in %.1fs", time.monotonic() - started, extra={"status": "stopped"})
            return 0 if clean else 1
        finally:
            if merger is not None:
                await merger.stop()

    async def _spawn(self, slot: _Slot) -> None:
        argv = list(self.command(self.plan, slot.index, self.metrics_socket(slot.index)))
        slot.ready = asyncio.Event()
        slot.proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=_child_setup,
        )
        slot.started = time.monotonic()
        slot.reader = asyncio.create_task(self._read(slot, slot.proc), name=f"worker {slot.index}")
        log.info("worker %d started (pid %d)", slot.index, slot.proc.pid)

    async def _read(self, slot: _Slot, proc: asyncio.subprocess.Process) -> None:
        """Forward the worker's stdout; its ready line sets `slot.ready`."""
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith(READY_PREFIX) and not slot.ready.is_set():
                slot.ready.set()
                log.info("worker %d ready (pid %d)", slot.index, proc.pid)
            elif line:
                self.show(line)

    async def _start_all(self) -> bool:
        """Start every worker; True once all are ready, False if one exits or is too slow."""
        for slot in self.slots:
            try:
                await self._spawn(slot)
            except OSError as exc:
                log.error("Cannot start worker %d: %s.", slot.index, type(exc).__name__)
                return False
        deadline = time.monotonic() + START_TIMEOUT
        for slot in self.slots:
            proc = slot.proc
            assert proc is not None
            ready = asyncio.create_task(slot.ready.wait())
            exited = asyncio.create_task(proc.wait())
            stop = asyncio.create_task(self.stopping.wait())
            left = max(0.0, deadline - time.monotonic())
            await asyncio.wait({ready, exited, stop}, timeout=left, return_when="FIRST_COMPLETED")
            for task in (ready, exited, stop):
                task.cancel()
            if slot.ready.is_set():
                continue
            if self.stopping.is_set():
                log.info("Stopped before every worker was ready.")
            elif proc.returncode is not None:
                log.error(
                    "Worker %d failed to start (%s).", slot.index, _exit_text(proc.returncode)
                )
            else:
                log.error("Worker %d not ready after %.0fs.", slot.index, START_TIMEOUT)
            return False
        return True

    async def _watch(self, slot: _Slot) -> None:
        """Restart the worker whenever it exits (with a back-off) until cancelled."""
        while True:
            proc = slot.proc
            assert proc is not None
            code = await proc.wait()
            if slot.reader is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(slot.reader, 5.0)
            if self.stopping.is_set():  # the stop signal reached the workers first (systemd)
                return
            lived = time.monotonic() - slot.started
            slot.failures = 0 if lived >= STABLE_SECONDS else slot.failures + 1
            delay = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** max(0, slot.failures - 1))
            log.warning(
                "worker %d (pid %d) exited (%s) after %.1fs; restarting in %.1fs",
                slot.index,
                proc.pid,
                _exit_text(code),
                lived,
                delay,
            )
            await asyncio.sleep(delay)
            if self.stopping.is_set():
                return
            slot.restarts += 1
            try:
                await self._spawn(slot)
            except OSError as exc:
                log.error("Cannot restart worker %d: %s.", slot.index, type(exc).__name__)
                slot.started = time.monotonic()
                slot.proc = proc  # its wait() returns at once: the next round backs off more

    async def _stop_all(self) -> bool:
        """SIGTERM every running worker, wait the grace period (plus a margin), kill the rest;
        True if every worker exited by itself with status 0."""
        procs = [s.proc for s in self.slots if s.proc is not None and s.proc.returncode is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        waits = [asyncio.create_task(p.wait()) for p in procs]
        clean = True
        if waits:
            _, late = await asyncio.wait(waits, timeout=self.plan.grace + STOP_MARGIN)
            for proc in procs:
                if proc.returncode is None:
                    log.error("Worker (pid %d) did not stop in time; killing it.", proc.pid)
                    self.killed += 1
                    clean = False
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            if late:
                await asyncio.wait(late, timeout=10.0)
        for slot in self.slots:
            if slot.reader is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(slot.reader, 5.0)
        # -SIGTERM: a worker still starting (no handler yet) that the signal simply ended.
        return clean and all(proc.returncode in (0, -signal.SIGTERM) for proc in procs)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"status {code}"


def supervise(plan: Plan, show: Callable[[str], None]) -> int:
    """Run the supervisor of `plan` to its end; return the exit status. `show` prints a line
    on stdout (the ready line, and the workers' own stdout lines)."""
    return asyncio.run(Supervisor(plan, show=show).run())
