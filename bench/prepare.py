"""Micro-benchmark of the per-event request-path CPU cost: parse, hash identifiers, encode.

Run on demand (never in CI)::

    .venv/bin/python bench/prepare.py                  # the work tree
    .venv/bin/python bench/prepare.py --against HEAD   # work tree vs. a git revision, same run
    .venv/bin/python bench/prepare.py --against /path/with/gateway --repeat 15 --n 2000

Each measurement runs in a fresh worker process that imports `gateway` from the directory
under test (the work tree, or ``git archive REV gateway`` extracted into a temp dir), so two
versions can be compared in one run; with ``--against`` the workers alternate round by round
and every figure is the best over all rounds, so machine noise hits both sides alike.

Per event (µs, best of ``--repeat`` passes over a batch of ``--n`` events, 100 by default as
in a 100-event request):

* ``json.loads``: the baseline, decoding the same event from its JSON text;
* ``parse_event(obj, now=…, new_id=…, limits=ParseLimits())``;
* ``hash_identifiers(event, ["meta"], default_country="us")``;
* ``encode(event)`` (the stored record bytes);
* ``total``: the three together in the order the request path runs them (`Pipeline.prepare`,
  i.e. parse then hash, for each event of the batch, then `encode` for each event), timed as
  one block. It can exceed the sum of the stages: alternating between code paths costs cache.

Every event is a realistic website ``Purchase`` (e-mail, phone, IP, user agent, URL, fbp,
click id, value, currency, order id, one line item) with a unique e-mail and event id, and
every pass gets freshly decoded dicts, so nothing is served from a cache. The workers also
digest every encoded record and warning: with ``--against`` the run reports whether both
versions produced byte-identical output.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_700_000_000.0
STAGES = ("json_loads", "parse_event", "hash_identifiers", "encode", "total")


def make_event(i: int) -> dict[str, Any]:
    """Return the realistic Purchase event number i (unique e-mail, event id and order id)."""
    return {
        "event": "Purchase",
        "event_id": f"o{i}",
        "url": "https://shop.example/thank-you?o=1",
        "referrer": "https://www.google.com/",
        "user": {
            "email": f"Customer.{i}@Example.com",
            "phone": "+1 650 555 1212",
            "ip": "203.0.113.7",
            "user_agent": (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                "(KHTML, like Gecko) Chrome/120.0 Safari/537.36"
            ),
            "fbp": "fb.1.1596403881668.1116446470",
            "click_ids": {"fbclid": "IwAR2F4-dbP0l7Mn1IawQQ"},
        },
        "data": {
            "value": 49.9,
            "currency": "EUR",
            "order_id": f"o{i}",
            "contents": [{"id": "SKU-1", "quantity": 1, "price": 49.9}],
        },
    }


# -- worker: runs in a child process importing `gateway` from the directory under test --------


def _timed(fn: Callable[[Any], Any], items: Sequence[Any]) -> tuple[float, list[Any]]:
    """Return (µs per item, results) of one pass of fn over items, after a collection."""
    gc.collect()
    t0 = time.perf_counter()
    out = [fn(item) for item in items]
    return 1e6 * (time.perf_counter() - t0) / len(items), out


def worker(n: int, repeat: int, cpu: int | None) -> dict[str, Any]:
    """Measure every stage; return best µs per event and a digest of what was produced."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    from gateway.core.event import Event
    from gateway.core.eventparse import parse_event
    from gateway.core.eventschema import ParseLimits
    from gateway.core.identity import hash_identifiers
    from gateway.core.record import encode

    limits = ParseLimits()
    counter = iter(range(10**9))

    def new_id() -> str:
        return f"id{next(counter)}"

    def parse(obj: Any) -> Any:
        return parse_event(obj, now=NOW, new_id=new_id, limits=limits)

    def hash_ids(event: Any) -> Any:
        return hash_identifiers(event, ["meta"], default_country="us")

    def prepare(obj: Any) -> Any:  # what Pipeline.prepare does with an accepted event
        event = parse_event(obj, now=NOW, new_id=new_id, limits=limits)
        assert isinstance(event, Event), event
        return hash_identifiers(event, ["meta"], default_country="us")[0]

    def total(objs: list[Any]) -> list[bytes]:
        prepared = [prepare(obj) for obj in objs]
        return [encode(event) for event in prepared]

    best = dict.fromkeys(STAGES, float("inf"))
    digest = hashlib.sha256()
    records: list[bytes] = []
    for r in range(repeat):
        # Fresh, never-seen events every pass: unique e-mails/ids, new dict objects.
        bodies = [json.dumps(make_event(r * n + i)) for i in range(n)]
        us, objs = _timed(json.loads, bodies)
        best["json_loads"] = min(best["json_loads"], us)
        us, events = _timed(parse, objs)
        best["parse_event"] = min(best["parse_event"], us)
        if not all(hasattr(e, "event_id") for e in events):
            raise SystemExit(f"parse_event refused an event: {events[0]!r}")
        us, results = _timed(hash_ids, events)
        best["hash_identifiers"] = min(best["hash_identifiers"], us)
        us, records = _timed(encode, [e for e, _ in results])
        best["encode"] = min(best["encode"], us)
        objs = [json.loads(b) for b in bodies]
        us, (combined,) = _timed(total, [objs])
        best["total"] = min(best["total"], us / n)
        if r == 0:
            for record, (_, warnings) in zip(records, results, strict=True):
                digest.update(record)
                digest.update(repr(warnings).encode())
            if combined != records:
                raise SystemExit("total pass produced different records than the stages")
    return {"us": best, "digest": digest.hexdigest(), "sample": records[0].decode()}


# -- driver -------------------------------------------------------------------------------------


def extract_rev(rev: str, into: Path) -> Path:
    """Extract `gateway/` of a git revision into `into`; return that directory."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev, "gateway"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    tar_path = into / "src.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into / "src", filter="data")
    return into / "src"


def run_worker(source: Path, n: int, repeat: int, cpu: int | None) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(source), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--n", str(n)]
    cmd += ["--repeat", str(repeat)] + (["--cpu", str(cpu)] if cpu is not None else [])
    # Run from a neutral directory so `gateway` is found only through PYTHONPATH.
    out = subprocess.run(cmd, env=env, cwd=tempfile.gettempdir(), check=True, capture_output=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100, help="events per pass (default 100)")
    parser.add_argument("--repeat", type=int, default=100, help="passes per round (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="worker rounds per side (default 3)")
    parser.add_argument("--against", help="git revision or directory holding `gateway/`")
    parser.add_argument("--cpu", type=int, help="pin workers to this core")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.n, args.repeat, args.cpu)))
        return 0

    with tempfile.TemporaryDirectory(prefix="sg-prepare-") as tmp:
        sides: dict[str, Path] = {"work tree": ROOT}
        if args.against:
            given = Path(args.against)
            before = given if (given / "gateway").is_dir() else extract_rev(args.against, Path(tmp))
            sides = {f"before ({args.against})": before, "after (work tree)": ROOT}
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
        for _ in range(args.rounds):
            for name, source in sides.items():
                results[name].append(run_worker(source, args.n, args.repeat, args.cpu))

    best = {
        name: {s: min(r["us"][s] for r in runs) for s in STAGES} for name, runs in results.items()
    }
    print(
        f"per-event CPU, µs (best of {args.rounds} rounds x {args.repeat} passes x {args.n} "
        f"events; Python {sys.version.split()[0]})"
    )
    names = list(sides)
    print(f"{'stage':<18}" + "".join(f"{name:>22}" for name in names))
    for stage in STAGES:
        row = "".join(f"{best[name][stage]:>22.2f}" for name in names)
        print(f"{stage:<18}{row}")
    ratio = "".join(f"{best[name]['total'] / best[name]['json_loads']:>21.1f}x" for name in names)
    print(f"{'total/json.loads':<18}{ratio}")
    summed = "".join(f"{sum(best[name][s] for s in STAGES[1:4]):>22.2f}" for name in names)
    print(f"{'sum of stages':<18}{summed}")
    if len(names) == 2:
        a, b = names
        print(f"speed-up of total: {best[a]['total'] / best[b]['total']:.2f}x")
        digests = {r["digest"] for runs in results.values() for r in runs}
        same = "yes" if len(digests) == 1 else "NO — outputs differ"
        print(f"identical records and warnings in both versions: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
