"""`signalgate healthcheck`: is the running gateway alive AND serving its browser assets?

`/healthz` alone says the process answers; a gateway that cannot serve its loader would still
look healthy. So the check also fetches every configured loader and shim path and wants a 200
with a non-empty JavaScript body. It is what the Docker image's HEALTHCHECK runs; stdlib only,
blocking, bounded by a timeout per request.

With `[tls]` enabled the probes go over HTTPS to the local listener. The certificate names the
public host, not the loopback address the probe dials, so the probe does not verify it: it asks
whether this process serves, not who it is (the TLS tests check the certificate itself).
"""

from __future__ import annotations

import ipaddress
import ssl
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.config import Config

HEALTH_PATH = "/healthz"


@dataclass(frozen=True, slots=True)
class Probe:
    """One GET the check makes and what a good answer is."""

    path: str
    script: bool


def local_base_url(config: Config) -> str:
    """Return the URL the gateway answers on from this machine (a wildcard bind → loopback)."""
    host = config.server.host.strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and address.is_unspecified:
        host = "::1" if address.version == 6 else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if config.tls.enabled else "http"
    return f"{scheme}://{host}:{config.server.port}"


def probes(config: Config) -> list[Probe]:
    """Return /healthz, then each distinct loader and shim path of the configured sites."""
    paths: list[str] = []
    for site in config.sites:
        for path in (site.loader_path, site.shim_path):
            if path and path not in paths:
                paths.append(path)
    return [Probe(HEALTH_PATH, script=False), *(Probe(p, script=True) for p in paths)]


def _local_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False  # the probe dials loopback; the certificate names the host
    context.verify_mode = ssl.CERT_NONE
    return context


_LOCAL_TLS: ssl.SSLContext = _local_tls()


def problem(base_url: str, probe: Probe, timeout: float) -> str | None:
    """GET one probe; return why it is unhealthy, or None."""
    url = base_url.rstrip("/") + probe.path
    request = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})  # noqa: S310
    try:
        with urllib.request.urlopen(  # noqa: S310 - the scheme is checked in check()
            request, timeout=timeout, context=_LOCAL_TLS if url.startswith("https:") else None
        ) as answer:
            status = answer.status
            content_type = answer.headers.get("Content-Type", "")
            body = answer.read()
    except urllib.error.HTTPError as exc:
        return f"GET {probe.path} answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return f"GET {probe.path} failed: {reason}"
    if status != 200:
        return f"GET {probe.path} answered {status}"
    if probe.script and (not body or "javascript" not in content_type):
        return f"GET {probe.path} answered no script"
    return None


def check(base_url: str, checks: Sequence[Probe], timeout: float = 3.0) -> list[str]:
    """Run every probe against `base_url`; return the problems found (empty: healthy)."""
    if not base_url.startswith(("http://", "https://")):
        return [f"{base_url!r} is not an http(s) URL"]
    found: list[str] = []
    for probe in checks:
        reason = problem(base_url, probe, timeout)
        if reason is not None:
            found.append(reason)
    return found
