"""bench/scale.py end to end in a tiny run (the figures are not checked): all 8 cases (SQLite
and PostgreSQL, 1 and 2 workers, 1 and 100 events per request) start, are acknowledged, have
their CPU counted over the gateway's whole process tree (and PostgreSQL's apart) and their
store checked against the 202 answers; the JSON carries results, medians, capacity rows and
the 8 verdicts. The bench exits 1 when one of its own checks fails (a gateway that does not
start, answers other than 202, events missing from the store), which fails this test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pgserver import require_postgres

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--loadgen",
    "python",
    "--duration",
    "1",
    "--warmup",
    "0.5",
    "--connections",
    "4",
    "--server-cpu",
    "-1",
    "--client-cpu",
    "-1",
    "--quiet-wait",
    "0",
    "--no-profile",
    "--no-snapshot",
]


def test_scale_bench_measures_every_case(tmp_path: Path) -> None:
    require_postgres()
    out = tmp_path / "scale.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scale.py"), *TINY, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["failed"] is False
    assert doc["environment"]["postgres"]["durable"] is True
    results = doc["results"]
    cases = {(r["store"], r["workers"], r["batch"]) for r in results}
    assert cases == {(s, w, b) for s in ("sqlite", "postgres") for w in (1, 2) for b in (1, 100)}
    assert len(results) == 8
    for r in results:
        name = f"{r['store']} {r['workers']}w {r['batch']}/req"
        assert r["acknowledged_events"] > 0, name
        assert r["acknowledged_events"] % r["batch"] == 0, name
        assert r["rows"]["events"] >= r["expected_rows"] >= r["acknowledged_events"], name
        assert r["rows"]["deliveries"] >= r["expected_rows"], name
        assert r["gateway_cpu_s"] > 0, name
        assert r["gateway_us_per_event"] > 0, name
        # the supervisor and its workers are all counted
        assert r["gateway_processes"] == (1 if r["workers"] == 1 else r["workers"] + 1), name
        if r["store"] == "postgres":
            assert r["postgres_cpu_s"] > 0, name
        else:
            assert r["postgres_cpu_s"] is None, name
    assert len(doc["medians"]) == 8
    capacity = doc["capacity"]
    assert len(capacity) == 8
    for row in capacity:
        assert row["events_per_s_per_gateway_core"] == pytest.approx(
            1e6 / row["gateway_us_per_event"]
        )
    verdicts = doc["verdicts"]
    assert sorted(v["kind"] for v in verdicts) == ["postgres"] * 4 + ["workers"] * 4
    for v in verdicts:
        assert v["ratio"] > 0
        assert isinstance(v["pass"], bool)
    assert "PASS" in done.stdout or "MISS" in done.stdout
