"""The README's first steps: `signalgate demo` and its printed curl, --version, check-config.

The demo runs as a real child process (`python -m gateway demo`, what `make demo` starts) with
free ports and a data directory under tmp_path; the test reads what it prints, runs the printed
curl one-liner with bash exactly as a reader would paste it, and checks that its output shows
the Purchase accepted (202 body) and delivered to the sandbox with the e-mail hashed.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gateway import __version__
from gateway.demo import DEMO_PLATFORMS

ROOT = Path(__file__).resolve().parents[2]
HEX64 = re.compile(r"^[0-9a-f]{64}$")
STARTUP_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without SIGNALGATE* overrides and the example's secrets, plus `extra`."""
    hidden = ("SIGNALGATE", "SHOP_API_KEY", "META_ACCESS_TOKEN")
    env = {k: v for k, v in os.environ.items() if not k.startswith(hidden)}
    env.update(extra)
    return env


def read_banner(proc: subprocess.Popen[bytes], log: Path) -> list[str]:
    """Read the demo's stdout until the admin curl line (the banner's last) or fail in time."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    lines: list[str] = []
    buf = b""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not any("/v1/debug/recent" in line for line in lines):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"demo printed no curl in {STARTUP_TIMEOUT}s: {lines}\n{log.read_text()}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            pytest.fail(f"demo exited with {proc.wait(5)}: {lines}\n{log.read_text()}")
        *complete, buf = (buf + chunk).split(b"\n")
        lines.extend(line.decode() for line in complete)
    return lines


def field(lines: list[str], label: str) -> str:
    for line in lines:
        if line.strip().startswith(label):
            return line.strip()[len(label) :].strip()
    raise AssertionError(f"demo banner has no {label!r} line: {lines}")


def debug_recent(gateway: str, admin: str) -> Any:
    request = urllib.request.Request(
        f"{gateway}/v1/debug/recent", headers={"Authorization": f"Bearer {admin}"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def platform_sandboxes(lines: list[str]) -> dict[str, str]:
    """The banner's "Every platform's sandbox" list: platform title → sandbox URL."""
    start = next(i for i, line in enumerate(lines) if line.startswith("Every platform's sandbox"))
    listed: dict[str, str] = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        title, url = line.rsplit(None, 1)
        listed[title.strip()] = url
    return listed


def all_done(recent: Any) -> bool:
    totals = recent["totals"]
    return len(totals) == len(DEMO_PLATFORMS) and all(
        counts == {"done": 1} for counts in totals.values()
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.mark.timeout(60)
def test_demo_prints_a_curl_that_delivers_a_purchase_to_the_sandbox(tmp_path: Path) -> None:
    curl = shutil.which("curl")
    assert curl is not None, "curl is not installed: the README's demo one-liner needs it"
    port, sandbox_port = free_port(), free_port()
    data_dir = tmp_path / "data"
    log = tmp_path / "demo.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "demo",
                "--port",
                str(port),
                "--sandbox-port",
                str(sandbox_port),
                "--shop-port",
                "0",
                "--data-dir",
                str(data_dir),
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
            env=clean_env(),
        )
    try:
        lines = read_banner(proc, log)
        gateway = field(lines, "gateway")
        assert gateway == f"http://127.0.0.1:{port}"
        assert field(lines, "Meta sandbox").startswith(f"http://127.0.0.1:{sandbox_port}/")
        admin = field(lines, "admin token")
        (one_liner,) = [line.strip() for line in lines if line.strip().startswith("curl -sS -X")]
        assert f"{gateway}/v1/events" in one_liner
        assert f"http://127.0.0.1:{sandbox_port}/_sandbox/events" in one_liner

        shown = subprocess.run(
            ["bash", "-c", one_liner],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        first, _, rest = shown.stdout.partition("\n")
        answer = json.loads(first)
        assert answer["accepted"] == 1, answer
        assert answer["rejected"] == [], answer
        got: dict[str, Any] = json.loads(rest)
        assert len(got["accepted"]) == 1, f"the curl shows no delivered event: {got}"
        event = got["accepted"][0]
        assert event["event_name"] == "Purchase"
        assert event["event_id"] == "ORDER-1001"
        assert event["action_source"] == "website"
        assert HEX64.match(event["user_data"]["em"]), event["user_data"]
        assert "Jane" not in json.dumps(event)
        assert got["rejected"] == []

        # The sandbox records the event a moment before the gateway records the delivery done;
        # every platform's sandbox gets the same Purchase.
        sandboxes = platform_sandboxes(lines)
        assert set(sandboxes) == {platform.title for platform in DEMO_PLATFORMS}
        assert sandboxes["Meta"] == f"http://127.0.0.1:{sandbox_port}/"
        deadline = time.monotonic() + 20
        recent = debug_recent(gateway, admin)
        while not all_done(recent) and time.monotonic() < deadline:
            time.sleep(0.1)
            recent = debug_recent(gateway, admin)
        assert recent["totals"] == {
            f"demo:{platform.name}": {"done": 1} for platform in DEMO_PLATFORMS
        }, recent
        assert {d["event_id"] for d in recent["deliveries"]} == {"ORDER-1001"}
        for title, url in sandboxes.items():
            with urllib.request.urlopen(f"{url}_sandbox/events", timeout=10) as resp:
                seen = json.loads(resp.read())
            assert len(seen["accepted"]) == 1, (title, seen)
            assert seen["rejected"] == [], (title, seen)
            assert "Jane" not in json.dumps(seen), title
        assert (data_dir / "signalgate.db").exists()
    finally:
        stop(proc)
    # The banner (stdout) shows the key and token on purpose; the log (stderr) never does,
    # nor the raw e-mail and phone of the posted Purchase.
    logged = log.read_text(errors="replace").lower()
    api_key = one_liner.split("Bearer ", 1)[1].split("'", 1)[0]
    for secret in (api_key, admin, "jane.doe@example.com", "555-1212", "6505551212"):
        assert secret.lower() not in logged


def test_version_and_check_config_of_the_minimal_example(tmp_path: Path) -> None:
    version = subprocess.run(
        [sys.executable, "-m", "gateway", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(),
        check=False,
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"signalgate {__version__}"

    example = ROOT / "examples" / "minimal.toml"
    command = [sys.executable, "-m", "gateway", "check-config", "--config", str(example)]
    ok = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env=clean_env(SHOP_API_KEY="sg_live_0123456789abcdef", META_ACCESS_TOKEN="EAAB-token"),
        check=False,
    )
    assert (ok.returncode, ok.stdout.strip(), ok.stderr) == (0, "OK", "")

    missing = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env=clean_env(),
        check=False,
    )
    assert missing.returncode == 1
    assert "sites[0].api_keys[0]: environment variable SHOP_API_KEY is not set" in missing.stderr
    assert "META_ACCESS_TOKEN is not set" in missing.stderr
