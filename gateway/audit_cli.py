"""`signalgate audit`: the running gateway's conversion gap, judged (gateway/core/audit.py).

Reads ``GET /v1/admin/gap`` of each site (or the one asked for) with the admin token, the way
`signalgate replay` reaches the admin API (gateway/admin_client.py), and prints PASS / FAIL /
N/A per check with its figure, then every missing order with its reason; ``--json`` prints one
JSON document instead. Exit status: 0 every check passed (or had nothing to judge), 1 some
check failed, 2 the audit could not run (usage, config, gateway unreachable or refusing).
"""

from __future__ import annotations

import argparse
import json
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Final

from gateway import healthcheck
from gateway.admin_client import AdminError
from gateway.config import ConfigError, load
from gateway.core.audit import Check, checks, exit_code, render

GAP_PATH: Final = "/v1/admin/gap"
USAGE: Final = 2
_RELATIVE: Final = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def add_parser(sub: Any) -> None:
    """Register `audit` on the command line's subparsers."""
    cmd = sub.add_parser(
        "audit", help="signal-quality checks and the conversion gap (running gateway's admin API)"
    )
    cmd.add_argument("--config", required=True, help="the running gateway's TOML config")
    cmd.add_argument("--site", default=None, help="one site id; default: every site")
    cmd.add_argument(
        "--since", default="7d", help="unix seconds, ISO 8601 or an age such as 24h, 7d (default)"
    )
    cmd.add_argument("--until", default=None, help="as --since; default: now")
    cmd.add_argument("--json", action="store_true", help="print one JSON document")
    cmd.add_argument("--url", default=None, help="base URL; default: from [server]")
    cmd.add_argument("--timeout", type=float, default=30.0, help="seconds per request")


def when(raw: str, now: float) -> str | None:
    """An absolute time for the API: an age ("7d") becomes unix seconds; unix seconds and
    ISO 8601 pass as they are (the gateway checks them); None when it is neither."""
    match = _RELATIVE.fullmatch(raw.strip())
    if match is not None:
        return repr(max(0.0, now - float(match.group(1)) * _UNIT[match.group(2)]))
    return raw.strip() or None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the command prints (gateway/cli.py prints it) and its exit status."""

    status: int
    out: str = ""
    err: str = ""


def run(args: argparse.Namespace) -> Outcome:
    """Run the audit command."""
    now = time.time()
    since = when(args.since, now)
    until = when(args.until, now) if args.until is not None else repr(now)
    if since is None or until is None:
        return Outcome(USAGE, err="--since/--until: expected unix seconds, ISO 8601 or 7d")
    try:
        config = load(args.config)
    except ConfigError as exc:
        return Outcome(USAGE, err="; ".join(f"{key}: {why}" for key, why in exc.errors))
    if config.server.admin_token is None:
        return Outcome(USAGE, err="server.admin_token is not set: no admin API")
    sites = [s.id for s in config.sites]
    if args.site is not None:
        if args.site not in sites:
            return Outcome(USAGE, err=f"--site: no site {args.site!r} in the config")
        sites = [args.site]
    base = args.url or healthcheck.local_base_url(config)
    token = config.server.admin_token.value
    reports: list[tuple[str, dict[str, Any], list[Check]]] = []
    try:
        for site in sites:
            query = urllib.parse.urlencode({"site": site, "since": since, "until": until})
            gap = get_json(base, f"{GAP_PATH}?{query}", token, args.timeout)
            reports.append((site, gap, checks(gap)))
    except AdminError as exc:
        return Outcome(USAGE, err=str(exc))
    status = max((exit_code(results) for _, _, results in reports), default=0)
    if args.json:
        doc = {
            "passed": status == 0,
            "sites": [
                {"site": site, "checks": [c.as_dict() for c in results], "gap": gap}
                for site, gap, results in reports
            ],
        }
        return Outcome(status, out=json.dumps(doc, indent=2, sort_keys=True))
    return Outcome(
        status, out="\n".join(render(site, gap, results) for site, gap, results in reports)
    )


def get_json(base_url: str, path: str, token: str, timeout: float) -> dict[str, Any]:
    """GET an admin path; return its JSON object, else raise AdminError (one line)."""
    if not base_url.startswith(("http://", "https://")):
        raise AdminError(f"{base_url!r} is not an http(s) URL")
    url = base_url.rstrip("/") + path
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url, method="GET", headers={"Authorization": f"Bearer {token}"}
    )
    context = None
    if url.startswith("https:") and _loopback(url):
        # As gateway/admin_client.py: the certificate names the public host, not 127.0.0.1.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    name = path.split("?", 1)[0]
    try:
        with urllib.request.urlopen(  # noqa: S310 - the scheme is checked above
            request, timeout=timeout, context=context
        ) as answer:
            body = answer.read()
    except urllib.error.HTTPError as exc:
        raise AdminError(f"GET {name} answered {exc.code}: {_message(exc.read())}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise AdminError(f"GET {name} failed: {reason}") from exc
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise AdminError(f"GET {name} answered no JSON") from exc
    if not isinstance(value, dict):
        raise AdminError(f"GET {name} answered no JSON object")
    return value


def _loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def _message(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return "no JSON answer"
    if not isinstance(doc, dict):
        return "no JSON answer"
    text = str(doc.get("message", ""))
    errors = doc.get("errors")
    if isinstance(errors, list) and errors:
        text += (
            " ("
            + "; ".join(
                f"{e.get('path')}: {e.get('reason')}" for e in errors if isinstance(e, dict)
            )
            + ")"
        )
    return text[:300]
