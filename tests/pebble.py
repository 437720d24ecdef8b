"""A real ACME server for tests: Debian's `pebble`, with `pebble-challtestsrv` as its DNS.

The DNS server answers every A query with 127.0.0.1 (and no AAAA), so pebble validates any
test host's HTTP-01 challenge against 127.0.0.1:<http_port>, the gateway's plain listener.
Pebble's own HTTPS endpoint gets a throwaway CA made here; `Pebble.ca_file` trusts it.
Every port is ephemeral, every wait bounded; the processes are stopped on exit.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from binaries import require_binary
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

START_TIMEOUT = 20.0


@dataclass(frozen=True)
class Pebble:
    directory_url: str
    management_url: str
    ca_file: Path  # the CA of pebble's own HTTPS endpoints (not the issuing root)
    log_file: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def issuing_root(self) -> bytes:
        """Return the PEM root that pebble's certificates chain to (management `/roots/0`)."""
        url = f"{self.management_url}/roots/0"
        with urllib.request.urlopen(url, context=self.context(), timeout=10) as answer:
            return bytes(answer.read())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_udp_tcp_port() -> int:
    """A port free for both TCP and UDP (the DNS server binds both)."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port for the DNS server")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def write_server_ca(folder: Path) -> tuple[Path, Path, Path]:
    """Write a CA and a leaf for 127.0.0.1/localhost; return (ca, leaf cert, leaf key) paths."""
    now = dt.datetime.now(tz=dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("pebble test CA"))
        .issuer_name(_name("pebble test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(san, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "pebble-ca.pem", folder / "pebble-cert.pem", folder / "pebble-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_ready(pebble: Pebble, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    context = pebble.context()
    while True:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"pebble exited early: {pebble.log_file.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(pebble.directory_url, context=context, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"pebble not ready: {pebble.log_file.read_text()[-2000:]}")
        time.sleep(0.1)


@contextmanager
def running_pebble(folder: Path, http_port: int) -> Iterator[Pebble]:
    """Run pebble (validating HTTP-01 on 127.0.0.1:`http_port`) and its DNS server."""
    pebble_bin = require_binary("pebble")
    dns_bin = require_binary("pebble-challtestsrv", "pebble")
    folder.mkdir(parents=True, exist_ok=True)
    ca_file, cert, key = write_server_ca(folder)
    dns_port, listen, management, dns_management = (
        free_udp_tcp_port(),
        free_port(),
        free_port(),
        free_port(),
    )
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{listen}",
            "managementListenAddress": f"127.0.0.1:{management}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": http_port,
            "tlsPort": free_port(),  # nothing listens: only http-01 is answered
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    config_file = folder / "pebble-config.json"
    config_file.write_text(json.dumps(config))
    log_file = folder / "pebble.log"
    env = {
        **os.environ,
        "PEBBLE_VA_NOSLEEP": "1",
        "PEBBLE_VA_ALWAYS_VALID": "0",
        "PEBBLE_WFE_NONCEREJECT": "0",
        "PEBBLE_AUTHZREUSE": "0",
    }
    procs: list[subprocess.Popen[bytes]] = []
    with log_file.open("wb") as log:
        try:
            dns = [
                dns_bin,
                "-dns01", f"127.0.0.1:{dns_port}",
                "-http01", "", "-https01", "", "-tlsalpn01", "",
                "-management", f"127.0.0.1:{dns_management}",
                "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
            ]  # fmt: skip
            procs.append(subprocess.Popen(dns, stdout=log, stderr=subprocess.STDOUT, env=env))
            cmd = [pebble_bin, "-config", str(config_file), "-dnsserver", f"127.0.0.1:{dns_port}"]
            procs.append(
                subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder)
            )
            pebble = Pebble(
                directory_url=f"https://127.0.0.1:{listen}/dir",
                management_url=f"https://127.0.0.1:{management}",
                ca_file=ca_file,
                log_file=log_file,
            )
            _wait_ready(pebble, procs)
            yield pebble
        finally:
            for proc in reversed(procs):
                with suppress(Exception):
                    _stop(proc)
