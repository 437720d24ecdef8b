"""`signalgate replay` and `signalgate resume` against a real `python -m gateway run` process.

The Meta sandbox (in this test's event loop) refuses every event by id, so each becomes a dead
letter; the knob is cleared and `signalgate replay --all` (a child process reading the same
config for the URL and admin token) replays the route in pages, printing a progress line per
page. Every event must then reach the sandbox exactly once, and a second replay sends nothing.
`signalgate resume` lifts a credentials pause long before pause_seconds would have.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import assert_no_planted, auth
from test_gateway_crash import Gateway, free_port, purchase, write_config
from test_gateway_lifecycle import clean_env

ROUTE = "shop:meta"
N = 600
"""More than one replay page (500): the progress shows two steps."""


def cli(config: Path, *args: str) -> Awaitable[subprocess.CompletedProcess[str]]:
    """Run `python -m gateway <args> --config F` off the loop (the loop serves the sandbox)."""
    return asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        check=False,
    )


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.1)


async def post_all(session: aiohttp.ClientSession, url: str, ids: list[str]) -> None:
    for start in range(0, len(ids), 200):
        events = [
            {**purchase(event_id, i), "event_id": event_id}
            for i, event_id in enumerate(ids[start : start + 200], start)
        ]
        async with session.post(f"{url}/v1/events", json={"events": events}, headers=auth()) as r:
            assert r.status == 202, await r.text()


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_replay_and_resume_from_the_command_line(tmp_path: Path, meta_sandbox: Any) -> None:
    sandbox, sandbox_url = meta_sandbox
    port = free_port()
    config = write_config(tmp_path, port, sandbox_url)
    gateway = Gateway(config, port, tmp_path / "gateway.log")
    ids = [f"cli-{i}" for i in range(N)]
    outputs: list[str] = []
    async with aiohttp.ClientSession() as session:
        try:
            await gateway.start(session)
            sandbox.faults.reject_event_ids = set(ids)
            await post_all(session, gateway.url, ids)

            async def all_dead() -> bool:
                return ((await gateway.totals(session)) or {}).get("dead") == N

            await until(all_dead, 120.0, f"{N} dead letters\n{gateway.log_tail()}")
            sandbox.faults.reject_event_ids = set()

            done = await cli(config, "replay", "--route", ROUTE, "--all")
            outputs += [done.stdout, done.stderr]
            assert done.returncode == 0, done.stderr
            lines = done.stdout.splitlines()
            assert lines[0].startswith(f"replay {ROUTE} [")
            assert lines[0].endswith(f"500/{N}  83%")
            assert lines[1] == f"replay {ROUTE} [{'#' * 30}] {N}/{N} 100%"
            assert lines[2] == f"{ROUTE}: {N} replayed, 0 skipped"
            assert len(lines) == 3

            async def all_delivered() -> bool:
                return len(sandbox.recorder.accepted) >= N

            await until(all_delivered, 60.0, f"the replayed events\n{gateway.log_tail()}")
            await asyncio.sleep(0.5)  # a duplicate would arrive now
            seen = Counter(e["event_id"] for e in sandbox.recorder.accepted)
            assert set(seen) == set(ids)
            assert set(seen.values()) == {1}

            requests = sandbox.recorder.requests
            again = await cli(config, "replay", "--route", ROUTE, "--all")
            outputs += [again.stdout, again.stderr]
            assert again.returncode == 0, again.stderr
            assert again.stdout.splitlines()[-1] == f"{ROUTE}: 0 replayed, 0 skipped"
            by_id = await cli(config, "replay", "--route", ROUTE, "--ids", "1,2,3")
            assert by_id.returncode == 0, by_id.stderr
            assert by_id.stdout.splitlines() == [
                f"replay {ROUTE} [{'#' * 30}] 3/3 100%",
                f"{ROUTE}: 0 replayed, 3 skipped",
            ]
            await asyncio.sleep(0.5)
            assert sandbox.recorder.requests == requests  # the second replay sent nothing

            # Usage errors exit 2; an unreachable gateway or an unknown route exit 1.
            for args in (("--ids", "1,x"), ("--ids", "1", "--all"), ()):
                usage = await cli(config, "replay", "--route", ROUTE, *args)
                assert usage.returncode == 2, (args, usage.stderr)
            closed = f"http://127.0.0.1:{free_port()}"
            down = await cli(config, "replay", "--route", ROUTE, "--all", "--url", closed)
            assert down.returncode == 1
            assert down.stderr.startswith("signalgate: POST /v1/admin/replay failed:")
            unknown = await cli(config, "resume", "--route", "shop:nowhere")
            assert unknown.returncode == 1
            assert "answered 404: no such route" in unknown.stderr
            assert "Traceback" not in down.stderr + unknown.stderr

            # A credentials pause (pause_seconds 300) is lifted by `signalgate resume`.
            sandbox.faults.token_expired = True
            held = [f"held-{i}" for i in range(3)]
            await post_all(session, gateway.url, held)

            async def paused() -> bool:
                async with session.get(f"{gateway.url}/readyz") as resp:
                    return resp.status == 503

            await until(paused, 30.0, "the route to pause")
            sandbox.faults.token_expired = False
            resumed = await cli(config, "resume", "--route", ROUTE)
            outputs += [resumed.stdout, resumed.stderr]
            assert resumed.returncode == 0, resumed.stderr
            assert resumed.stdout == f"{ROUTE}: was paused; 3 waiting rows due now\n"

            async def held_delivered() -> bool:
                return set(held) <= {e["event_id"] for e in sandbox.recorder.accepted}

            await until(held_delivered, 20.0, f"the held rows\n{gateway.log_tail()}")
        finally:
            await gateway.stop_all()
    assert_no_planted([*outputs, gateway.log.read_text(errors="replace")], "replay CLI run")
