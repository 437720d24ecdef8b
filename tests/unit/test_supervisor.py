"""`run --workers N`: the worker count, configs several workers cannot share, the merged
`[metrics]` scrape, and the generated cookie key that every worker reads."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import base_doc
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import parse
from gateway.secretfile import read_or_create_key
from gateway.supervisor import (
    MAX_WORKERS,
    WorkersError,
    parse_workers,
    plan_of,
    sharing_problems,
    worker_command,
)
from gateway.web.metrics_merge import merge, render


class TestWorkerCount:
    def test_numbers_and_auto(self) -> None:
        assert parse_workers("1") == 1
        assert parse_workers(" 4 ") == 4
        assert parse_workers("auto", cores=lambda: 6) == 6
        assert parse_workers("AUTO", cores=lambda: 0) == 1
        assert parse_workers("auto") == len(os.sched_getaffinity(0))

    @pytest.mark.parametrize("text", ["0", "-1", "two", "1.5", "", "٣", str(MAX_WORKERS + 1)])
    def test_bad_values_name_the_option(self, text: str) -> None:
        with pytest.raises(WorkersError, match="--workers"):
            parse_workers(text)


def _config(tmp_path: Path, **server: Any) -> Any:
    doc = base_doc(tmp_path)
    doc["server"].update(server)
    return parse(doc, {}, tmp_path)


class TestSharing:
    def test_a_fixed_port_can_be_shared(self, tmp_path: Path) -> None:
        assert sharing_problems(_config(tmp_path, port=8080)) == []

    def test_port_zero_and_acme_cannot(self, tmp_path: Path) -> None:
        problems = sharing_problems(_config(tmp_path, port=0))
        assert len(problems) == 1
        assert problems[0].startswith("server.port:")
        doc = base_doc(tmp_path)
        doc["server"]["port"] = 443
        doc["tls"] = {"enabled": True, "http_port": 80}
        doc["acme"] = {"enabled": True}
        doc["sites"][0]["hosts"] = ["track.shop.example"]
        problems = sharing_problems(parse(doc, {}, tmp_path))
        assert [p.split(":")[0] for p in problems] == ["acme.enabled"]

    def test_worker_command_line(self, tmp_path: Path) -> None:
        config = _config(tmp_path, port=8080)
        plan = plan_of(config, "/etc/sg.toml", 2, delivery=False)
        argv = worker_command(plan, 1, "/tmp/x/worker-1.sock")
        assert argv[:2] == [sys.executable, "-m"]
        assert argv[2:] == [
            "gateway", "run", "--config", "/etc/sg.toml", "--worker-slot", "1",
            "--no-delivery", "--metrics-socket", "/tmp/x/worker-1.sock",
        ]  # fmt: skip
        assert plan.url == "http://127.0.0.1:8080"


WORKER_A = """\
# HELP signalgate_events_received_total Events received.
# TYPE signalgate_events_received_total counter
signalgate_events_received_total{site="shop",source="api"} 10.0
signalgate_events_received_total{site="shop",source="loader"} 1.0
# HELP signalgate_delivery_latency_seconds Latency.
# TYPE signalgate_delivery_latency_seconds histogram
signalgate_delivery_latency_seconds_bucket{destination="meta",le="1.0",site="shop"} 3.0
signalgate_delivery_latency_seconds_bucket{destination="meta",le="+Inf",site="shop"} 4.0
signalgate_delivery_latency_seconds_count{destination="meta",site="shop"} 4.0
signalgate_delivery_latency_seconds_sum{destination="meta",site="shop"} 2.5
# HELP signalgate_outbox_depth Rows waiting.
# TYPE signalgate_outbox_depth gauge
signalgate_outbox_depth{destination="meta",site="shop"} 7.0
# HELP signalgate_store_readable Store answered.
# TYPE signalgate_store_readable gauge
signalgate_store_readable 1.0
"""
WORKER_B = (
    WORKER_A.replace("} 10.0", "} 5.0")
    .replace('source="loader"} 1.0', 'source="pixel"} 2.0')
    .replace('le="1.0",site="shop"} 3.0', 'le="1.0",site="shop"} 1.0')
    .replace('_sum{destination="meta",site="shop"} 2.5', '_sum{destination="meta",site="shop"} 0.5')
    .replace("} 7.0", "} 6.0")
    .replace("signalgate_store_readable 1.0", "signalgate_store_readable 0.0")
)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class TestMetricsMerge:
    def test_counters_and_histograms_add_gauges_take_the_worst(self) -> None:
        merged = _samples(render([WORKER_A, WORKER_B], 3).decode())
        received = "signalgate_events_received_total"
        shop = ("site", "shop")
        assert merged[(received, (shop, ("source", "api")))] == 15.0
        assert merged[(received, (shop, ("source", "loader")))] == 1.0
        assert merged[(received, (shop, ("source", "pixel")))] == 2.0
        route = (("destination", "meta"), shop)
        bucket = (("destination", "meta"), ("le", "1.0"), shop)
        assert merged[("signalgate_delivery_latency_seconds_bucket", bucket)] == 4.0
        assert merged[("signalgate_delivery_latency_seconds_count", route)] == 8.0
        assert merged[("signalgate_delivery_latency_seconds_sum", route)] == 3.0
        assert merged[("signalgate_outbox_depth", route)] == 7.0  # the store's figure, once
        assert merged[("signalgate_store_readable", ())] == 0.0  # one worker could not read
        assert merged[("signalgate_workers_scraped", ())] == 2.0
        assert merged[("signalgate_workers", ())] == 3.0

    def test_families_keep_their_type_and_help(self) -> None:
        families = {f.name: f for f in merge([WORKER_A, WORKER_B])}
        assert families["signalgate_events_received"].type == "counter"
        assert families["signalgate_delivery_latency_seconds"].type == "histogram"
        assert families["signalgate_outbox_depth"].documentation == "Rows waiting."
        text = render([WORKER_A], 1).decode()
        assert "# TYPE signalgate_events_received_total counter" in text

    def test_no_worker_answered(self) -> None:
        merged = _samples(render([], 2).decode())
        assert merged == {("signalgate_workers_scraped", ()): 0.0, ("signalgate_workers", ()): 2.0}


RACE = r"""
import os, sys, time
from pathlib import Path
from gateway.secretfile import read_or_create_key
go = Path(sys.argv[2])
deadline = time.monotonic() + 20
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.001)
print(read_or_create_key(Path(sys.argv[1])).hex())
"""


class TestSecretFile:
    def test_processes_racing_to_create_the_key_all_read_one_key(self, tmp_path: Path) -> None:
        key_file = tmp_path / "data" / "outbox.cookie-key"
        go = tmp_path / "go"
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        children = [
            subprocess.Popen(
                [sys.executable, "-c", RACE, str(key_file), str(go)],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(6)
        ]
        time.sleep(0.5)
        go.touch()
        keys = {child.communicate(timeout=30)[0].strip() for child in children}
        assert all(child.returncode == 0 for child in children)
        assert len(keys) == 1
        (key,) = keys
        assert len(bytes.fromhex(key)) == 32
        assert key_file.read_text() == key
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert sorted(p.name for p in key_file.parent.iterdir()) == ["outbox.cookie-key"]

    def test_an_existing_key_is_kept_and_a_broken_one_replaced(self, tmp_path: Path) -> None:
        path = tmp_path / "k"
        path.write_text("ab" * 32 + "\n")
        assert read_or_create_key(path) == bytes.fromhex("ab" * 32)
        path.write_text("not hex")
        fresh = read_or_create_key(path)
        assert len(fresh) == 32
        assert read_or_create_key(path) == fresh
