"""The composition root: create_app() wires config, store, pipeline, workers and routes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from gateway.autocert.service import AUTOCERT, autocert_ctx, make_renewer, tls_files
from gateway.config import Config
from gateway.core.rollup import snapshot
from gateway.core.routing import NO_RULES
from gateway.delivery.breaker import BreakerPolicy
from gateway.delivery.exchange import make_client
from gateway.delivery.retry import RetryPolicy
from gateway.delivery.settings import WorkerSettings
from gateway.delivery.shutdown import stop_workers
from gateway.delivery.worker import Worker
from gateway.destinations import DESTINATIONS
from gateway.destinations.base import bind_clock
from gateway.secretfile import read_or_create_key
from gateway.store.base import GatewayStore
from gateway.store.sqlite import SqliteStore
from gateway.web.admin import Admin
from gateway.web.admin_dead import DeadLetters
from gateway.web.admin_gap import Gap
from gateway.web.admin_stats import PATH as STATS_PATH
from gateway.web.admin_stats import StatsApi
from gateway.web.api import EventsApi, Health
from gateway.web.challenge import CHALLENGES
from gateway.web.challenge import install as install_challenges
from gateway.web.collect import MAX_BODY as COLLECT_MAX_BODY
from gateway.web.collect import Collect
from gateway.web.dashboard import Dashboard, Providers
from gateway.web.dashboard import Live as DashboardLive
from gateway.web.dashboard import install as install_dashboard
from gateway.web.dashboard.adapters import (
    events_provider,
    gap_provider,
    stats_provider,
    window_provider,
)
from gateway.web.deadlines import DEADLINES, Deadlines, deadlines_of
from gateway.web.debugview import DebugView
from gateway.web.edgelog import install as install_edge_log_filter
from gateway.web.fastlane import LANE, Answer, Lane, LaneRequest, Later
from gateway.web.fastlane import HitAnswerer as LaneAnswerer
from gateway.web.fastlane_server import FastRunner
from gateway.web.hits import HITS, MAX_HIT_BODY
from gateway.web.hits import install as install_hit_proxy
from gateway.web.metrics import RouteView
from gateway.web.metrics import Sources as MetricsSources
from gateway.web.metrics import install as install_metrics
from gateway.web.middleware import errors_middleware, request_id_middleware
from gateway.web.openapi import PATH as OPENAPI_PATH
from gateway.web.openapi import OpenApi
from gateway.web.pipeline import Pipeline, Site, route_name
from gateway.web.privacy import Erasure
from gateway.web.proxy import PROXY, ScriptProxy
from gateway.web.rollups import ROLLUPS, Flusher, rollups_ctx
from gateway.web.selfcheck import install as install_selfcheck
from gateway.web.static import Asset, loader_asset, shim_asset

log = logging.getLogger("signalgate")

Clock = Callable[[], float]


@dataclass
class Runtime:
    """Live objects of a running gateway (exposed to tests through RUNTIME)."""

    config: Config
    store: GatewayStore
    sites: list[Site]
    pipeline: Pipeline
    workers: dict[str, Worker] = field(default_factory=dict)
    collect: Collect | None = None
    debug: DebugView | None = None
    """The debug view's rings (gateway/web/debugview.py)."""
    stop_by: float | None = None
    """Loop time by which a graceful stop must be done (gateway/lifecycle.py), once begun."""

    def begin_stop(self, deadline: float) -> None:
        """Start a graceful stop: workers stop leasing now and finish by `deadline`."""
        self.stop_by = deadline
        for worker in self.workers.values():
            worker.stop()

    def route_health(self) -> Mapping[str, Mapping[str, object]]:
        """Return each route's health."""
        return {name: w.health() for name, w in self.workers.items()}

    def browser_stats(self) -> Mapping[str, object]:
        """Return the collect endpoint's counters (hits, tiers, consent reasons)."""
        return self.collect.stats.totals() if self.collect is not None else {}


RUNTIME = web.AppKey("runtime", Runtime)


def make_store(config: Config) -> GatewayStore:
    """Return the configured store backend (not yet opened)."""
    if config.storage.backend == "postgres" and config.storage.dsn is not None:
        from gateway.store.postgres import gateway_store  # asyncpg: only for this backend

        return gateway_store(
            config.storage.dsn.value,
            pool_min=config.storage.pool_min,
            pool_max=config.storage.pool_max,
            dedup_seconds=config.delivery.dedup_hours * 3600,
            merge_seconds=config.delivery.merge_seconds,
        )
    path = Path(config.storage.path)
    return SqliteStore(
        path,
        synchronous=config.storage.synchronous,
        writer=config.storage.writer,
        cache_mb=config.storage.cache_mb,
        dedup_seconds=config.delivery.dedup_hours * 3600,
        merge_seconds=config.delivery.merge_seconds,
    )


def create_app(
    config: Config,
    *,
    store: GatewayStore | None = None,
    clock: Clock = time.time,
    rng: random.Random | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    run_workers: bool = True,
) -> web.Application:
    """Build the aiohttp application; resources open and close with its lifecycle."""
    install_edge_log_filter()  # aiohttp's own log records carry no request bytes
    store = store if store is not None else make_store(config)
    rng = rng or random.Random()  # noqa: S311 - jitter, not security
    sites = [Site.from_config(s) for s in config.sites]
    pipeline = Pipeline(store, clock=clock)
    runtime = Runtime(config=config, store=store, sites=sites, pipeline=pipeline)
    app = web.Application(
        middlewares=[errors_middleware, request_id_middleware],
        client_max_size=config.server.max_body_bytes,
    )
    app[RUNTIME] = runtime
    api = EventsApi(
        pipeline,
        sites,
        clock=clock,
        max_body_bytes=config.server.max_body_bytes,
        max_events=config.server.max_events_per_request,
        visitor_key=cookie_key(config) if sites else None,
    )
    app.router.add_post("/v1/events", api.post_events)
    board = _admin_routes(app, runtime, clock)
    erasure = Erasure(pipeline, sites, clock)
    app.router.add_delete("/v1/visitors/{visitor_id}", erasure.delete_visitor)
    app.router.add_post("/v1/erase", erasure.erase)
    app.router.add_get(OPENAPI_PATH, OpenApi().get)
    install_challenges(app)  # ACME HTTP-01 answers (app[CHALLENGES]); also on tls.http_port
    _browser_routes(app, runtime, config, clock)
    install_selfcheck(app, runtime.sites, config.proxy_networks, clock)  # cookie/Safari check
    _script_proxy_routes(app, config, clock)
    app.cleanup_ctx.append(_store_ctx(store))
    _rollups(app, runtime, clock)  # stops after the workers (books their last counts)
    if (flusher := app.get(ROLLUPS)) is not None:  # the dashboard's figures: stored rollups
        board.providers = replace(board.providers, window=window_provider(flusher))
    app.cleanup_ctx.append(_workers_ctx(runtime, clock, rng, transport, run_workers))
    _hit_proxy_routes(app, runtime, clock)  # after the store: its mirrors drain before it closes
    app[DEADLINES] = deadlines_of(config.server)
    _fast_lane(app, api, config.server.max_body_bytes, app[DEADLINES])
    _autocert(app, config, clock)
    install_metrics(
        app, metrics_sources(app, runtime, clock), config.metrics, config.server.admin_token
    )
    return app


def _admin_routes(app: web.Application, runtime: Runtime, clock: Clock) -> Dashboard:
    """Health checks, the admin API (recent and dead events, replay and resume, the conversion
    gap, stats, the debug view) and the dashboard, whose providers read them."""
    config, store, pipeline = runtime.config, runtime.store, runtime.pipeline
    token = config.server.admin_token
    health = Health(store.ping, runtime.route_health)
    admin = Admin(
        store,
        token,
        runtime.route_health,
        runtime.browser_stats,
        pipeline.consent_denied,
        pipeline.routed_away,
    )
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/v1/debug/recent", admin.recent)
    app.router.add_get("/v1/debug/dead", admin.dead)
    dead = DeadLetters(store, token, runtime.workers, clock)
    app.router.add_get("/v1/admin/dead", dead.dead)
    app.router.add_post("/v1/admin/replay", dead.replay)
    app.router.add_post("/v1/admin/resume", dead.resume)
    site_routes = {s.config.id: s.routes for s in runtime.sites}
    gap = Gap(store, token, site_routes, clock)
    app.router.add_get("/v1/admin/gap", gap.gap)
    board = install_dashboard(
        app,
        dashboard_live(runtime, clock),
        token,
        cookie_key(config) if token is not None else b"",
        config.proxy_networks,
        Providers(
            stats=stats_provider(store) if config.audit.rollups else None,
            gap=gap_provider(store, site_routes),
        ),
    )  # the recent-events provider is added once the debug view exists (below)
    stats = StatsApi(store, token, _site_destinations(config), clock)
    app.router.add_get(STATS_PATH, stats.get)
    debug = runtime.debug = DebugView(
        config, clock, lambda r: w.destination if (w := runtime.workers.get(r)) else None
    )
    pipeline.debug = debug.log
    board.providers = replace(board.providers, events=events_provider(debug))
    app.router.add_get("/v1/admin/events", debug.events)
    return board


def metrics_sources(app: web.Application, runtime: Runtime, clock: Clock) -> MetricsSources:
    """What /metrics reads (gateway/web/metrics.py): the live counters and the store."""
    return MetricsSources(
        ingest=runtime.pipeline.tally,
        consent_denied=runtime.pipeline.consent_denied,
        routes=lambda: {r: RouteView(w.tally, w.health()) for r, w in runtime.workers.items()},
        backlog=lambda routes, limit: runtime.store.backlog(routes, limit),
        clock=clock,
        hits=lambda: hits.stats if (hits := app.get(HITS)) is not None else None,
        scripts=lambda: proxy.stats if (proxy := app.get(PROXY)) is not None else None,
    )


def dashboard_live(runtime: Runtime, clock: Clock) -> DashboardLive:
    """What the admin dashboard reads now (gateway/web/dashboard/): live counters and the store."""
    return DashboardLive(
        store=runtime.store,
        routes=lambda: {r: RouteView(w.tally, w.health()) for r, w in runtime.workers.items()},
        workers=runtime.workers,
        ingest=runtime.pipeline.tally,
        consent_denied=runtime.pipeline.consent_denied,
        routed_away=runtime.pipeline.routed_away,
        clock=clock,
        browser=lambda: runtime.collect.stats if runtime.collect is not None else None,
        backlog_limit=runtime.config.metrics.backlog_limit,
    )


# --- stats rollups (gateway/web/rollups.py, GET /v1/admin/stats) ---
def _rollups(app: web.Application, runtime: Runtime, clock: Clock) -> None:
    """With `[audit] rollups`: write the counters' per-minute rollups to the store."""
    if not runtime.config.audit.rollups:
        return
    pipeline = runtime.pipeline

    def read() -> Mapping[tuple[str, str, str, str, str], int]:
        tallies = {route: worker.tally for route, worker in runtime.workers.items()}
        hits = runtime.collect.stats if runtime.collect is not None else None
        return snapshot(
            pipeline.tally,
            tallies,
            pipeline.consent_denied,
            pipeline.routed_away,
            tiers=hits.site_tiers if hits is not None else None,
            reasons=hits.site_reasons if hits is not None else None,
        )

    flusher = Flusher(runtime.store, read, clock, runtime.config.audit)
    app[ROLLUPS] = flusher
    app.cleanup_ctx.append(rollups_ctx(flusher))


def _site_destinations(config: Config) -> dict[str, tuple[str, ...]]:
    return {site.id: tuple(site.destinations) for site in config.sites}


# --- end stats rollups ---


# --- automatic certificates (gateway/autocert/) ---
def _autocert(app: web.Application, config: Config, clock: Clock) -> None:
    """With `[acme] enabled`: answer HTTP-01 challenges on this app (and on any listener that
    shares app[CHALLENGES], such as tls.http_port) and keep the TLS files issued and renewed."""
    if not config.acme.enabled:
        return
    challenges = app.get(CHALLENGES)  # served already when another part installed the route
    if challenges is None:
        challenges = install_challenges(app)
    cert_file, key_file = tls_files(config)
    renewer = make_renewer(
        config.acme, config.acme_hosts, challenges, cert_file, key_file, clock=clock
    )
    app[AUTOCERT] = renewer
    app.cleanup_ctx.append(autocert_ctx(renewer))


# --- end automatic certificates ---


def make_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """Return the runner serving `app`: aiohttp's, plus the fast lane (web/fastlane_server.py)."""
    return FastRunner(app, **kwargs)


def _fast_lane(
    app: web.Application, api: EventsApi, api_body_limit: int, deadlines: Deadlines
) -> None:
    """Answer the hot routes straight from the socket (web/fastlane.py): fresh cached scripts,
    pixel hits and POST /v1/events; everything else is aiohttp's."""
    proxy = app.get(PROXY)
    hits = app.get(HITS)
    answerers: list[LaneAnswerer] = [api.lane_answer]
    if hits is not None:
        answerers.append(_limited(hits.fast_answer, MAX_HIT_BODY))
    collect = app[RUNTIME].collect
    if collect is not None:
        answerers.append(collect.fast_answer)  # leaves bodies over COLLECT_MAX_BODY to aiohttp
    app[LANE] = Lane(
        proxy.cached_answer if proxy is not None else None,
        answerers,
        max(MAX_HIT_BODY, api_body_limit, COLLECT_MAX_BODY),
        deadlines,
    )


def _limited(answerer: LaneAnswerer, body_limit: int) -> LaneAnswerer:
    """Leave requests whose body exceeds `body_limit` to aiohttp (which answers the 413)."""

    def answer(request: LaneRequest) -> Awaitable[Answer] | Later | None:
        return None if len(request.body) > body_limit else answerer(request)

    return answer


def _browser_routes(app: web.Application, runtime: Runtime, config: Config, clock: Clock) -> None:
    """Add the collect endpoint and the loader for every distinct path the sites configure."""
    if not runtime.sites:
        return
    collect = Collect(
        runtime.pipeline,
        runtime.sites,
        clock=clock,
        trusted_proxies=config.proxy_networks,
        cookie_key=cookie_key(config),
        new_token=lambda: secrets.token_hex(8),
    )
    runtime.collect = collect
    for path in sorted({s.config.collect_path for s in runtime.sites}):
        app.router.add_post(path, collect.post)
        app.router.add_route("OPTIONS", path, collect.preflight)
    # A missing asset raises AssetMissing here: start-up stops rather than serving a 404.
    assets: dict[str, Asset] = {}
    for site in runtime.sites:
        path = site.config.loader_path
        if path not in assets:
            assets[path] = loader_asset(path, site.config.collect_path)
    shim_paths = {s.config.shim_path for s in runtime.sites if s.config.shim_path}
    if shim_paths:
        shim = shim_asset()
        assets.update(dict.fromkeys(shim_paths, shim))
    for path, asset in assets.items():
        app.router.add_get(path, _serve(asset))


def _script_proxy_routes(app: web.Application, config: Config, clock: Clock) -> None:
    """Serve vendor scripts under each enabled site's proxy prefix (gateway/web/proxy.py)."""
    proxy = ScriptProxy(config.sites, clock=clock)
    if not proxy.prefixes:
        return
    app[PROXY] = proxy
    for prefix in proxy.prefixes:
        app.router.add_get(prefix + "{tail:.*}", proxy.handler(prefix))
    app.cleanup_ctx.append(proxy.session_ctx)  # closes the one shared aiohttp ClientSession


# --- hit proxy (gateway/web/hits.py) ---
def _hit_proxy_routes(app: web.Application, runtime: Runtime, clock: Clock) -> None:
    """Forward and mirror vendor pixel hits under each enabled proxy prefix (and /g/collect)."""
    install_hit_proxy(app, app.get(PROXY), runtime.collect, clock)


# --- end hit proxy ---


def _serve(asset: Asset) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return asset.respond(request)

    return handler


def cookie_key(config: Config) -> bytes:
    """Return the HMAC key of visitor cookies: from config, else a key file beside the database.

    The key must outlive restarts (a new key invalidates every visitor cookie), so a generated
    one is written once with mode 0600 and reused.
    """
    if config.server.cookie_secret is not None:
        return hashlib.sha256(config.server.cookie_secret.value.encode()).digest()
    # Created once, atomically: the workers of `run --workers N` all read the same key.
    return read_or_create_key(Path(config.storage.path).with_suffix(".cookie-key"))


def _store_ctx(store: GatewayStore) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        yield
        await store.close()

    return ctx


def _workers_ctx(
    runtime: Runtime,
    clock: Clock,
    rng: random.Random,
    transport: httpx.AsyncBaseTransport | None,
    run_workers: bool,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        cfg = runtime.config.delivery
        settings = WorkerSettings(
            lease_seconds=cfg.lease_seconds,
            poll_interval=cfg.poll_interval,
            pause_seconds=cfg.pause_seconds,
            policy=RetryPolicy(base=cfg.retry_base_seconds, cap=cfg.retry_cap_seconds),
            breaker=BreakerPolicy(
                probe_min=cfg.probe_interval_min_seconds,
                probe_max=cfg.probe_interval_max_seconds,
                probe_batch=cfg.probe_batch,
            ),
        )
        clients: list[httpx.AsyncClient] = []
        for site in runtime.config.sites:
            for name, dest_settings in site.destinations.items():
                destination = bind_clock(DESTINATIONS[name].factory(dest_settings), clock)
                client = make_client(cfg.timeout_seconds, transport)
                clients.append(client)
                route = route_name(site.id, name)
                runtime.workers[route] = Worker(
                    route,
                    destination,
                    runtime.store,
                    client,
                    clock=clock,
                    rng=rng,
                    settings=settings,
                    event_names=site.routing.get(name, NO_RULES).event_names,
                    sent=runtime.debug.sent_log(route) if runtime.debug else None,
                )
        tasks: list[asyncio.Task[None]] = []
        if run_workers:
            tasks = [
                asyncio.create_task(w.run(), name=f"worker {r}") for r, w in runtime.workers.items()
            ]
            tasks.append(asyncio.create_task(_compact_loop(runtime, clock), name="compactor"))
        yield
        compactor, delivering = tasks[-1:], tasks[:-1]
        for task in compactor:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*compactor)
        loop = asyncio.get_running_loop()
        deadline = runtime.stop_by
        grace = runtime.config.server.shutdown_grace_seconds
        left = grace if deadline is None else deadline - loop.time()
        await stop_workers(runtime.workers.values(), delivering, left)
        for client in clients:
            await client.aclose()

    return ctx


async def _compact_loop(runtime: Runtime, clock: Clock, every: float = 60.0) -> None:
    cfg = runtime.config.delivery
    while True:
        await asyncio.sleep(every)
        try:
            await runtime.store.compact(clock(), cfg.keep_done_seconds, cfg.dedup_hours * 3600)
            ttl = min((s.config.profile_ttl_days for s in runtime.sites), default=400.0)
            await runtime.store.expire_profiles(clock(), ttl * 86400)
        except Exception:
            log.exception("Outbox compaction failed; will try again.")
