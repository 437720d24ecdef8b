"""In-process costs measured without HTTP, for the ingest bench: the gateway's request path
step by step (run in the ``_micro`` child of ingest.py, pinned to the server core; see
`ingestreport.budget`) and what ``--audit`` adds (one rollup flush, one /metrics render)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchload import API_KEY, body_for


def audit_costs(workdir: Path, flushes: int = 20) -> dict[str, float]:
    """CPU per rollup flush and per /metrics render, in this process, with every counter of a
    busy site moving between flushes (each destination, standard event, source, identifier
    kind and latency bucket): a bound on what `--audit` costs, independent of machine load."""
    from gateway.config import AuditConfig
    from gateway.core.event import STANDARD_EVENTS
    from gateway.core.rollup import snapshot
    from gateway.core.tally import IDENTIFIERS, LATENCY_BUCKETS, IngestTally, RouteTally
    from gateway.destinations import DESTINATIONS
    from gateway.store.sqlite import SqliteStore
    from gateway.web.metrics import RouteView, Sources, render
    from gateway.web.rollups import Flusher

    ingest = IngestTally()
    routes = {f"shop:{name}": RouteTally() for name in DESTINATIONS}
    labels = [*sorted(STANDARD_EVENTS), "custom"]

    def bump() -> None:
        for source in ("backend", "loader", "hit:meta"):
            ingest.accepted("shop", source, dict.fromkeys(labels, 1))
            ingest.refused("shop", source, "invalid")
        ingest.queued_names(tuple(routes), dict.fromkeys(labels, 1))
        for tally in routes.values():
            for label in labels:
                tally.delivered[label] = tally.delivered.get(label, 0) + 1
                for kind in sorted(IDENTIFIERS)[:12]:
                    key = (label, kind)
                    tally.identifiers[key] = tally.identifiers.get(key, 0) + 1
            for i in range(len(LATENCY_BUCKETS) + 1):
                tally.latency_buckets[i] += 1

    async def backlog(names: Any, limit: int) -> dict[str, Any]:
        return {}

    async def main() -> dict[str, float]:
        store = SqliteStore(workdir / "audit-costs.db")
        await store.open()
        try:
            clock = [1_790_000_000.0]
            read = lambda: snapshot(ingest, routes, {}, {})  # noqa: E731
            flusher = Flusher(store, read, lambda: clock[0], AuditConfig())
            flusher.start()
            spent = 0.0
            rows = 0
            for _ in range(flushes):
                bump()
                clock[0] += 60
                started = time.process_time()
                rows = await flusher.flush()
                spent += time.process_time() - started
            sources = Sources(
                ingest=ingest,
                consent_denied={},
                routes=lambda: {r: RouteView(t, {}) for r, t in routes.items()},
                backlog=backlog,
                clock=time.time,
            )
            started = time.process_time()
            for _ in range(flushes):
                await render(sources, 1000)
            scrape = (time.process_time() - started) / flushes
        finally:
            await store.close()
        return {
            "rows_per_flush": rows,
            "flush_ms": spent / flushes * 1000,
            "scrape_ms": scrape * 1000,
        }

    return asyncio.run(main())


def _best_us(fn: Any, items: Sequence[Any], repeat: int = 5) -> float:
    """Best-of-`repeat` microseconds per call of fn(item) over `items`."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - t0)
    return 1e6 * best / len(items)


def _typed_pass(pipeline: Any, site: Any, bodies: list[bytes]) -> dict[str, float]:
    """Per-event cost of the typed pass over whole 100-event bodies (core.wire), if present."""
    prepare_wire = getattr(pipeline, "prepare_wire", None)
    if prepare_wire is None:
        return {}
    from gateway.core.wire import decode_document

    now = time.time()

    def run(body: bytes) -> None:
        items = decode_document(body)
        if items is None or prepare_wire(site, items, prefix="events", now=now) is None:
            raise RuntimeError("the bench's body left the typed pass")

    out = {"wire_100_per_event_us": _best_us(run, bodies) / 100}
    prepare_stored = getattr(pipeline, "prepare_stored", None)
    if prepare_stored is not None:  # a site without profiles: straight to the stored form
        from gateway.core.record import encode_stored
        from gateway.core.wire import is_clean

        def stored(body: bytes) -> None:
            items = decode_document(body)
            done = None
            if items is not None:
                done = prepare_stored(site, items, prefix="events", now=now, clean=is_clean(body))
            if done is None:
                raise RuntimeError("the bench's body left the stored road")
            for s in done[0]:
                encode_stored(s)

        out["stored_100_per_event_us"] = _best_us(stored, bodies) / 100
    return out


async def request_path_costs(
    config_path: str, parts: list[str], seconds: float
) -> dict[str, float]:
    """In-process costs of the gateway's request path, without HTTP (see `budget_lines`)."""
    import uuid

    from aiohttp import web

    from gateway.config import load
    from gateway.core.record import encode
    from gateway.store.base import NewEvent
    from gateway.store.sqlite import SqliteStore
    from gateway.web.api import KeyRing
    from gateway.web.pipeline import Pipeline, Site

    config = load(config_path)
    site = Site.from_config(config.sites[0])
    store = SqliteStore(Path(config.storage.path), synchronous=config.storage.synchronous)
    pipeline = Pipeline(store, clock=time.time)
    keys = KeyRing([site])
    header = f"Bearer {API_KEY}"
    n = 2000
    bodies = [body_for(parts, "m", i, 1) for i in range(n)]
    objs = [json.loads(b)["events"][0] for b in bodies]
    now = time.time()
    events = [pipeline.prepare(site, o, path="events[0]", now=now).event for o in objs]
    big = body_for(parts, "b", 0, 100)
    answer = {"accepted": 1, "deduplicated": 0, "rejected": []}
    out = {
        "auth_us": _best_us(lambda _: keys.site_for(header), range(n)),
        "json_loads_1_us": _best_us(json.loads, bodies),
        "json_loads_100_per_event_us": _best_us(json.loads, [big] * 50) / 100,
        "prepare_us": _best_us(lambda o: pipeline.prepare(site, o, path="events[0]"), objs),
        "encode_us": _best_us(encode, [e for e in events if e is not None]),
        **_typed_pass(pipeline, site, [body_for(parts, f"w{i}", 0, 100) for i in range(20)]),
        "uuid4_us": _best_us(lambda _: uuid.uuid4().hex[:16], range(n)),
        "gateway_answer_us": _best_us(lambda _: web.json_response(answer, status=202), range(n)),
        "bare_answer_us": _best_us(
            lambda _: web.json_response({"accepted": 1}, status=202), range(n)
        ),
    }
    await store.open()
    try:
        records = [encode(e) for e in events if e is not None]
        counter = 0

        async def appender(batch: int, deadline: float) -> int:
            nonlocal counter
            done = 0
            while time.perf_counter() < deadline:
                chunk = []
                for _ in range(batch):
                    counter += 1
                    chunk.append(
                        NewEvent(
                            site=site.config.id,
                            event_name="Purchase",
                            event_id=f"s{counter}",
                            event_time=now,
                            record=records[counter % len(records)],
                            routes=site.routes,
                        )
                    )
                await store.append(chunk, time.time())
                done += batch
            return done

        ready = [e for e in events if e is not None]
        enrich = getattr(pipeline, "enrich", None)  # visitor-profile lookup, where it exists

        async def enricher(batch: int, deadline: float) -> int:
            done = 0
            while time.perf_counter() < deadline:
                await enrich(site, ready[done % n : done % n + batch])
                done += batch
            return done

        for label, tasks, batch in (("enrich_conc64_1", 64, 1), ("enrich_conc64_100", 64, 100)):
            if enrich is None:
                break
            deadline = time.perf_counter() + seconds
            t0 = time.perf_counter()
            total = sum(await asyncio.gather(*(enricher(batch, deadline) for _ in range(tasks))))
            out[f"{label}_per_event_us"] = 1e6 * (time.perf_counter() - t0) / total

        for label, tasks, batch in (
            ("append_seq_1", 1, 1),
            ("append_conc64_1", 64, 1),
            ("append_conc64_100", 64, 100),
        ):
            commits = store.commits
            deadline = time.perf_counter() + seconds
            t0 = time.perf_counter()
            total = sum(await asyncio.gather(*(appender(batch, deadline) for _ in range(tasks))))
            out[f"{label}_per_event_us"] = 1e6 * (time.perf_counter() - t0) / total
            out[f"{label}_events_per_commit"] = total / max(1, store.commits - commits)
    finally:
        await store.close()
    return out
