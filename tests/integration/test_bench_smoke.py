"""The issue #11 benchmarks still work end to end (tiny runs; the figures are not checked):
bench/delivery.py delivers every event to every registered platform's sandbox exactly once, and
bench/fanout.py stores one delivery row per event and destination. Both exit 1 when one of
their own checks fails, so a broken platform entry, sandbox or fan-out fails these tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.destinations import DESTINATIONS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

from platforms import PLATFORMS  # noqa: E402 - bench/ is not a package

NO_PINNING = ["--server-cpu", "-1", "--client-cpu", "-1", "--quiet-wait", "0"]


def run_bench(script: str, *args: str, out: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *NO_PINNING, "--json", str(out), *args],
        capture_output=True,
        text=True,
        timeout=200,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return dict(json.loads(out.read_text()))


def expected_names() -> list[str]:
    return [n for n in DESTINATIONS if n in PLATFORMS]


def test_delivery_bench_delivers_every_event_to_every_sandbox_once(tmp_path: Path) -> None:
    doc = run_bench("delivery.py", "--events", "250", "--stall", "60", out=tmp_path / "d.json")
    results = doc["results"]
    assert isinstance(results, list)
    names = expected_names()
    assert [r["destinations"] for r in results] == [["meta"], names]
    for result in results:
        assert result["deliveries"] == 250 * len(result["destinations"])
        assert result["deliveries_per_s"] > 0
        for name, platform in result["per_platform"].items():
            assert (platform["accepted"], platform["rejected"]) == (250, 0), name
        assert result["outbox"]["deliveries_done"] == result["deliveries"]
    verdict = doc["verdict"]
    assert isinstance(verdict, dict)
    assert verdict["destinations"] == len(names)
    assert verdict["ratio"] > 0


def test_fanout_bench_stores_a_row_per_destination(tmp_path: Path) -> None:
    doc = run_bench(
        "fanout.py",
        "--loadgen",
        "python",
        "--duration",
        "1",
        "--warmup",
        "0.5",
        "--connections",
        "4",
        "--no-snapshot",
        out=tmp_path / "f.json",
    )
    names = expected_names()
    env = doc["environment"]
    assert isinstance(env, dict)
    assert env["destinations"] == names
    results = doc["results"]
    assert isinstance(results, list)
    assert [r["server"] for r in results] == ["1 dest (meta)", f"{len(names)} dest"]
    for result, count in zip(results, (1, len(names)), strict=True):
        assert result["ok_202"] > 0
        assert result["rows"]["deliveries"] >= result["expected_rows"] > 0
        assert result["rows"]["events"] * count >= result["expected_rows"]
    verdict = doc["verdict"]
    assert isinstance(verdict, dict)
    assert verdict["ratio"] > 0


def test_ingest_audit_cases_compare_rollups_on_and_off(tmp_path: Path) -> None:
    """#12: `ingest.py --audit-only` runs the gateway with rollups off and on (rollups written
    and /metrics scraped while loaded) and reports the ratio; the on case checks its rollups."""
    doc = run_bench(
        "ingest.py",
        "--audit-only",
        "--loadgen",
        "python",
        "--batches",
        "100",
        "--duration",
        "1.5",
        "--warmup",
        "0.5",
        "--connections",
        "4",
        "--no-snapshot",
        out=tmp_path / "i.json",
    )
    results = doc["results"]
    assert isinstance(results, list)
    assert sorted(r["server"] for r in results) == ["audit off", "audit on"]
    for result in results:
        assert result["rows"]["deliveries"] >= result["expected_rows"] > 0
    (on,) = [r for r in results if r["server"] == "audit on"]
    assert on["rolled_up"] >= on["expected_rows"]
    assert on["scrapes"] >= 1
    audit = doc["audit"]
    assert isinstance(audit, dict)
    assert audit["100"]["ratio"] > 0
    costs = doc["audit_costs"]
    assert isinstance(costs, dict)
    assert costs["rows_per_flush"] > 100  # every counter moved between flushes
    assert costs["flush_ms"] > 0
    assert costs["scrape_ms"] > 0


def test_drain_rss_bench_reports_peak_rss_while_queueing_and_draining(tmp_path: Path) -> None:
    """#13: `drain_rss.py` queues events with delivery off, drains them to the sandboxes and
    reports the gateway's peak RSS (VmHWM) of each phase with its RSS-by-mapping breakdown; with
    `--trace` also what tracemalloc saw grow. Figures are not judged here, only reported."""
    doc = run_bench("drain_rss.py", "--events", "300", "--no-snapshot", out=tmp_path / "m.json")
    assert doc["failed"] is False
    results = doc["results"]
    assert isinstance(results, list)
    names = expected_names()
    assert [r["destinations"] for r in results] == [["meta"], names]
    for result in results:
        assert result["outbox"]["deliveries_done"] == 300 * len(result["destinations"])
        queueing, draining = result["queueing"], result["draining"]
        assert queueing["work"] == 300
        assert draining["work"] == 300 * len(result["destinations"])
        for phase in (queueing, draining):
            assert phase["samples"] >= 1
            assert phase["peak_mb"] >= phase["sampled_max_mb"] > 0
            assert phase["smaps_at_high_mb"], phase
            assert phase["trace"] is None
    verdict = doc["verdict"]
    assert isinstance(verdict, dict)
    assert verdict["target_mb"] == 150.0
    assert set(verdict["cases"]) == {r["case"] for r in results}


def test_drain_rss_trace_mode_says_what_grew(tmp_path: Path) -> None:
    """#13: `drain_rss.py --trace` reruns each phase under tracemalloc (started once the server
    listens) with glibc's malloc counters and reports the allocation sites that hold memory."""
    doc = run_bench(
        "drain_rss.py",
        "--events",
        "500",
        "--only-meta",
        "--trace",
        "--no-snapshot",
        out=tmp_path / "t.json",
    )
    assert doc["failed"] is False
    (result,) = doc["results"]
    for key in ("queueing", "draining"):
        trace = result[key]["trace"]
        assert trace["samples"] >= 1, key
        assert trace["at_rss_peak"]["rss_mb"] > 0
        assert trace["at_rss_peak"]["sqlite_mb"]["used_bytes"] > 0  # SQLite's own counter
        assert trace["cyclic_garbage_at_end"]["objects"] >= 0
        assert trace["growth_by_site"], key
        assert all(":" in g["site"] for g in trace["growth_by_site"])
        assert trace["growth_by_gateway_line"], key
