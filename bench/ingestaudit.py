"""The parts of bench/ingest.py's ``--audit`` mode (issue #12: what per-minute rollups and
``/metrics`` scraping cost the ingest path): the gateway config with rollups off or on, the
scraper thread, and the count of accepted events the stored rollups hold."""

from __future__ import annotations

import sqlite3
import threading
import urllib.request
from pathlib import Path

from ingestreport import AUDIT_FLUSH_SECONDS, AUDIT_SCRAPE_SECONDS

ADMIN_TOKEN = "sg_bench_admin_0123456789abcdef"  # noqa: S105 - a throwaway bench token


def audit_toml(gateway_toml: str, on: bool) -> str:
    """`gateway_toml` with an admin token (for /metrics) and `[audit]` rollups off or on (on:
    written every AUDIT_FLUSH_SECONDS instead of every minute, so short runs pay for them)."""
    toml = gateway_toml.replace("[storage]", f'admin_token = "{ADMIN_TOKEN}"\n\n[storage]', 1)
    audit = f"rollups = true\nflush_seconds = {AUDIT_FLUSH_SECONDS}" if on else "rollups = false"
    return toml + f"\n[audit]\n{audit}\n"


class Scraper:
    """GET /metrics with the admin token every AUDIT_SCRAPE_SECONDS on a thread, counting the
    200 answers (a failed scrape counts as a check failure of the case)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ok = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics scraper", daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/metrics",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        while not self._stop.wait(AUDIT_SCRAPE_SECONDS):
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
                    answer.read()
                    self.ok += answer.status == 200
            except OSError:
                self.failed += 1


def rolled_up(db: Path) -> int:
    """Events the stored rollups count accepted (read-only)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (n,) = conn.execute(
            "SELECT coalesce(sum(value), 0) FROM stats_minute WHERE metric = 'accepted'"
        ).fetchone()
    finally:
        conn.close()
    return int(n)
