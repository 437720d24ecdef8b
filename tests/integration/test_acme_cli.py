"""`signalgate run` with [acme]: the placeholder at start-up, then pebble's certificate."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from pebble import free_port, running_pebble

from gateway.autocert.files import is_placeholder

HOST = "track.signalgate.test"
API_KEY = "sg_test_key_0123456789abcdef"
ROOT = Path(__file__).resolve().parents[2]


def config_text(port: int, directory_url: str, ca_file: Path) -> str:
    return f"""
[server]
host = "127.0.0.1"
port = {port}
[storage]
path = "data/outbox.db"
[acme]
enabled = true
directory_url = "{directory_url}"
ca_bundle = "{ca_file}"
[[sites]]
id = "shop"
api_keys = ["{API_KEY}"]
hosts = ["{HOST}"]
"""


def issued_by_pebble(cert_file: Path) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError):
        return False
    return not is_placeholder(cert) and "Pebble" in cert.issuer.rfc4514_string()


@pytest.mark.timeout(180)
def test_signalgate_run_obtains_a_certificate(tmp_path: Path) -> None:
    http_port = free_port()  # the gateway's plain listener is where pebble validates
    with running_pebble(tmp_path / "pebble", http_port) as pebble:
        config = tmp_path / "gateway.toml"
        config.write_text(config_text(http_port, pebble.directory_url, pebble.ca_file))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(config), "--no-delivery"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        cert_file = tmp_path / "certs/cert.pem"
        try:
            deadline = time.monotonic() + 90
            while not issued_by_pebble(cert_file) and time.monotonic() < deadline:
                assert proc.poll() is None, "signalgate run exited"
                time.sleep(0.1)
        finally:
            proc.terminate()
            out, _ = proc.communicate(timeout=30)
    text = out.decode()
    assert issued_by_pebble(cert_file), text[-2000:]
    assert "self-signed placeholder" in text
    assert f"ACME: ordering a certificate for {HOST}: only the self-signed placeholder" in text
    assert f"ACME: new certificate for {HOST} valid until" in text
    assert "Traceback" not in text
