"""The supervisor's loop with stand-in workers (small Python programs): a worker that dies is
started again with a growing back-off, a worker that never gets ready fails the start, and
SIGTERM stops every worker, killing one that ignores it once the grace period is over."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence

import pytest

import gateway.supervisor as supervisor_module
from gateway.supervisor import READY_PREFIX, Plan, Supervisor

READY = f"print({READY_PREFIX + 'http://x'!r}, flush=True)"


def plan(workers: int = 2, grace: float = 1.0) -> Plan:
    return Plan(config_path="unused.toml", workers=workers, url="http://x:1", grace=grace)


def program(code: str) -> object:
    def command(_plan: Plan, slot: int, _socket: str | None) -> Sequence[str]:
        return [sys.executable, "-c", code.replace("SLOT", str(slot))]

    return command


async def run_until(sup: Supervisor, seconds: float) -> tuple[int, float]:
    task = asyncio.ensure_future(sup.run())
    await asyncio.sleep(seconds)
    began = time.monotonic()
    sup.stopping.set()
    code = await asyncio.wait_for(task, 30)
    return code, time.monotonic() - began


async def test_a_dying_worker_is_restarted_with_a_growing_back_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lines: list[str] = []
    # Worker 0 serves until stopped; worker 1 dies 0.2 s after each start.
    code = (
        f"import sys, time, signal\n{READY}\nprint('hello from SLOT', flush=True)\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        "time.sleep(0.2 if SLOT == 1 else 60)\nsys.exit(3)\n"
    )
    sup = Supervisor(plan(), show=lines.append, command=program(code))  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="signalgate.supervisor"):
        task = asyncio.ensure_future(sup.run())
        deadline = time.monotonic() + 30
        while sup.slots[1].restarts < 2 and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.02)
        sup.stopping.set()
        status = await asyncio.wait_for(task, 30)
    assert status == 0
    assert sup.slots[1].restarts == 2  # stopped during the third back-off (2 s)
    assert sup.slots[0].restarts == 0
    exits = [r.getMessage() for r in caplog.records if "exited (status 3)" in r.getMessage()]
    assert exits
    assert "restarting in 0.5s" in exits[0]
    assert "restarting in 1.0s" in exits[1]
    # One ready line for the whole (its workers' own are not passed on), printed once.
    assert [line for line in lines if line.startswith(READY_PREFIX)] == [
        f"{READY_PREFIX}http://x:1 (2 workers)"
    ]
    assert "hello from 0" in lines
    assert "hello from 1" in lines


async def test_a_worker_that_exits_before_it_is_ready_fails_the_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    code = f"import sys, time\nif SLOT == 1: sys.exit(2)\n{READY}\ntime.sleep(60)\n"
    sup = Supervisor(plan(), show=lambda line: None, command=program(code))  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="signalgate.supervisor"):
        status = await asyncio.wait_for(sup.run(), 30)
    assert status == 1
    assert "Worker 1 failed to start (status 2)." in caplog.messages
    assert sup.slots[0].proc is not None
    assert sup.slots[0].proc.returncode == -signal.SIGTERM  # the ready one was stopped


async def test_a_worker_ignoring_sigterm_is_killed_after_the_grace_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervisor_module, "STOP_MARGIN", 0.3)
    code = (
        "import signal, sys, time\n"
        "if SLOT == 0: signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "else: signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        f"{READY}\ntime.sleep(60)\n"
    )
    sup = Supervisor(plan(grace=0.5), show=lambda line: None, command=program(code))  # type: ignore[arg-type]
    status, took = await run_until(sup, 1.0)
    assert status == 1
    assert sup.killed == 1
    assert 0.7 <= took < 10
    procs = [s.proc for s in sup.slots]
    assert [p.returncode for p in procs if p is not None] == [-signal.SIGKILL, 0]


async def test_workers_die_with_the_supervisor() -> None:
    """PR_SET_PDEATHSIG: a worker is sent SIGTERM when its supervisor is gone, whatever killed
    it (here the supervisor is a child process running the real `Supervisor`)."""
    script = (
        "import asyncio, sys\n"
        "from gateway.supervisor import Plan, Supervisor\n"
        "plan = Plan(config_path='x', workers=1, url='http://x:1', grace=1.0)\n"
        'code = \'import os, time; print("signalgate listening on x", flush=True);'
        " print(os.getpid(), flush=True); time.sleep(60)'\n"
        "cmd = lambda p, s, m: [sys.executable, '-c', code]\n"
        "asyncio.run(Supervisor(plan, show=lambda l: print(l, flush=True), command=cmd).run())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    worker_pid = None
    for _ in range(3):
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        if line.isdigit():
            worker_pid = int(line)
            break
    assert worker_pid is not None
    proc.kill()
    await proc.wait()
    for _ in range(200):
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.05)
    else:
        os.kill(worker_pid, signal.SIGKILL)
        pytest.fail("the worker outlived its supervisor")
