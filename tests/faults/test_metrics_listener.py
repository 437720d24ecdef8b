"""`python -m gateway run` with `[metrics] port`: it serves, and a busy port is one line."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from conftest import ADMIN_TOKEN, assert_no_planted
from test_gateway_crash import free_port
from test_gateway_lifecycle import assert_one_line, clean_env, lifecycle_config, run_once


def with_metrics(config: Path, port: int) -> Path:
    config.write_text(config.read_text() + f'\n[metrics]\nhost = "127.0.0.1"\nport = {port}\n')
    return config


def test_busy_metrics_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = with_metrics(lifecycle_config(tmp_path, free_port(), "http://127.0.0.1:9"), port)
        done = run_once(config)
    assert_one_line(
        done,
        f"signalgate: cannot listen on 127.0.0.1:{port} (metrics.port): address already in use",
    )


def test_the_metrics_port_serves_while_the_gateway_runs(tmp_path: Path) -> None:
    main, side = free_port(), free_port()
    config = with_metrics(lifecycle_config(tmp_path, main, "http://127.0.0.1:9"), side)
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        answer = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                answer = requests.get(f"http://127.0.0.1:{side}/metrics", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert answer is not None, "the metrics listener never answered"
        assert answer.status_code == 200
        assert "signalgate_outbox_depth" in answer.text
        main_answer = requests.get(f"http://127.0.0.1:{main}/metrics", timeout=5)
        assert main_answer.status_code == 401
        authorized = requests.get(
            f"http://127.0.0.1:{main}/metrics",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=5,
        )
        assert authorized.status_code == 200
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert_no_planted([stderr], "the gateway process")
