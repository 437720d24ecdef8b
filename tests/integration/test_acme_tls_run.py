"""`signalgate run` with [tls] and [acme]: HTTPS starts on the placeholder, the plain
tls.http_port answers pebble's HTTP-01 challenge, and the reloader serves pebble's certificate."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pebble import free_port, running_pebble

HOST = "track.signalgate.test"
API_KEY = "sg_test_key_0123456789abcdef"
ROOT = Path(__file__).resolve().parents[2]


def handshake(port: int, context: ssl.SSLContext) -> dict[str, object] | None:
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=HOST) as tls,
        ):
            return tls.getpeercert()
    except (OSError, ssl.SSLError):
        return None


@pytest.mark.timeout(180)
def test_signalgate_run_serves_https_with_the_acme_certificate(tmp_path: Path) -> None:
    https_port, http_port = free_port(), free_port()
    with running_pebble(tmp_path / "pebble", http_port) as pebble:
        config = tmp_path / "gateway.toml"
        config.write_text(
            f"""
[server]
host = "127.0.0.1"
port = {https_port}
[storage]
path = "data/outbox.db"
[tls]
enabled = true
http_port = {http_port}
reload_seconds = 0.2
[acme]
enabled = true
directory_url = "{pebble.directory_url}"
ca_bundle = "{pebble.ca_file}"
[[sites]]
id = "shop"
api_keys = ["{API_KEY}"]
hosts = ["{HOST}"]
"""
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(config), "--no-delivery"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            context = ssl.create_default_context(cadata=pebble.issuing_root().decode())
            deadline = time.monotonic() + 90
            peer = None
            while peer is None and time.monotonic() < deadline:
                assert proc.poll() is None, "signalgate run exited"
                peer = handshake(https_port, context)
                time.sleep(0.2)
        finally:
            proc.terminate()
            out, _ = proc.communicate(timeout=30)
    text = out.decode()
    assert peer is not None, text[-2000:]
    assert ("DNS", HOST) in peer["subjectAltName"]  # type: ignore[operator]
    assert "self-signed placeholder" in text
    assert f"ACME: new certificate for {HOST}" in text
    assert "TLS certificate reloaded" in text
    assert "Traceback" not in text
