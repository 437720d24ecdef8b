"""TOML file + environment → one frozen, validated Config; every error names its key.

Secrets are written `env:NAME` or `file:PATH` (a literal is accepted, for trials and tests, and
`check-config` warns about each one: gateway/config_warnings.py) and are
resolved at load time. Environment variables `SIGNALGATE__<SECTION>__<KEY>` override scalar keys
of the top-level tables (e.g. `SIGNALGATE__SERVER__PORT=9000`).

This module declares the sections (their keys, defaults and `help`, from which the README's
configuration table is made) and `parse`/`load`; reading a table into a section, value by
value, is gateway/config_loader.py, and the rules that span keys gateway/config_rules.py.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config_loader import Loader
from gateway.config_rules import (
    HOSTNAME,
    acme_default_hosts,
    check_acme,
    check_probe,
    check_sites,
    check_storage,
    check_tls,
)
from gateway.core.routing import RouteRules
from gateway.core.secret import Secret

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_COOKIE_NAME = r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}"
_PATH = r"/[A-Za-z0-9/_.-]{0,63}"


class ConfigError(Exception):
    """The configuration is invalid; `errors` lists (key path, reason) pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("\n".join(f"{path}: {reason}" for path, reason in errors))


def _f(default: Any, help_: str, **meta: Any) -> Any:
    if isinstance(default, list | dict | tuple) and not isinstance(default, tuple):
        raise TypeError("use tuples for defaults")
    return field(default=default, metadata={"help": help_, **meta})


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """`[server]`: the HTTP listener."""

    host: str = _f("127.0.0.1", "Address to bind.")
    port: int = _f(8080, "TCP port.", min=0, max=65535)
    trusted_proxies: tuple[str, ...] = _f(
        (), "CIDRs whose X-Forwarded-For is believed (e.g. your nginx).", cidr=True
    )
    max_body_bytes: int = _f(1_048_576, "Largest request body, after decompression.", min=1024)
    max_events_per_request: int = _f(1000, "Events per POST /v1/events.", min=1, max=10_000)
    head_timeout_seconds: float = _f(
        10.0, "A request head must arrive within this long of its first byte (else 408).", min=0.05
    )
    body_timeout_seconds: float = _f(
        30.0, "A request body may stall (no byte) this long at most (else 408).", min=0.05
    )
    keepalive_seconds: float = _f(
        75.0, "Idle keep-alive connections are closed after this long.", min=0.05
    )
    admin_token: Secret | None = _f(None, "Token for /v1/debug and admin pages (secret).")
    cookie_secret: Secret | None = _f(
        None, "HMAC key signing visitor cookies; default: generated next to the database."
    )
    shutdown_grace_seconds: float = _f(
        10.0,
        "On SIGTERM/SIGINT: how long in-flight requests and deliveries may take to finish.",
        min=0.0,
        max=3600.0,
    )
    log_format: str = _f(
        "keyvalue",
        "Log lines: keyvalue (text) or json (one object a line).",
        choices=("keyvalue", "json"),
    )
    log_level: str = _f(
        "INFO",
        "Lowest level logged (the SIGNALGATE_LOG_LEVEL variable overrides it).",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    )


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """`[storage]`: where the outbox lives."""

    backend: str = _f(
        "sqlite",
        "Store backend: sqlite (one file, one machine) or postgres (a shared PostgreSQL: any"
        " number of gateway processes and hosts).",
        choices=("sqlite", "postgres"),
    )
    path: str = _f("data/signalgate.db", "SQLite database file.")
    synchronous: str = _f(
        "NORMAL",
        "SQLite synchronous mode (NORMAL survives kill -9; FULL power loss).",
        choices=("NORMAL", "FULL"),
    )
    writer: str = _f(
        "loop",
        "Where writes run: loop (the event loop's thread, one commit per loop turn; fastest on"
        " one core) or thread (a writer thread; the loop never waits on SQLite).",
        choices=("loop", "thread"),
    )
    cache_mb: int = _f(
        16,
        "SQLite page cache per connection, MiB: holds the hot pages of the dedup and delivery"
        " indexes (random event ids touch pages all over them); a drain streams through the"
        " outbox and needs little, and each connection's cache counts in the process's RSS.",
        min=1,
        max=65536,
    )
    dsn: Secret | None = _f(
        None,
        "PostgreSQL connection URI for backend postgres, e.g."
        " postgresql://signalgate:PASSWORD@db:5432/signalgate (secret: env:NAME or file:PATH).",
    )
    pool_min: int = _f(
        2, "PostgreSQL connections each gateway process keeps open.", min=1, max=1000
    )
    pool_max: int = _f(
        10,
        "Most PostgreSQL connections of one gateway process (the server's max_connections must"
        " cover every process's pool).",
        min=1,
        max=1000,
    )


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """`[delivery]`: how workers send to platforms."""

    poll_interval: float = _f(0.2, "Seconds between outbox polls when idle.", min=0.0)
    lease_seconds: float = _f(60.0, "How long a claimed batch is held before another try.", min=0.1)
    timeout_seconds: float = _f(10.0, "HTTP timeout per platform request.", min=0.1)
    retry_base_seconds: float = _f(1.0, "First retry backoff (doubles, full jitter).", min=0.0)
    retry_cap_seconds: float = _f(600.0, "Longest backoff between retries.", min=0.0)
    pause_seconds: float = _f(300.0, "Pause of a route whose credentials were refused.", min=0.0)
    probe_interval_min_seconds: float = _f(
        5.0, "First wait before probing a route whose platform is down (doubles).", min=0.0
    )
    probe_interval_max_seconds: float = _f(
        20.0,
        "Longest wait between probes of a down platform: delivery resumes at most this long"
        " after it is back.",
        min=0.0,
    )
    probe_batch: int = _f(10, "Events in the one probe request sent while a route is down.", min=1)
    keep_done_seconds: float = _f(3600.0, "How long delivered rows stay for /v1/debug.", min=0.0)
    merge_seconds: float = _f(
        3.0,
        "New events wait this long so a browser and a backend copy merge into one.",
        min=0.0,
        max=600.0,
    )
    dedup_hours: float = _f(48.0, "Window in which a repeated event_id is not sent again.", min=0.0)


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """`[tls]`: HTTPS served by the gateway itself on `server.port` (files relative to the
    working directory, like `storage.path`)."""

    enabled: bool = _f(False, "Serve HTTPS on server.port with cert_file and key_file.")
    cert_file: str = _f(
        "certs/cert.pem", "PEM certificate chain (leaf first); relative to the working directory."
    )
    key_file: str = _f("certs/key.pem", "PEM private key of the certificate (keep it mode 0600).")
    http_port: int = _f(
        0,
        "Plain HTTP port that redirects to https (308), except ACME challenges; 0 = none.",
        min=0,
        max=65535,
    )
    reload_seconds: float = _f(
        60.0,
        "How often the certificate files are checked; a changed pair is loaded without restart.",
        min=0.1,
        max=86_400.0,
    )


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """`[metrics]`: Prometheus `/metrics` (always on the main listener behind the admin token)."""

    host: str = _f("127.0.0.1", "Address of the separate metrics listener (no token asked).")
    port: int = _f(
        0,
        "Port of a separate /metrics listener for scrapers on a private network; 0 = none.",
        min=0,
        max=65535,
    )
    backlog_limit: int = _f(
        100_000,
        "Outbox rows read per destination and scrape for the depth and oldest-age gauges.",
        min=1,
    )


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """`[audit]`: per-minute stats rollups kept in the store (`GET /v1/admin/stats`)."""

    rollups: bool = _f(
        True, "Write the counters' per-minute rollups to the store (the dashboard's history)."
    )
    retention_days: float = _f(
        35.0, "Days of per-minute rollups kept; older minutes are deleted.", min=1.0, max=3660.0
    )
    flush_seconds: float = _f(
        60.0,
        "How often the counters' increases are written (rows stay per minute); also on stop.",
        min=1.0,
        max=60.0,
    )


@dataclass(frozen=True, slots=True)
class ConsentConfig:
    """`[sites.consent]`: which signals decide the consent tier (none | analytics | full)."""

    default: str = _f(
        "full",
        "Tier when no signal is present; EU opt-in sites set none.",
        choices=("none", "analytics", "full"),
    )
    gpc: bool = _f(True, "Honour Sec-GPC: 1 (caps the tier at analytics).")
    tcf: bool = _f(False, "Read an IAB TCF v2.2 string (cookie euconsent-v2 or the loader).")
    tcf_vendor_ids: tuple[int, ...] = _f((), "TCF vendors that must have consent too.")
    cmp_cookie: str | None = _f(
        None, "Name of a CMP cookie to read.", pattern=_COOKIE_NAME, expected="a cookie name"
    )
    cmp_mapping: Mapping[str, str] = field(
        default_factory=dict,
        metadata={"help": 'CMP cookie value (substring) → tier, e.g. {marketing = "full"}.'},
    )
    ldu_regions: tuple[str, ...] = _f((), "Regions (US-CA, …) whose events get Meta LDU.")
    region_header: str | None = _f(
        None,
        "Request header with the visitor's region (e.g. set by the CDN: US-CA).",
        pattern=_COOKIE_NAME,
        expected="a header name",
    )


# --- script proxy (sites[].proxy) ---------------------------------------------------------------
PROXY_VENDORS = ("meta", "tiktok", "google", "snap", "pinterest", "microsoft", "reddit")
_UPSTREAM = r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?"
_UPSTREAM_META = {"pattern": _UPSTREAM, "expected": "an http(s) base URL without query"}
_PREFIX = r"/([A-Za-z0-9_-]{1,32}/){1,4}"


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """`[sites.proxy]`: vendor scripts served from the site's own host (fixed route table)."""

    enabled: bool = _f(False, "Serve vendor pixel scripts under `prefix` (see Script proxy).")
    prefix: str = _f(
        "/p/", "Path prefix of the script routes.", pattern=_PREFIX, expected="a path such as /p/"
    )
    vendors: tuple[str, ...] = _f(
        PROXY_VENDORS, "Vendors whose scripts are served.", choices=PROXY_VENDORS
    )
    cache_seconds: float = _f(
        300.0, "Fresh lifetime of a cached script; also the browser max-age.", min=0.0
    )
    max_stale_seconds: float = _f(
        86_400.0, "How long past freshness a cached copy is served while upstream fails.", min=0.0
    )
    timeout_seconds: float = _f(5.0, "Total timeout of one upstream fetch.", min=0.1, max=60.0)
    meta_upstream: str = _f(
        "https://connect.facebook.net", "Meta script CDN (fbevents.js).", **_UPSTREAM_META
    )
    tiktok_upstream: str = _f(
        "https://analytics.tiktok.com", "TikTok script CDN (events.js).", **_UPSTREAM_META
    )
    google_upstream: str = _f(
        "https://www.googletagmanager.com", "Google tag CDN (gtag/js, gtm.js).", **_UPSTREAM_META
    )
    snap_upstream: str = _f(
        "https://sc-static.net", "Snap script CDN (scevent.min.js).", **_UPSTREAM_META
    )
    pinterest_upstream: str = _f(
        "https://s.pinimg.com", "Pinterest script CDN (ct/core.js).", **_UPSTREAM_META
    )
    microsoft_upstream: str = _f(
        "https://bat.bing.com", "Microsoft UET script CDN (bat.js).", **_UPSTREAM_META
    )
    reddit_upstream: str = _f(
        "https://www.redditstatic.com", "Reddit script CDN (ads/pixel.js).", **_UPSTREAM_META
    )
    # --- hit proxy (gateway/web/hits.py): where proxied pixel hits go, not the script CDNs ---
    meta_hits_upstream: str = _f(
        "https://www.facebook.com", "Meta pixel hits (`/tr/`).", **_UPSTREAM_META
    )
    tiktok_hits_upstream: str = _f(
        "https://analytics.tiktok.com", "TikTok pixel hits (`/api/v2/pixel`).", **_UPSTREAM_META
    )
    snap_hits_upstream: str = _f(
        "https://tr.snapchat.com", "Snap pixel hits (`/p`).", **_UPSTREAM_META
    )
    google_hits_upstream: str = _f(
        "https://www.google-analytics.com", "GA4 hits (`/g/collect`).", **_UPSTREAM_META
    )
    mirror_to_all: bool = _f(
        False, "Mirror each hit to every destination, not only its own vendor's server API."
    )
    # --- end hit proxy ---


# --- end script proxy --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SiteConfig:
    """`[[sites]]`: one shop and where its conversions go."""

    id: str = _f(
        "",
        "Short site id.",
        pattern=r"[a-z0-9][a-z0-9_-]{0,39}",
        expected="lowercase letters, digits, '-', '_'",
    )
    api_keys: tuple[Secret, ...] = _f((), "Bearer keys of the shop backend (secrets).")
    hosts: tuple[str, ...] = _f((), "Hostnames this site's browser traffic arrives on.")
    allowed_origins: tuple[str, ...] = _f((), "Origins allowed to call the collect endpoint.")
    default_country: str | None = _f(
        None,
        "ISO country for phone numbers without a country code, unless the event gives one.",
        pattern=r"[A-Za-z]{2}",
        expected="ISO 3166-1 alpha-2",
    )
    max_event_age_days: float = _f(
        7.0, "Refuse events older than this (physical_store: 62).", min=0.01
    )
    rate_limit_per_second: float = _f(0.0, "API events/s per site (0 = unlimited).", min=0.0)
    collect_path: str = _f(
        "/e", "Path of the browser collect endpoint.", pattern=_PATH, expected="a path such as /e"
    )
    loader_path: str = _f(
        "/sg.js",
        "Path the loader script is served at.",
        pattern=_PATH,
        expected="a path such as /sg.js",
    )
    shim_path: str = _f(
        "/i.js",
        "Path the event-id shim (static_js/shim.js) is served at; empty: not served.",
        pattern=f"({_PATH})?",
        expected="a path such as /i.js, or empty",
    )
    selfcheck_path: str = _f(
        "/selfcheck",
        "Path of the visitor's cookie and Safari self-check page (HTML; ?format=json for"
        " signalgate check-site); empty: not served.",
        pattern=f"({_PATH})?",
        expected="a path such as /selfcheck, or empty",
    )
    cookie_domain: str | None = _f(
        None, "Cookie Domain; default: the registrable domain of the request host (PSL)."
    )
    visitor_cookie: str = _f(
        "_sgv",
        "Name of the gateway's own HttpOnly visitor cookie.",
        pattern=r"[A-Za-z0-9_]{1,32}",
        expected="letters, digits, '_'",
    )
    click_cookie_days: float = _f(
        90.0, "Max-Age of click-id cookies (_fbc, _gcl_aw, ttclid…).", min=1.0, max=400.0
    )
    id_cookie_days: float = _f(
        400.0, "Max-Age of browser-id cookies (_fbp, _ttp, _scid, _ga, ours).", min=1.0, max=400.0
    )
    profile_ttl_days: float = _f(400.0, "Visitor profiles unseen this long are deleted.", min=1.0)
    order_events: tuple[str, ...] = _f(
        ("Purchase",),
        "Backend event names (with data.order_id) the conversion gap counts as orders.",
    )
    debug_events: int = _f(
        200,
        "Events the debug view (GET /v1/admin/events) keeps in memory, received and per"
        " destination sent; 0: none.",
        min=0,
        max=10_000,
    )
    consent: ConsentConfig = field(
        default_factory=ConsentConfig, metadata={"help": "Consent policy (see [sites.consent])."}
    )
    proxy: ProxyConfig = field(
        default_factory=ProxyConfig, metadata={"help": "Vendor script proxy (see [sites.proxy])."}
    )
    destinations: Mapping[str, Any] = field(
        default_factory=dict, metadata={"help": "One table per platform (see below)."}
    )
    routing: Mapping[str, RouteRules] = field(
        default_factory=dict,
        metadata={"derived": True, "help": "Destination → its routing keys (core.routing)."},
    )
    """Not a key of its own: the routing keys of each destination table, split off by the loader."""


LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"


@dataclass(frozen=True, slots=True)
class AcmeConfig:
    """`[acme]`: automatic certificates through ACME HTTP-01 (gateway/autocert/)."""

    enabled: bool = _f(False, "Obtain and renew the TLS certificate through ACME (HTTP-01).")
    directory_url: str = _f(
        LETS_ENCRYPT_DIRECTORY, "ACME directory URL (default: Let's Encrypt production).", url=True
    )
    email: str | None = _f(
        None,
        "Contact e-mail of the ACME account (expiry notices).",
        pattern=r"[^@\s]+@[^@\s]+\.[^@\s]+",
        expected="an e-mail address",
    )
    hosts: tuple[str, ...] = _f(
        (),
        "Names on the certificate; default: every site's hosts except IP addresses and"
        " localhost names.",
        pattern=HOSTNAME,
        expected="a DNS name such as track.shop.example",
    )
    renew_days: float = _f(
        30.0, "Renew when fewer than this many days of validity remain.", min=1.0, max=365.0
    )
    check_hours: float = _f(12.0, "Hours between certificate expiry checks.", min=0.01, max=720.0)
    ca_bundle: str | None = _f(
        None, "CA file to trust for the ACME server itself (private CAs, tests)."
    )
    account_key_file: str = _f(
        "certs/acme-account.pem", "ACME account key (created with mode 0600 if missing)."
    )


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration."""

    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    sites: tuple[SiteConfig, ...] = ()
    acme: AcmeConfig = field(default_factory=AcmeConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)

    @property
    def proxy_networks(self) -> tuple[Network, ...]:
        """Return trusted proxy CIDRs as networks."""
        return tuple(ipaddress.ip_network(c, strict=False) for c in self.server.trusted_proxies)

    @property
    def acme_hosts(self) -> tuple[str, ...]:
        """Return the names to certify: `acme.hosts`, else every site host ACME can validate."""
        return self.acme.hosts or acme_default_hosts(self.sites)


SECTIONS: Mapping[str, type[Any]] = {
    "server": ServerConfig,
    "storage": StorageConfig,
    "delivery": DeliveryConfig,
    "tls": TlsConfig,
    "acme": AcmeConfig,
    "metrics": MetricsConfig,
    "audit": AuditConfig,
}


def _env_overrides(doc: dict[str, Any], environ: Mapping[str, str]) -> None:
    for key, value in environ.items():
        if not key.startswith("SIGNALGATE__"):
            continue
        parts = key[len("SIGNALGATE__") :].lower().split("__")
        if len(parts) != 2 or parts[0] not in SECTIONS:
            continue
        try:
            parsed: Any = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value
        doc.setdefault(parts[0], {})[parts[1]] = parsed


def parse(doc: dict[str, Any], environ: Mapping[str, str], base_dir: Path) -> Config:
    """Validate a parsed TOML document into a Config, or raise ConfigError with every error."""
    doc = {k: dict(v) if isinstance(v, dict) else v for k, v in doc.items()}
    _env_overrides(doc, environ)
    loader = Loader(environ, base_dir, sites=SiteConfig)
    for key in doc:
        if key not in SECTIONS and key != "sites":
            loader.err(key, "unknown section")
    sections = {
        name: loader.build(cls, doc.get(name, {}), name) or cls() for name, cls in SECTIONS.items()
    }
    raw_sites = doc.get("sites", [])
    sites: list[SiteConfig] = []
    if not isinstance(raw_sites, list):
        loader.err("sites", "expected an array of tables ([[sites]])")
        raw_sites = []
    for i, raw_site in enumerate(raw_sites):
        site = loader.build(SiteConfig, raw_site, f"sites[{i}]")
        if site is not None:
            sites.append(site)
    check_sites(sites, loader)
    check_tls(sections["tls"], sections["server"], loader)
    check_acme(sections["acme"], sites, loader)
    check_probe(sections["delivery"], loader)
    check_storage(sections["storage"], sections["server"], loader)
    if loader.errors:
        raise ConfigError(loader.errors)
    return Config(sites=tuple(sites), **sections)


def load(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML config file."""
    environ = os.environ if environ is None else environ
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError([("(file)", f"cannot read config file {file}: {exc.strerror}")]) from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("(file)", f"not valid TOML: {exc}")]) from exc
    return parse(doc, environ, file.parent)
