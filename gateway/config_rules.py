"""The configuration's rules that span keys or sections (gateway/config.py declares the
sections; `parse` calls these after reading every table, and each adds its errors, by key, to
the loader's)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config_loader import Loader

if TYPE_CHECKING:  # the sections are declared in gateway/config.py, which imports this module
    from gateway.config import (
        AcmeConfig,
        DeliveryConfig,
        ServerConfig,
        SiteConfig,
        StorageConfig,
        TlsConfig,
    )

HOSTNAME = r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
"""A DNS name with a top-level label of letters (what a public ACME CA can validate)."""


def acme_default_hosts(sites: tuple[SiteConfig, ...] | list[SiteConfig]) -> tuple[str, ...]:
    """Return the site hosts a public ACME CA can validate (no IPs, no *localhost), in order."""
    out: dict[str, None] = {}
    for site in sites:
        for host in site.hosts:
            name = host.lower().rstrip(".")
            if re.fullmatch(HOSTNAME, name) and not _is_local(name):
                out[name] = None
    return tuple(out)


def _is_local(name: str) -> bool:
    return name == "localhost" or name.endswith(".localhost")


def _check_paths(sites: list[SiteConfig], loader: Loader) -> None:
    """A path serves one thing: the collect endpoint, the loader, the shim or the self-check."""
    owner: dict[str, str] = {}
    for i, site in enumerate(sites):
        for key in ("collect_path", "loader_path", "shim_path", "selfcheck_path"):
            path = getattr(site, key)
            if not path:
                continue
            other = owner.setdefault(path, key)
            if other != key:
                loader.err(f"sites[{i}].{key}", f"{path} is already the {other} of a site")


def check_probe(delivery: DeliveryConfig, loader: Loader) -> None:
    """The probe's interval bounds are in order."""
    if delivery.probe_interval_max_seconds < delivery.probe_interval_min_seconds:
        loader.err(
            "delivery.probe_interval_max_seconds", "must be >= delivery.probe_interval_min_seconds"
        )


def check_storage(storage: StorageConfig, server: ServerConfig, loader: Loader) -> None:
    """The pool's bounds, the DSN's scheme, and what the postgres backend requires."""
    if storage.pool_max < storage.pool_min:
        loader.err("storage.pool_max", "must be >= storage.pool_min")
    if storage.dsn is not None and not storage.dsn.value.startswith(
        ("postgresql://", "postgres://")
    ):
        loader.err("storage.dsn", "expected a postgresql:// URI")  # never echo the value
    if storage.backend != "postgres":
        return
    if storage.dsn is None:
        loader.err("storage.dsn", "required when storage.backend is postgres")
    if server.cookie_secret is None:
        loader.err(
            "server.cookie_secret",
            "required when storage.backend is postgres (every gateway process must sign visitor"
            " cookies with the same key)",
        )
    from gateway.store.postgres import missing_methods  # asyncpg: only for this backend

    if missing := missing_methods():
        loader.err(
            "storage.backend",
            "postgres lacks " + ", ".join(missing) + " in this build; use sqlite",
        )


def check_tls(tls: TlsConfig, server: ServerConfig, loader: Loader) -> None:
    """TLS needs its files, and its redirect port is not the https one."""
    if not tls.enabled:
        return
    for key in ("cert_file", "key_file"):
        if not getattr(tls, key).strip():
            loader.err(f"tls.{key}", "required when tls.enabled is true")
    if tls.http_port and tls.http_port == server.port:
        loader.err("tls.http_port", "must differ from server.port (which serves https)")


def check_sites(sites: list[SiteConfig], loader: Loader) -> None:
    """Site ids and API keys are unique, consent mappings and regions well formed, and a path
    serves one thing."""
    _check_paths(sites, loader)
    seen_ids: set[str] = set()
    seen_keys: set[str] = set()
    for i, site in enumerate(sites):
        if not site.id:
            loader.err(f"sites[{i}].id", "required")
        if site.id in seen_ids:
            loader.err(f"sites[{i}].id", f"duplicate site id {site.id!r}")
        seen_ids.add(site.id)
        for value, tier in site.consent.cmp_mapping.items():
            where = f"sites[{i}].consent.cmp_mapping.{value}"
            if tier not in ("none", "analytics", "full"):
                loader.err(where, "expected none, analytics or full")
            if not value.strip():
                loader.err(where, "expected a non-empty cookie value or re:<regex>")
            elif value.startswith("re:"):
                try:
                    re.compile(value[3:])
                except re.error as exc:
                    loader.err(where, f"invalid regular expression: {exc}")
        for j, region in enumerate(site.consent.ldu_regions):
            if not re.fullmatch(r"[A-Za-z]{2}(-[A-Za-z0-9]{1,3})?", region):
                loader.err(f"sites[{i}].consent.ldu_regions[{j}]", "expected US or US-CA style")
        for j, key in enumerate(site.api_keys):
            if len(key.value) < 16:
                loader.err(f"sites[{i}].api_keys[{j}]", "expected at least 16 characters")
            if key.value in seen_keys:
                loader.err(f"sites[{i}].api_keys[{j}]", "the same key is used twice")
            seen_keys.add(key.value)


def check_acme(acme: AcmeConfig, sites: list[SiteConfig], loader: Loader) -> None:
    """ACME has a host to certify and its CA bundle exists."""
    if not acme.enabled:
        return
    if not acme.hosts and not acme_default_hosts(sites):
        loader.err("acme.hosts", "no host to certify: set acme.hosts or a public sites[].hosts")
    if acme.ca_bundle is not None and not Path(acme.ca_bundle).is_file():
        loader.err("acme.ca_bundle", f"file not found: {acme.ca_bundle}")
