"""The gateway under tracemalloc (drain_rss.py ``--trace``): the ``_traced`` child that runs it
with glibc's and SQLite's own memory counters sampled beside, the parent's side of its
handshake, and the report of what grew between the start of a phase and its peak."""

from __future__ import annotations

import ctypes
import functools
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from procmem import mb, status_kb

TRACE_FRAMES = 12


TRACE_TOP = 15


class MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (all size_t)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@functools.cache
def _mallinfo2() -> Any:
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = MallInfo2
    return fn


def mallinfo() -> dict[str, int] | None:
    """glibc malloc's counters over all arenas (None off glibc or before 2.33)."""
    fn = _mallinfo2()
    if fn is None:
        return None
    info = fn()
    return {
        "arena_bytes": info.arena,
        "mmapped_bytes": info.hblkhd,
        "in_use_bytes": info.uordblks,
        "free_in_arenas_bytes": info.fordblks,
        "trimmable_bytes": info.keepcost,
    }


@functools.cache
def _sqlite_lib() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libsqlite3.so.0")
    except OSError:
        return None


def sqlite_memory() -> dict[str, int] | None:
    """SQLite's own count of the bytes it has allocated (page caches, schemas, statements), now
    and at its high, for the whole process (None when the library cannot be loaded)."""
    lib = _sqlite_lib()
    if lib is None:
        return None
    now, high = ctypes.c_int64(), ctypes.c_int64()
    if lib.sqlite3_status64(0, ctypes.byref(now), ctypes.byref(high), 0) != 0:
        return None
    return {"used_bytes": now.value, "high_bytes": high.value}


def cyclic_garbage(top: int = 12) -> dict[str, Any]:
    """Collect every generation, keeping what only the cycle collector could free; return how
    many objects that was, by type (the most common `top`), with their shallow sizes."""
    import gc
    from collections import Counter

    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        found = gc.collect()
        kinds: Counter[str] = Counter()
        sizes: Counter[str] = Counter()
        for obj in gc.garbage:
            name = f"{type(obj).__module__}.{type(obj).__qualname__}"
            kinds[name] += 1
            sizes[name] += sys.getsizeof(obj)
        total = sum(sizes.values())
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
    return {
        "objects": found,
        "shallow_mb": round(total / 2**20, 2),
        "by_type": [
            {"type": k, "count": n, "shallow_mb": round(sizes[k] / 2**20, 2)}
            for k, n in kinds.most_common(top)
        ],
    }


def traced_main(argv: Sequence[str]) -> int:
    """``drain_rss.py _traced OUTDIR -- <gateway args>``: run ``python -m gateway <args>``;
    once the parent creates OUTDIR/go (the server listens: start-up is not traced, which would
    take minutes), start tracemalloc, dump the (empty) base snapshot to OUTDIR/base.snap and
    create OUTDIR/ready. From then on append {traced, mallinfo, rss} to OUTDIR/samples.jsonl
    every 0.25 s and dump a snapshot to OUTDIR/peak.snap whenever the traced total passes its
    last dump by 2 MB (at most every 2 s): only blocks allocated since the start are traced, so
    the last dump holds what the work made the process keep. When OUTDIR/dump appears (the
    parent, before stopping it), dump OUTDIR/final.snap and create OUTDIR/dumped."""
    import runpy
    import tracemalloc

    outdir = Path(argv[1])
    gateway_args = list(argv[argv.index("--") + 1 :])
    if gateway_args[:2] == ["-m", "gateway"]:
        gateway_args = gateway_args[2:]

    def sample_loop() -> None:
        while not (outdir / "go").exists():
            time.sleep(0.05)
        python = os.environ.get("DRAIN_RSS_TRACE") != "native"
        if python:
            tracemalloc.start(TRACE_FRAMES)
        begin = time.monotonic()
        if python:
            tracemalloc.take_snapshot().dump(str(outdir / "base.snap"))
        (outdir / "ready").touch()
        dumped, last_dump = 0, 0.0
        with (outdir / "samples.jsonl").open("a") as out:
            while True:
                if (outdir / "dump").exists() and not (outdir / "dumped").exists():
                    if python:
                        tracemalloc.take_snapshot().dump(str(outdir / "final.snap"))
                    (outdir / "garbage.json").write_text(json.dumps(cyclic_garbage()))
                    (outdir / "dumped").touch()
                current, peak = tracemalloc.get_traced_memory()
                now = time.monotonic() - begin
                row = {
                    "t": round(now, 2),
                    "traced": current,
                    "traced_peak": peak,
                    "rss_kb": status_kb(os.getpid()).get("VmRSS", 0),
                    "malloc": mallinfo(),
                    "sqlite": sqlite_memory(),
                }
                out.write(json.dumps(row) + "\n")
                out.flush()
                if python and current > dumped + 2 * 2**20 and now - last_dump >= 2.0:
                    tracemalloc.take_snapshot().dump(str(outdir / "peak.tmp"))
                    os.replace(outdir / "peak.tmp", outdir / "peak.snap")
                    dumped, last_dump = current, now
                time.sleep(0.25)

    threading.Thread(target=sample_loop, name="trace-sampler", daemon=True).start()
    sys.argv = ["gateway", *gateway_args]
    runpy.run_module("gateway", run_name="__main__", alter_sys=True)
    return 0


def final_snapshot(outdir: Path, timeout: float = 120.0) -> None:
    """Ask a `traced_main` child for OUTDIR/final.snap (before stopping it); wait for it."""
    (outdir / "dump").touch()
    deadline = time.monotonic() + timeout
    while not (outdir / "dumped").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def start_tracing(outdir: Path, timeout: float = 60.0) -> None:
    """Tell a `traced_main` child to start tracemalloc; wait until it has."""
    (outdir / "go").touch()
    deadline = time.monotonic() + timeout
    while not (outdir / "ready").exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the traced gateway did not start tracemalloc in {timeout:g} s")
        time.sleep(0.05)


def owner_frame(trace: Any) -> str:
    """The innermost frame of a traceback in gateway code (else the innermost frame), as
    ``path:line``, the path from ``gateway/`` (or the library's file name) on."""
    frames = list(reversed(trace))  # a Traceback runs from the oldest frame to the newest
    entry = ("/gateway/__main__.py", "/gateway/cli.py")
    chosen = next(
        (f for f in frames if "/gateway/" in f.filename and not f.filename.endswith(entry)),
        frames[0] if frames else None,
    )
    if chosen is None:
        return "?"
    path = chosen.filename
    at = path.rfind("/gateway/")
    short = path[at + 1 :] if at >= 0 else "/".join(path.split("/")[-2:])
    return f"{short}:{chosen.lineno}"


def short_site(frame: Any) -> str:
    path = frame.filename
    at = path.rfind("/gateway/")
    short = path[at + 1 :] if at >= 0 else "/".join(path.split("/")[-2:])
    return f"{short}:{frame.lineno}"


def trace_report(outdir: Path) -> dict[str, Any]:
    """What grew between the base and the peak snapshots of a traced run, by allocation site
    and by owning gateway line, plus the samples at the RSS peak."""
    import tracemalloc

    rows = [json.loads(x) for x in (outdir / "samples.jsonl").read_text().splitlines() if x]
    out: dict[str, Any] = {"samples": len(rows)}
    if rows:
        top = max(rows, key=lambda r: r["rss_kb"])
        out["at_rss_peak"] = {
            "t": top["t"],
            "rss_mb": mb(top["rss_kb"]),
            "traced_mb": round(top["traced"] / 2**20, 1),
            "traced_peak_mb": round(top["traced_peak"] / 2**20, 1),
            "malloc_mb": {k: round(v / 2**20, 1) for k, v in (top["malloc"] or {}).items()},
            "sqlite_mb": {k: round(v / 2**20, 1) for k, v in (top.get("sqlite") or {}).items()},
        }
    garbage = outdir / "garbage.json"
    if garbage.exists():
        out["cyclic_garbage_at_end"] = json.loads(garbage.read_text())
    base, peak = outdir / "base.snap", outdir / "peak.snap"
    if not peak.exists():
        peak = outdir / "final.snap"
    if not (base.exists() and peak.exists()):
        return out
    old = tracemalloc.Snapshot.load(str(base))
    new = tracemalloc.Snapshot.load(str(peak))
    skip = [tracemalloc.Filter(False, tracemalloc.__file__)]
    old, new = old.filter_traces(skip), new.filter_traces(skip)
    growth = new.compare_to(old, "lineno")
    out["traced_base_mb"] = round(sum(s.size for s in old.statistics("filename")) / 2**20, 1)
    out["traced_peak_snapshot_mb"] = round(
        sum(s.size for s in new.statistics("filename")) / 2**20, 1
    )
    out["growth_by_site"] = [
        {
            "site": short_site(s.traceback[0]),
            "grew_mb": round(s.size_diff / 2**20, 2),
            "now_mb": round(s.size / 2**20, 2),
            "blocks": s.count,
        }
        for s in growth[:TRACE_TOP]
    ]
    owners: dict[str, list[int]] = {}
    for s in new.compare_to(old, "traceback"):
        entry = owners.setdefault(owner_frame(s.traceback), [0, 0])
        entry[0] += s.size_diff
        entry[1] += s.size
    ranked = sorted(owners.items(), key=lambda kv: -kv[1][0])[:TRACE_TOP]
    out["growth_by_gateway_line"] = [
        {"owner": k, "grew_mb": round(v[0] / 2**20, 2), "now_mb": round(v[1] / 2**20, 2)}
        for k, v in ranked
    ]
    return out
