"""bench/scale.py's own logic (with bench/proctree.py and bench/benchstores.py), without a load
run: the process-tree CPU count (live children and reaped ones), the verdicts on synthetic
results (which pass, which miss, which case a miss profiles), the capacity rows derived from CPU
per event, the py-spy summary of a raw file with several processes and the store check."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import benchstores  # noqa: E402 - bench/ is not a package
import proctree  # noqa: E402
import scale  # noqa: E402
from scale import Case, Result  # noqa: E402

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"
"""A child that burns `s` CPU seconds."""


def result(store: str, workers: int, batch: int, us: float, rnd: int = 0) -> Result:
    events = 100_000
    cpu = us * events / 1e6
    return Result(
        store=store,
        workers=workers,
        batch=batch,
        round=rnd,
        duration_s=10.0,
        acknowledged_events=events,
        events_per_s=events / 10,
        p50_ms=1.0,
        p99_ms=2.0,
        gateway_cpu_s=cpu,
        gateway_us_per_event=us,
        postgres_cpu_s=cpu / 2 if store == "postgres" else None,
        postgres_us_per_event=us / 2 if store == "postgres" else None,
        gateway_processes=1 if workers == 1 else workers + 1,
        client_cpu_pct=30.0,
        other_cpu_pct=0.0,
        rows={"events": events, "deliveries": events},
        expected_rows=events,
    )


CASES = [Case(s, w, b) for s in ("sqlite", "postgres") for w in (1, 2) for b in (1, 100)]


def test_tree_cpu_counts_live_and_reaped_children() -> None:
    """A grandchild burning CPU is counted while it runs and, once its parent reaped it,
    through the parent's reaped-children total: nothing escapes the tree's count."""
    script = (
        "import subprocess, sys, time\n"
        f"subprocess.run([sys.executable, '-c', {BURN.format(s=0.6)!r}])\n"
        "print('reaped', flush=True)\n"
        "time.sleep(30)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        seen_child = False
        while time.monotonic() < deadline and not seen_child:
            seen_child = len(proctree.tree_pids(parent.pid)) >= 2
            time.sleep(0.01)
        assert seen_child, "the grandchild never showed up in the tree"
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "reaped"
        cpu, alive = proctree.tree_cpu(parent.pid)
        assert alive == 1  # the burner is gone ...
        assert cpu >= 0.5  # ... but its 0.6 s are in the parent's reaped total
    finally:
        parent.kill()
        parent.wait()
        assert parent.stdout is not None
        parent.stdout.close()


def test_tree_pids_of_this_process_holds_its_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        pids = proctree.tree_pids(os.getpid())
        assert os.getpid() in pids
        assert child.pid in pids
        assert proctree.tree_pids(child.pid) == {child.pid}
    finally:
        child.kill()
        child.wait()


def test_verdicts_compare_medians_and_flag_the_dearer_case() -> None:
    results = [
        result("sqlite", 1, 1, 100.0),
        result("sqlite", 2, 1, 110.0),  # x1.10: pass
        result("sqlite", 1, 100, 20.0),
        result("sqlite", 2, 100, 25.0),  # x1.25: miss
        result("postgres", 1, 1, 140.0),  # x1.40 of sqlite: pass
        result("postgres", 2, 1, 160.0),  # x1.14 of 1 worker; x1.45 of sqlite 2w
        result("postgres", 1, 100, 40.0),  # x2.0 of sqlite: miss
        result("postgres", 2, 100, 41.0),
    ]
    verdicts = scale.verdicts(results, CASES)
    by = {(v["kind"], Case(**v["other"])): v for v in verdicts}
    assert len(verdicts) == 8
    assert by["workers", Case("sqlite", 2, 1)]["pass"] is True
    assert by["workers", Case("sqlite", 2, 1)]["ratio"] == pytest.approx(1.10)
    assert by["workers", Case("sqlite", 2, 100)]["pass"] is False
    assert by["workers", Case("postgres", 2, 1)]["pass"] is True
    assert by["postgres", Case("postgres", 1, 1)]["ratio"] == pytest.approx(1.40)
    assert by["postgres", Case("postgres", 1, 100)]["pass"] is False
    assert by["postgres", Case("postgres", 2, 100)]["ratio"] == pytest.approx(41 / 25)
    missed = {Case(**v["other"]) for v in verdicts if not v["pass"]}
    assert missed == {Case("sqlite", 2, 100), Case("postgres", 1, 100), Case("postgres", 2, 100)}
    for v in verdicts:
        assert ("PASS" if v["pass"] else "MISS") in scale.verdict_line(v)


def test_medians_of_rounds_decide() -> None:
    """Three rounds: the median run counts, so one disturbed round does not flip a verdict."""
    results = [
        result("sqlite", 1, 100, 20.0, 0),
        result("sqlite", 1, 100, 21.0, 1),
        result("sqlite", 1, 100, 60.0, 2),  # a noisy round
        result("sqlite", 2, 100, 22.0, 0),
        result("sqlite", 2, 100, 90.0, 1),  # another
        result("sqlite", 2, 100, 22.5, 2),
    ]
    cases = [Case("sqlite", 1, 100), Case("sqlite", 2, 100)]
    median = scale.median_of(results, cases[0])
    assert median is not None
    assert median.gateway_us_per_event == 21.0
    (v,) = scale.verdicts(results, cases)
    assert v["ratio"] == pytest.approx(22.5 / 21.0)
    assert v["pass"] is True


def test_capacity_is_one_over_cpu_per_event() -> None:
    rows = scale.capacity(
        [result("sqlite", 1, 100, 25.0), result("postgres", 1, 100, 40.0)],
        [Case("sqlite", 1, 100), Case("postgres", 1, 100)],
    )
    sqlite, postgres = rows
    assert sqlite["events_per_s_per_gateway_core"] == pytest.approx(40_000)
    assert sqlite["events_per_s_per_core_with_postgres"] == pytest.approx(40_000)
    assert postgres["events_per_s_per_gateway_core"] == pytest.approx(25_000)
    # the database's own CPU (20 us/event here) counted too: 1e6 / (40 + 20)
    assert postgres["events_per_s_per_core_with_postgres"] == pytest.approx(1e6 / 60)


def test_table_marks_a_busy_machine() -> None:
    quiet = result("sqlite", 1, 1, 100.0)
    busy = result("sqlite", 2, 1, 100.0)
    busy.other_cpu_pct = 80.0
    lines = scale.table([quiet, busy]).splitlines()
    row = {line.split("  ")[0]: line for line in lines}
    assert not row["sqlite, 1 worker, 1 event/req"].endswith("!")
    assert row["sqlite, 2 workers, 1 event/req"].endswith("!")
    assert "10,000" in row["sqlite, 1 worker, 1 event/req"]  # ev/s/core = 1e6 / 100 us


def test_spy_summary_counts_every_process_per_event(tmp_path: Path) -> None:
    raw = tmp_path / "spy.txt"
    worker = 'process 11:"python -m gateway run";thread (11): MainThread;<module> (x.py:1)'
    raw.write_text(
        f"{worker};handle (/s/gateway/web/api.py:10);loads (/usr/lib/json.py:5) 300\n"
        f"{worker};append (/s/gateway/store/sqlite.py:20) 200\n"
        'process 12:"python -m gateway run";thread (12): MainThread;<module> (x.py:1);'
        "handle (/s/gateway/web/api.py:10) 100\n"
        'process 10:"python -m gateway run";thread (10): MainThread;'
        "_run_module_as_main (runpy.py:1);wait (/s/gateway/supervisor.py:5) 100\n"
    )
    summary = proctree.spy_summary(raw, us_per_event=70.0)
    assert summary["samples"] == 700
    assert summary["measured_us_per_event"] == 70.0
    # the measured CPU per event, split by each row's share of the samples
    owner = {k: (pct, us) for k, pct, us in summary["owner"]}
    assert owner == {
        "handle (gateway/web/api.py)": (57.1, 40.0),  # both workers
        "append (gateway/store/sqlite.py)": (28.6, 20.0),
        "wait (gateway/supervisor.py)": (14.3, 10.0),
    }
    threads = {k: pct for k, pct, _ in summary["threads"]}
    assert threads == {
        "pid 11 MainThread": 71.4,
        "pid 12 MainThread": 14.3,
        "pid 10 MainThread": 14.3,
    }
    leaf = {k: us for k, _, us in summary["self"]}
    assert leaf["loads (/usr/lib/json.py)"] == 30.0
    lines = scale.profile_lines(
        {"case": {"store": "sqlite", "workers": 2, "batch": 1}, "raw": str(raw), **summary}
    )
    assert any("us/event  handle (gateway/web/api.py)" in line for line in lines)


def test_a_store_missing_acknowledged_events_fails_the_case() -> None:
    benchstores.check_rows("case", {"events": 1000, "deliveries": 1000}, 1000, 64)
    benchstores.check_rows(
        "case", {"events": 1064, "deliveries": 1064}, 1000, 64
    )  # cut-off requests
    with pytest.raises(RuntimeError, match="not storing what it acknowledges"):
        benchstores.check_rows("case", {"events": 999, "deliveries": 999}, 1000, 64)
    with pytest.raises(RuntimeError, match="not storing"):  # an event without its delivery row
        benchstores.check_rows("case", {"events": 1000, "deliveries": 990}, 1000, 64)
    with pytest.raises(RuntimeError, match="not storing"):  # more than the cut-off slack
        benchstores.check_rows("case", {"events": 1100, "deliveries": 1100}, 1000, 64)


def test_thread_names_for_perf_rows(tmp_path: Path) -> None:
    raw = tmp_path / "spy.txt"
    raw.write_text(
        'process 10:"sup";process 11:"w0";thread (11): MainThread;f (a.py:1) 5\n'
        'process 10:"sup";process 12:"w1";thread (13): sqlite-store-reader;f (a.py:1) 2\n'
        'process 10:"sup";thread (10): MainThread;f (a.py:1) 1\n'
    )
    assert proctree.thread_names(raw) == {
        11: "pid 11 MainThread",
        13: "pid 12 sqlite-store-reader",
        10: "pid 10 MainThread",
    }


def test_auto_placement_keeps_workers_off_the_database_servers_core() -> None:
    """`auto`: SQLite's workers get a core each (the load generator, light, shares one);
    PostgreSQL's stay off the core its server is pinned to, so on two cores they share the
    other; `spread` ignores the server, `stacked` and an unpinned gateway pin nothing."""
    assert scale.worker_cores("auto", 0, 2, None) == (0, 1)
    assert scale.worker_cores("auto", 0, 2, 1) == ()
    assert scale.worker_cores("auto", 0, 4, 1) == (0, 2, 3)
    assert scale.worker_cores("auto", 1, 4, None) == (1, 2, 3, 0)
    assert scale.worker_cores("spread", 0, 2, 1) == (0, 1)
    assert scale.worker_cores("stacked", 0, 4, None) == ()
    assert scale.worker_cores("auto", None, 4, None) == ()
    assert scale.worker_cores("spread", 0, 1, None) == ()


def test_a_missed_target_is_explained_by_what_the_dearer_case_spends_more() -> None:
    cheap = scale.Case("postgres", 1, 1)
    dear = scale.Case("postgres", 2, 1)
    base = {"case": asdict(cheap), "owner_us": {"a": 10.0, "b": 5.0, "c": 1.0}}
    other = {"case": asdict(dear), "owner_us": {"a": 10.5, "b": 9.0, "d": 2.0}}
    diff = scale.profile_difference(base, other, top=3)
    assert diff["base"] == asdict(cheap)
    assert diff["rows"] == [("b", 5.0, 9.0, 4.0), ("d", 0.0, 2.0, 2.0), ("a", 10.0, 10.5, 0.5)]
    lines = scale.profile_lines(
        {
            **other,
            "samples": 10,
            "measured_us_per_event": 21.5,
            "raw": "r",
            "threads": [],
            "owner": [],
            "self": [],
            "difference": diff,
        }
    )
    assert any("more per event than postgres, 1 worker" in line for line in lines), lines
    assert lines[-3].split() == ["5.00", "9.00", "+4.00", "b"]
