"""README "Capacity": its table covers SQLite and PostgreSQL, single events and batches of 100,
1 and 2 workers, and every events/s-per-core figure is derived from the CPU per event next to it
(1 / CPU seconds per event, as the text says), so figures replaced by a new bench run stay
consistent."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def capacity_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Capacity\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def table_rows(section: str) -> list[list[str]]:
    lines = [line for line in section.splitlines() if line.startswith("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return [r for r in rows[2:] if r]  # after the header and its rule


def number(cell: str) -> float:
    m = re.search(r"[\d,]+(\.\d+)?", cell)
    assert m, cell
    return float(m.group(0).replace(",", ""))


def test_capacity_table_covers_every_case() -> None:
    rows = table_rows(capacity_section())
    assert {(r[0], r[1]) for r in rows} == {
        ("SQLite", "1"),
        ("SQLite", "100"),
        ("PostgreSQL", "1"),
        ("PostgreSQL", "100"),
    }


def test_events_per_core_are_derived_from_cpu_per_event() -> None:
    section = capacity_section()
    assert "bench/scale.py" in section
    assert "1 / (CPU seconds per event)" in section
    for row in table_rows(section):
        for cpu, rate in ((row[2], row[3]), (row[4], row[5])):
            assert cpu.endswith("µs"), row
            derived = 1e6 / number(cpu)
            # the table rounds CPU to whole µs and rates to hundreds
            assert abs(number(rate) - derived) <= 0.015 * derived + 100, row
        if row[0] == "PostgreSQL":
            assert "µs" in row[6], "PostgreSQL's own CPU per event"


def test_replicas_behind_a_load_balancer_are_explained() -> None:
    section = capacity_section()
    for needed in (
        "cookie_secret",
        "/healthz",
        "/readyz",
        "trusted_proxies",
        "X-Forwarded-For",
        "sticky",
        "deploy/kubernetes/",
        "shutdown_grace_seconds",
    ):
        assert needed in section, needed
