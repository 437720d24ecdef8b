"""A real nginx for tests: the shipped nginx.conf wrapped as its header documents.

`render_shipped` fills the shipped file's placeholders by plain string replacement (the way its
header tells a user to); `write_main_conf` writes the main configuration that includes it inside
`http { }`, with pid, logs and temp paths under the test's directory; `nginx_check` runs
`nginx -t`; `running_nginx` runs it in the foreground until the test ends. Certificates come from
`make_certs` (a throw-away CA and one leaf per host, with `cryptography`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import grp
import os
import pwd
import signal
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SHIPPED = Path(__file__).resolve().parents[1] / "nginx.conf"
"""The repository's nginx.conf, as shipped."""

SHOP_PLACEHOLDER = "www.shop.example"
TRACK_PLACEHOLDER = "track.shop.example"
UPSTREAM_PLACEHOLDER = "127.0.0.1:8080"
CERTS_PLACEHOLDER = "/etc/nginx/certs/"
ROOT_PLACEHOLDER = "/var/www/shop"
LISTEN_PLACEHOLDER = "listen 443 "


@dataclass(frozen=True)
class Placeholders:
    """What the shipped file's placeholders become."""

    upstream: str
    port: int
    certs: Path
    shop_root: Path
    shop_host: str = "www.shop.test"
    track_host: str = "track.shop.test"
    listen_address: str = "127.0.0.1"


def render_shipped(values: Placeholders, text: str | None = None) -> str:
    """Return the shipped file with every placeholder replaced, as its header documents."""
    text = SHIPPED.read_text() if text is None else text
    for placeholder in (
        SHOP_PLACEHOLDER,
        TRACK_PLACEHOLDER,
        UPSTREAM_PLACEHOLDER,
        CERTS_PLACEHOLDER,
        ROOT_PLACEHOLDER,
        LISTEN_PLACEHOLDER,
    ):
        assert placeholder in text, f"the shipped nginx.conf lost its placeholder {placeholder!r}"
    # Track before shop: "track.shop.example" does not contain "www.shop.example", but keep the
    # order explicit anyway.
    text = text.replace(TRACK_PLACEHOLDER, values.track_host)
    text = text.replace(SHOP_PLACEHOLDER, values.shop_host)
    text = text.replace(UPSTREAM_PLACEHOLDER, values.upstream)
    text = text.replace(CERTS_PLACEHOLDER, f"{values.certs}/")
    text = text.replace(ROOT_PLACEHOLDER, str(values.shop_root))
    return text.replace(LISTEN_PLACEHOLDER, f"listen {values.listen_address}:{values.port} ")


def write_main_conf(directory: Path, include: Path, *, extra_http: str = "") -> Path:
    """Write a main nginx configuration that includes `include` inside `http { }`.

    Every path nginx writes (pid, logs, temp files) lies under `directory`. As root, the workers
    run as the current user (else they would drop to `nobody` and fail to read the test's
    private temporary files).
    """
    directory.mkdir(parents=True, exist_ok=True)
    user = ""
    if os.geteuid() == 0:
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
    temp = {name: directory / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(exist_ok=True)
    conf = directory / "main.conf"
    conf.write_text(
        f"""{user}
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {directory}/access.log;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    types {{ text/html html; application/javascript js; }}
    default_type application/octet-stream;
    {extra_http}
    include {include};
}}
"""
    )
    return conf


def _command(binary: str, conf: Path) -> list[str]:
    return [binary, "-p", f"{conf.parent}/", "-e", str(conf.parent / "error.log"), "-c", str(conf)]


def nginx_check(binary: str, conf: Path) -> subprocess.CompletedProcess[str]:
    """Run `nginx -t` on the main configuration `conf`."""
    return subprocess.run(
        [*_command(binary, conf), "-t"], capture_output=True, text=True, timeout=60, check=False
    )


@asynccontextmanager
async def running_nginx(
    binary: str, conf: Path, port: int, host: str = "127.0.0.1"
) -> AsyncIterator[None]:
    """Run nginx in the foreground on `conf` until the block ends; wait until `port` accepts."""
    log = conf.parent / "stderr.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [*_command(binary, conf), "-g", "daemon off;"], stdout=err, stderr=err
        )
    try:
        await _wait_for_port(proc, host, port, conf.parent)
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


async def _wait_for_port(proc: subprocess.Popen[bytes], host: str, port: int, logs: Path) -> None:
    for _ in range(200):  # up to ~20 s on a busy machine
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited ({proc.returncode}): {_logs(logs)}")
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise RuntimeError(f"nginx did not listen on {host}:{port}: {_logs(logs)}")


def _logs(directory: Path) -> str:
    parts = []
    for name in ("stderr.log", "error.log"):
        path = directory / name
        if path.exists():
            parts.append(path.read_text()[-2000:])
    return " | ".join(parts)


def make_certs(directory: Path, hosts: Sequence[str]) -> Path:
    """Write a throw-away CA and, per host, `<host>.crt` (leaf + CA) and `<host>.key`.

    Returns the CA certificate's path.
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signalgate test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    ca_path = directory / "ca.crt"
    ca_path.write_bytes(ca_pem)
    for host in hosts:
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        (directory / f"{host}.crt").write_bytes(
            leaf.public_bytes(serialization.Encoding.PEM) + ca_pem
        )
        (directory / f"{host}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return ca_path


def free_port(host: str = "127.0.0.1") -> int:
    """Return a port that was free on `host` a moment ago (for nginx's listen line)."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
