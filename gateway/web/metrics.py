"""Prometheus `/metrics`: the gateway's counters exported at scrape time.

Nothing here runs on the request or delivery paths: those only add to plain ints
(gateway/core/tally.py, the workers' RouteStats, HitStats, ProxyStats, the pipeline's
consent_denied). A scrape reads them, asks the store for each destination's backlog (a bounded
read, `metrics.backlog_limit` rows per destination), and renders the families with
prometheus-client's text exposition. Every label value is from a closed set (site ids and
destinations from the config, standard event names or ``custom``, reason and identifier
vocabularies, vendors): no PII and no unbounded values.

`/metrics` answers on the main listener to the admin token (Bearer, compared in constant
time) and, when `[metrics] port` is set, without a token on that separate listener, meant for
a scraper on a private network.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from gateway.config import MetricsConfig
from gateway.core.secret import Secret
from gateway.core.tally import IngestTally, RouteTally
from gateway.store.base import Backlog
from gateway.web.bearer import bearer_token
from gateway.web.hits import HitStats
from gateway.web.middleware import error_response
from gateway.web.script_cache import ProxyStats

log = logging.getLogger("signalgate.metrics")

PATH: Final = "/metrics"
PREFIX: Final = "signalgate_"
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format every Prometheus version scrapes (our names are all legacy-valid)."""


UNIX_SOCKET: Final = web.AppKey("metrics_unix_socket", str)
"""Set by a worker of `run --workers N`: serve the separate /metrics on this Unix socket (the
supervisor merges every worker's answer on `metrics.port`, gateway/web/metrics_merge.py)."""


class ListenError(Exception):
    """The separate metrics listener cannot bind; the message is one line for the operator."""


@dataclass(frozen=True, slots=True)
class RouteView:
    """What a scrape reads of one route's worker."""

    tally: RouteTally
    health: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class Sources:
    """Where a scrape reads its figures (wired by gateway/app.py)."""

    ingest: IngestTally
    consent_denied: Mapping[str, int]
    routes: Callable[[], Mapping[str, RouteView]]
    backlog: Callable[[Sequence[str], int], Awaitable[Mapping[str, Backlog]]]
    clock: Callable[[], float]
    hits: Callable[[], HitStats | None] = lambda: None
    scripts: Callable[[], ProxyStats | None] = lambda: None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One scrape's figures, read before rendering (the store read is async)."""

    sources: Sources
    routes: Mapping[str, RouteView]
    backlog: Mapping[str, Backlog]
    now: float
    readable: bool = True
    """Whether the store answered the backlog read."""


def _split(route: str) -> tuple[str, str]:
    """Return (site, destination) of a route name "<site>:<destination>"."""
    site, _, destination = route.partition(":")
    return site, destination


def _counter(name: str, doc: str, labels: Sequence[str]) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, labels=list(labels))


def _gauge(name: str, doc: str, labels: Sequence[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, labels=list(labels))


_ROUTE: Final = ("site", "destination")
_ROUTE_EVENT: Final = ("site", "destination", "event")


def ingest_families(tally: IngestTally, consent_denied: Mapping[str, int]) -> Iterator[Metric]:
    """The ingest families: received, accepted, rejected, queued, deduplicated, consent."""
    received = _counter(
        "events_received",
        "Events received, by site and source (accepted plus rejected).",
        ("site", "source"),
    )
    for (site, source), n in sorted(tally.received().items()):
        received.add_metric([site, source], n)
    yield received
    accepted = _counter(
        "events_accepted",
        "Events that passed validation, by site, source and event name.",
        ("site", "source", "event"),
    )
    for key, n in sorted(tally.offered.items()):
        accepted.add_metric(list(key), n)
    yield accepted
    rejected = _counter(
        "events_rejected",
        "Events refused before the outbox, by site, source and reason.",
        ("site", "source", "reason"),
    )
    for key, n in sorted(tally.rejected.items()):
        rejected.add_metric(list(key), n)
    yield rejected
    for name, table, doc in (
        ("events_queued", tally.queued, "Delivery rows created (events accepted for delivery)."),
        (
            "events_deduplicated",
            tally.deduplicated,
            "Events not queued again for a destination: same event name and id seen before.",
        ),
    ):
        family = _counter(name, doc, _ROUTE_EVENT)
        for (route, event), n in sorted(table.items()):
            family.add_metric([*_split(route), event], n)
        yield family
    denied = _counter(
        "events_consent_dropped",
        "Events consent kept from a destination (never queued for it).",
        _ROUTE,
    )
    for route, n in sorted(consent_denied.items()):
        denied.add_metric(list(_split(route)), n)
    yield denied


def delivery_families(routes: Mapping[str, RouteView]) -> Iterator[Metric]:
    """The delivery families, from each route's tally and health."""
    delivered = _counter("events_delivered", "Events the platform accepted.", _ROUTE_EVENT)
    retried = _counter(
        "events_retried",
        "Delivery attempts scheduled again (one per row and attempt).",
        _ROUTE_EVENT,
    )
    dead = _counter(
        "events_dead_lettered",
        "Events given up, by reason (invalid_field, too_old, auth, platform_rejected, …).",
        (*_ROUTE_EVENT, "reason"),
    )
    identifiers = _counter(
        "delivered_identifiers",
        "Delivered events carrying each identifier kind (coverage = this / events_delivered).",
        (*_ROUTE_EVENT, "identifier"),
    )
    latency = HistogramMetricFamily(
        PREFIX + "delivery_latency_seconds",
        "Seconds from an event's time to the platform's acceptance.",
        labels=list(_ROUTE),
    )
    requests = _counter("delivery_requests", "Requests sent to the platform.", _ROUTE)
    paused = _gauge(
        "destination_paused", "1 while credentials were refused and the route waits.", _ROUTE
    )
    circuit = _gauge(
        "destination_circuit_open", "1 while the platform is down and only probed.", _ROUTE
    )
    for route, view in sorted(routes.items()):
        labels = list(_split(route))
        tally = view.tally
        for event, n in sorted(tally.delivered.items()):
            delivered.add_metric([*labels, event], n)
        for event, n in sorted(tally.retried.items()):
            retried.add_metric([*labels, event], n)
        for (event, reason), n in sorted(tally.dead.items()):
            dead.add_metric([*labels, event, reason], n)
        for (event, kind), n in sorted(tally.identifiers.items()):
            identifiers.add_metric([*labels, event, kind], n)
        buckets = [(_le(bound), n) for bound, n in tally.cumulative_buckets()]
        latency.add_metric(labels, buckets, tally.latency_sum)
        health = view.health
        requests.add_metric(labels, _number(health.get("requests")))
        paused.add_metric(labels, 1.0 if health.get("paused") else 0.0)
        circuit.add_metric(labels, 1.0 if health.get("breaker") == "open" else 0.0)
    yield from (delivered, retried, dead, identifiers, latency, requests, paused, circuit)


def backlog_families(backlog: Mapping[str, Backlog], now: float) -> Iterator[Metric]:
    """Outbox depth and the age of its oldest waiting row, per destination."""
    depth = _gauge(
        "outbox_depth", "Rows waiting for delivery (pending, leased, retry), capped.", _ROUTE
    )
    age = _gauge(
        "outbox_oldest_age_seconds", "Age of the oldest waiting row (0 when none).", _ROUTE
    )
    for route, found in sorted(backlog.items()):
        labels = list(_split(route))
        depth.add_metric(labels, found.depth)
        age.add_metric(labels, max(0.0, now - found.oldest) if found.oldest is not None else 0.0)
    yield depth
    yield age


def proxy_families(hits: HitStats | None, scripts: ProxyStats | None) -> Iterator[Metric]:
    """The vendor proxy's counters (hit forwarding and mirroring, script cache)."""
    if hits is not None:
        by_vendor = _counter("proxy_hits", "Vendor pixel hits received, by vendor.", ("vendor",))
        for vendor, n in sorted(hits.by_vendor.items()):
            by_vendor.add_metric([vendor], n)
        yield by_vendor
        for name, value, doc in (
            ("proxy_hits_forwarded", hits.forwarded, "Hits forwarded to the vendor."),
            (
                "proxy_hit_upstream_errors",
                hits.bad_gateway,
                "Hits the vendor did not answer (the visitor got a 502).",
            ),
            ("proxy_hits_mirrored", hits.mirrored, "Hit events committed to the outbox."),
            (
                "proxy_mirror_failures",
                hits.mirror_errors,
                "Hits whose mirror through the pipeline failed.",
            ),
        ):
            family = _counter(name, doc, ())
            family.add_metric([], value)
            yield family
    if scripts is not None:
        cache = _counter(
            "proxy_script_requests",
            "Vendor script requests, by cache result.",
            ("result",),
        )
        for result, n in (
            ("hit", scripts.hits),
            ("miss", scripts.misses),
            ("revalidated", scripts.revalidated),
            ("stale", scripts.stale),
        ):
            cache.add_metric([result], n)
        yield cache
        errors = _counter(
            "proxy_script_upstream_errors", "Vendor script requests answered 502.", ()
        )
        errors.add_metric([], scripts.bad_gateway)
        yield errors


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


class _Collector:
    """A one-scrape collector over a Snapshot (registered in a fresh registry per scrape)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        sources = snap.sources
        yield from ingest_families(sources.ingest, sources.consent_denied)
        yield from delivery_families(snap.routes)
        yield from backlog_families(snap.backlog, snap.now)
        readable = _gauge("store_readable", "1 when the store answered this scrape's read.", ())
        readable.add_metric([], 1.0 if snap.readable else 0.0)
        yield readable
        yield from proxy_families(sources.hits(), sources.scripts())


async def render(sources: Sources, backlog_limit: int) -> bytes:
    """Return the exposition text of every family, as read now.

    A store that cannot answer costs the outbox gauges only (`signalgate_store_readable` 0),
    never the scrape: the in-memory counters matter most when the store is in trouble.
    """
    routes = sources.routes()
    readable = True
    try:
        backlog = await sources.backlog(sorted(routes), backlog_limit)
    except Exception as exc:
        log.warning("Outbox backlog unreadable for /metrics.", extra={"reason": type(exc).__name__})
        backlog, readable = {}, False
    registry = CollectorRegistry(auto_describe=False)
    snapshot = Snapshot(sources, routes, backlog, sources.clock(), readable)
    registry.register(_Collector(snapshot))
    return generate_latest(registry)


class MetricsEndpoint:
    """GET /metrics: admin token on the main listener; open on the separate one."""

    def __init__(self, sources: Sources, config: MetricsConfig, token: Secret | None) -> None:
        self.sources = sources
        self.config = config
        self.token = token

    async def protected(self, request: web.Request) -> web.Response:
        """The main listener's handler: Bearer admin token, compared in constant time."""
        if self.token is None:
            return error_response(
                403, "forbidden", "admin surfaces are off: set server.admin_token"
            )
        given = bearer_token(request.headers.get("Authorization")) or b""
        if not hmac.compare_digest(given, self.token.value.encode()):
            return error_response(401, "unauthorized", "admin token required")
        return await self.open(request)

    async def open(self, request: web.Request) -> web.Response:
        """The separate listener's handler (no token: bind it to a private address)."""
        body = await render(self.sources, self.config.backlog_limit)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    def listener_ctx(self) -> Callable[[web.Application], AsyncIterator[None]]:
        """An app cleanup context serving /metrics on `metrics.host:metrics.port` while the
        app runs (installed only when the port is set)."""

        async def ctx(app: web.Application) -> AsyncIterator[None]:
            side = web.Application()
            side.router.add_get(PATH, self.open)
            runner = web.AppRunner(side, access_log=None)
            await runner.setup()
            host, port = self.config.host, self.config.port
            unix = app.get(UNIX_SOCKET)
            try:
                if unix is not None:
                    with contextlib.suppress(FileNotFoundError):  # a killed predecessor's
                        os.unlink(unix)
                    await web.UnixSite(runner, unix).start()
                else:
                    await web.TCPSite(runner, host, port).start()
            except OSError as exc:
                await runner.cleanup()
                reason = os.strerror(exc.errno).lower() if exc.errno else type(exc).__name__
                raise ListenError(
                    f"cannot listen on {host}:{port} (metrics.port): {reason}"
                ) from exc
            try:
                yield
            finally:
                await runner.cleanup()

        return ctx


def install(
    app: web.Application, sources: Sources, config: MetricsConfig, token: Secret | None
) -> MetricsEndpoint:
    """Add GET /metrics to `app` (admin token) and, with `metrics.port`, its own listener."""
    endpoint = MetricsEndpoint(sources, config, token)
    app.router.add_get(PATH, endpoint.protected)
    if config.port:
        app.cleanup_ctx.append(endpoint.listener_ctx())
    return endpoint
