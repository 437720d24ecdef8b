"""`signalgate check-site URL`: would Safari cap the cookies the gateway sets for this site?

URL is the gateway as the shop's pages reach it: its self-check page
(``https://track.shop.example/selfcheck``), its base (``https://www.shop.example/t/``, to which
``selfcheck`` is added) or its loader (``…/sg.js``, whose sibling ``selfcheck`` is used). The
command fetches the self-check document (``?format=json``: the site's served hosts, the hosts its
pages are served from, the cookies it sets with their lifetimes), resolves every served host and
every page host through a `Resolver` (CNAME chain, A/AAAA; tests pass a fake), and prints per
served host: the CNAME chain and the registrable domain of its last name (Public Suffix List),
its addresses against the page host's in the first half (IPv4 /16, IPv6 /64), the cookie
lifetimes Safari keeps, the verdict and the fix.

Exit status: 0 no cap; 1 a cap applies, or DNS could not rule one out; 2 usage error or the
self-check could not be fetched.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import httpx

from gateway.core.safari import CAP_SECONDS, HostVerdict, Resolution, assess, safari_max_age
from gateway.delivery.exchange import make_client
from gateway.web.cookies import normalize_host, registrable_domain
from gateway.web.resolver import DnsResolver, Resolver

__all__ = [
    "EXIT_CAPPED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CheckError",
    "SiteReport",
    "check_site",
    "exit_code",
    "render_json",
    "render_text",
    "run",
    "selfcheck_url",
]

EXIT_OK: Final = 0
EXIT_CAPPED: Final = 1
EXIT_USAGE: Final = 2
SELFCHECK: Final = "selfcheck"
MAX_ITEMS: Final = 64
"""Hosts and cookies read from the document at most."""
_COOKIE_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")


class CheckError(Exception):
    """The check could not run: a bad URL, or no usable self-check answer (exit 2)."""


@dataclass(frozen=True, slots=True)
class Cookie:
    """A cookie the gateway sets, as its self-check document lists it."""

    name: str
    max_age: int
    http_only: bool


@dataclass(frozen=True, slots=True)
class HostReport:
    """One served host against one page host."""

    verdict: HostVerdict
    resolution: Resolution
    page_resolution: Resolution


@dataclass(frozen=True, slots=True)
class SiteReport:
    """Everything `check-site` found."""

    url: str
    selfcheck_url: str
    site: str
    page_hosts: tuple[str, ...]
    served_hosts: tuple[str, ...]
    cookies: tuple[Cookie, ...]
    hosts: tuple[HostReport, ...] = field(default=())

    @property
    def capped(self) -> bool | None:
        """True if any host is capped; None if none is but some verdict is unknown."""
        verdicts = [h.verdict.capped for h in self.hosts]
        if any(verdicts):
            return True
        return None if any(v is None for v in verdicts) else False


def selfcheck_url(url: str) -> str:
    """Return the self-check document URL for a gateway URL; CheckError if it is not one."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        _ = parts.port  # raises ValueError on a port out of range
    except ValueError as exc:
        raise CheckError(f"URL: not a valid URL ({exc})") from exc
    if parts.scheme not in ("http", "https") or not host:
        raise CheckError("URL: expected an http:// or https:// URL with a host name")
    path = parts.path or "/"
    if path.endswith("/"):
        path += SELFCHECK
    elif path.rsplit("/", 1)[-1].endswith(".js"):
        path = path.rsplit("/", 1)[0] + "/" + SELFCHECK
    return urlunsplit((parts.scheme, parts.netloc, path, "format=json", ""))


def _name(text: str) -> str | None:
    """A host name, or an IP address literal (brackets removed); None if neither."""
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        return normalize_host(text)


def _host_list(doc: dict[str, Any], key: str) -> list[str]:
    raw = doc.get(key)
    if not isinstance(raw, list):
        raise CheckError(f"self-check answer: {key}: expected a list of host names")
    hosts = []
    for item in raw[:MAX_ITEMS]:
        name = _name(item) if isinstance(item, str) else None
        if name is None:
            raise CheckError(f"self-check answer: {key}: {item!r} is not a host name")
        hosts.append(name)
    return hosts


def _cookies(doc: dict[str, Any]) -> list[Cookie]:
    raw = doc.get("cookies")
    if not isinstance(raw, list):
        raise CheckError("self-check answer: cookies: expected a list")
    out = []
    for i, item in enumerate(raw[:MAX_ITEMS]):
        if not isinstance(item, dict):
            raise CheckError(f"self-check answer: cookies[{i}]: expected an object")
        name, max_age, http_only = item.get("name"), item.get("max_age"), item.get("http_only")
        if not isinstance(name, str) or not _COOKIE_NAME.fullmatch(name):
            raise CheckError(f"self-check answer: cookies[{i}].name: expected a cookie name")
        if type(max_age) is not int or max_age < 0:
            raise CheckError(f"self-check answer: cookies[{i}].max_age: expected seconds")
        out.append(Cookie(name, max_age, http_only is True))
    return out


REDIRECTS: Final = 3
"""Redirects followed at most (e.g. `tls.http_port` sends http:// to https://)."""


async def _get(client: httpx.AsyncClient, url: str) -> httpx.Response:
    try:
        return await client.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise CheckError(f"cannot fetch {url}: {type(exc).__name__}: {exc}") from exc


async def fetch_document(
    url: str, *, seconds: float, transport: httpx.AsyncBaseTransport | None
) -> dict[str, Any]:
    """GET the self-check document (following a few redirects); CheckError when it cannot."""
    async with make_client(seconds, transport) as client:
        response = await _get(client, url)
        for _ in range(REDIRECTS):
            location = response.headers.get("Location")
            if response.status_code not in (301, 302, 303, 307, 308) or not location:
                break
            url = str(response.url.join(location))
            response = await _get(client, url)
    status = response.status_code
    if status != 200:
        hint = " (is sites[].selfcheck_path served at this URL?)" if status == 404 else ""
        raise CheckError(f"{url} answered {status}{hint}")
    try:
        doc = response.json()
    except ValueError as exc:
        raise CheckError(f"{url} did not answer a self-check document (not JSON)") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("site"), str):
        raise CheckError(f"{url} did not answer a self-check document")
    return doc


async def check_site(
    url: str,
    *,
    resolver: Resolver,
    page_hosts: Sequence[str] = (),
    fetch_seconds: float = 10.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> SiteReport:
    """Fetch the self-check of `url`, resolve the hosts and return the verdicts."""
    target = selfcheck_url(url)
    tracking = _name(urlsplit(target).hostname or "") or ""
    pages = []
    for given in page_hosts:
        name = _name(given)
        if name is None:
            raise CheckError(f"--page-host: {given!r} is not a host name")
        pages.append(name)
    doc = await fetch_document(target, seconds=fetch_seconds, transport=transport)
    pages = pages or _host_list(doc, "page_hosts") or [tracking]
    served = list(dict.fromkeys([tracking, *_host_list(doc, "served_hosts")]))
    cookies = _cookies(doc)
    names = list(dict.fromkeys([*served, *pages]))
    answers = await asyncio.gather(*(resolver.resolve(n) for n in names))
    resolved = dict(zip(names, answers, strict=True))
    hosts = tuple(
        HostReport(assess(resolved[s], resolved[p], registrable_domain), resolved[s], resolved[p])
        for s in served
        for p in pages
        if not (s in pages and s != p)
    )
    return SiteReport(url, target, doc["site"], tuple(pages), tuple(served), tuple(cookies), hosts)


def exit_code(report: SiteReport) -> int:
    """0 when no host is capped, else 1 (also when a verdict is unknown)."""
    return EXIT_OK if report.capped is False else EXIT_CAPPED


def _days(seconds: int) -> str:
    days = seconds / 86400
    return f"{days:.0f} d" if days == int(days) else f"{days:.2f} d"


def _lifetimes(cookies: Sequence[Cookie], capped: bool | None) -> str:
    parts = []
    for c in cookies:
        kept = safari_max_age(c.max_age, capped)
        life = _days(c.max_age) if kept == c.max_age else f"{_days(c.max_age)} → {_days(kept)}"
        parts.append(f"{c.name} {life}")
    return ", ".join(parts) or "none"


def render_text(report: SiteReport) -> str:
    """Return the human-readable report."""
    lines = [
        f"check-site {report.url}",
        f"self-check: {report.selfcheck_url} (site {report.site})",
        f"pages served from: {', '.join(report.page_hosts)}",
        f"served hosts: {', '.join(report.served_hosts)}",
        "cookies set: "
        + (
            ", ".join(
                f"{c.name} {_days(c.max_age)}{' HttpOnly' if c.http_only else ''}"
                for c in report.cookies
            )
            or "none"
        ),
    ]
    for host in report.hosts:
        v = host.verdict
        chain = " → ".join([v.host, *host.resolution.cnames])
        lines.append("")
        lines.append(f"{v.host}  (for pages on {v.page_host})")
        if v.rule == "same-host":
            lines.append("  mode: same host as the pages (path mode)")
        else:
            cname = "none (A/AAAA records)"
            if host.resolution.cnames:
                other = "the page's own site" if v.capped is False else "another site"
                cname = f"{chain}  [{v.cname_site}: {other}]"
            lines.append(f"  CNAME: {cname}")
            lines.append(f"  addresses: {', '.join(host.resolution.addresses) or 'none'}")
            page_addresses = ", ".join(host.page_resolution.addresses) or "none"
            lines.append(f"  page host {v.page_host}: {page_addresses}")
            for pair in v.pairs:
                mark = "ok" if pair.ok else "DIFFERS"
                lines.append(
                    f"    {pair.address} vs {pair.page_address}: {pair.shared_bits} leading bits"
                    f" shared, {pair.needed_bits} needed ({mark})"
                )
            for missing in v.missing_families:
                lines.append(f"    {missing}")
            for res in (host.resolution, host.page_resolution):
                if res.error:
                    lines.append(f"  DNS {res.host}: {res.error}")
        word = {True: "CAPPED to 7 days", False: "full lifetime", None: "UNKNOWN"}[v.capped]
        lines.append(f"  verdict: {word}: {v.reason}")
        lines.append(f"  cookies in Safari: {_lifetimes(report.cookies, v.capped)}")
        if v.fix:
            lines.append(f"  fix: {v.fix}")
    code = exit_code(report)
    outcome = {
        EXIT_OK: "no Safari cap",
        EXIT_CAPPED: "a Safari cap applies" if report.capped else "a Safari cap is not ruled out",
    }[code]
    lines += ["", f"result: {outcome} (exit {code})"]
    return "\n".join(lines)


def render_json(report: SiteReport) -> dict[str, Any]:
    """Return the report as a JSON-ready document."""
    hosts = []
    for host in report.hosts:
        doc = asdict(host.verdict)
        doc["cnames"] = list(host.resolution.cnames)
        doc["addresses"] = list(host.resolution.addresses)
        doc["page_addresses"] = list(host.page_resolution.addresses)
        doc["dns_errors"] = [r.error for r in (host.resolution, host.page_resolution) if r.error]
        doc["cookies"] = [
            {
                "name": c.name,
                "max_age": c.max_age,
                "safari_max_age": safari_max_age(c.max_age, host.verdict.capped),
            }
            for c in report.cookies
        ]
        hosts.append(doc)
    return {
        "url": report.url,
        "selfcheck_url": report.selfcheck_url,
        "site": report.site,
        "page_hosts": list(report.page_hosts),
        "served_hosts": list(report.served_hosts),
        "safari_cap_seconds": CAP_SECONDS,
        "hosts": hosts,
        "capped": report.capped,
        "exit": exit_code(report),
    }


def run(
    url: str,
    *,
    as_json: bool,
    page_hosts: Sequence[str] = (),
    timeout: float = 10.0,
    resolver: Resolver | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    show: Callable[[str], None],
    warn: Callable[[str], None],
) -> int:
    """Run the check (its own event loop) and print the report; return the exit status."""
    try:
        report = asyncio.run(
            check_site(
                url,
                resolver=resolver or DnsResolver(timeout=min(timeout, 5.0)),
                page_hosts=page_hosts,
                fetch_seconds=timeout,
                transport=transport,
            )
        )
    except CheckError as exc:
        warn(f"signalgate check-site: {exc}")
        return EXIT_USAGE
    show(json.dumps(render_json(report), indent=2) if as_json else render_text(report))
    return exit_code(report)
