"""The `[metrics]` port of `signalgate run --workers N`: one scrape, every worker's counts.

Each worker serves its own `/metrics` (gateway/web/metrics.py) on a Unix socket in the
supervisor's private temporary directory; the supervisor listens on `metrics.host:metrics.port`
and, per scrape, reads every worker's exposition and answers their merge:

* counters and histograms (buckets, sums, counts) are added: the gateway's totals;
* gauges read from the shared store (outbox depth, oldest age) or a route's state (paused,
  circuit open) take the largest worker value: the store's figure once, a route paused if any
  worker paused it; ``signalgate_store_readable`` takes the smallest;
* ``signalgate_workers_scraped`` says how many workers answered this scrape (a worker being
  restarted is missing from one scrape, and its counters start again from zero, which
  Prometheus' `rate()` reads as a counter reset of the sum).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Final

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from gateway.web.metrics import CONTENT_TYPE, PATH, PREFIX

log = logging.getLogger("signalgate.metrics")

SCRAPE_TIMEOUT: Final = 10.0
"""Seconds the supervisor waits for each worker's exposition."""
SMALLEST: Final = frozenset({PREFIX + "store_readable"})
"""Gauges merged by their smallest value (every other gauge by its largest)."""

_Key = tuple[str, tuple[tuple[str, str], ...]]


def merge(texts: Iterable[str]) -> list[Metric]:
    """Merge exposition texts (one per worker) into one list of families, in first-seen order."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[_Key, float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type
                )
                values[family.name] = {}
            table = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                old = table.get(key)
                if old is None:
                    table[key] = sample.value
                elif family.type != "gauge":
                    table[key] = old + sample.value
                elif family.name in SMALLEST:
                    table[key] = min(old, sample.value)
                else:
                    table[key] = max(old, sample.value)
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
    return list(families.values())


class _Families:
    def __init__(self, families: Sequence[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def render(texts: Sequence[str], workers: int) -> bytes:
    """The merged exposition of `texts`, plus how many of `workers` answered."""
    registry = CollectorRegistry(auto_describe=False)
    scraped = GaugeMetricFamily(
        PREFIX + "workers_scraped", "Worker processes that answered this scrape.", labels=[]
    )
    scraped.add_metric([], float(len(texts)))
    total = GaugeMetricFamily(PREFIX + "workers", "Worker processes configured.", labels=[])
    total.add_metric([], float(workers))
    registry.register(_Families([*merge(texts), scraped, total]))
    return generate_latest(registry)


class MetricsMerger:
    """The supervisor's `[metrics]` listener over the workers' Unix sockets."""

    def __init__(self, sockets: Sequence[str]) -> None:
        self.sockets = list(sockets)
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (raises OSError when it cannot)."""
        app = web.Application()
        app.router.add_get(PATH, self.scrape)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def scrape(self, request: web.Request) -> web.Response:
        """GET /metrics: every worker's exposition, merged."""
        answers = await asyncio.gather(*(self._read(path) for path in self.sockets))
        texts = [text for text in answers if text is not None]
        body = render(texts, len(self.sockets))
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    @staticmethod
    async def _read(path: str) -> str | None:
        timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT)
        try:
            async with (
                aiohttp.ClientSession(
                    connector=aiohttp.UnixConnector(path=path), timeout=timeout
                ) as session,
                session.get(f"http://worker{PATH}") as resp,
            ):
                if resp.status != 200:
                    return None
                return await resp.text()
        except (OSError, aiohttp.ClientError, TimeoutError) as exc:
            log.info("A worker's /metrics did not answer.", extra={"reason": type(exc).__name__})
            return None
