"""Pages over the seams built elsewhere: the conversion gap and the recent events. Without a
provider (`Providers`), each says so instead of inventing figures."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from html import escape
from typing import Final

from gateway.web.dashboard.charts import stacked
from gateway.web.dashboard.handlers import View
from gateway.web.dashboard.layout import num, pct, table, when
from gateway.web.dashboard.providers import GapReport

GAP_DAYS: Final = (1, 7, 30)
EVENTS_LIMIT: Final = 50
MISSING_SHOWN: Final = 200


def _sites(view: View) -> list[str]:
    return sorted({r.partition(":")[0] for r in view.live.routes()})


def _site_links(base: str, sites: list[str], chosen: str, extra: str = "") -> str:
    return " ".join(
        f'<a href="{base}?site={escape(s)}{extra}"{" class=on" if s == chosen else ""}>'
        f"{escape(s)}</a>"
        for s in sites
    )


async def gap(view: View) -> tuple[str, str]:
    """Orders the backend reported vs those each destination delivered; why the rest are
    missing."""
    provider = view.providers.gap
    if provider is None:
        return "Conversion gap", (
            '<p class="note">The conversion gap (orders the backend reported vs those each'
            " platform accepted, with the reason for every missing one) needs the order ledger,"
            " which this build does not provide yet.</p>"
        )
    sites = _sites(view)
    if not sites:
        return "Conversion gap", '<p class="muted">No site is configured.</p>'
    site = view.query.get("site", sites[0])
    if site not in sites:
        site = sites[0]
    days = _int(view.query.get("days"), 7)
    if days not in GAP_DAYS:
        days = 7
    report = await provider(site, view.now - days * 86400, view.now)
    day_links = " ".join(
        f'<a href="gap?site={escape(site)}&days={d}"{" class=on" if d == days else ""}>{d} d</a>'
        for d in GAP_DAYS
    )
    head = (
        f'<p class="filters">Site: {_site_links("gap", sites, site, f"&days={days}")}'
        f" · Period: {day_links}</p>"
        f'<p class="muted">{escape(when(report.since))} to {escape(when(report.until))}</p>'
    )
    return "Conversion gap", head + _gap_body(report)


def _gap_body(report: GapReport) -> str:
    rows = []
    chart = []
    for line in report.lines:
        missing = max(0, line.reported - line.delivered)
        rows.append(
            (
                escape(line.destination),
                num(line.reported),
                num(line.delivered),
                num(missing),
                pct(missing / line.reported if line.reported else None),
            )
        )
        chart.append((line.destination, (float(line.delivered), float(missing))))
    parts = [
        stacked("Orders per destination", ("delivered", "missing"), chart, (0, 3)),
        table(("Destination", "Reported", "Delivered", "Missing", "Gap"), rows, (1, 2, 3, 4)),
    ]
    for line in report.lines:
        if not line.missing:
            continue
        parts.append(f"<h2>Missing at {escape(line.destination)}</h2>")
        shown = line.missing[:MISSING_SHOWN]
        parts.append(
            table(
                ("Order id", "Event id", "Why", "Detail"),
                (
                    (
                        f"<code>{escape(m.order_id)}</code>",
                        f"<code>{escape(m.event_id)}</code>",
                        f'<span class="pill warn">{escape(m.reason)}</span>',
                        escape(m.detail),
                    )
                    for m in shown
                ),
            )
        )
        if len(line.missing) > len(shown):
            parts.append(f'<p class="muted">{len(line.missing) - len(shown)} more not shown.</p>')
    return "".join(parts)


async def events(view: View) -> tuple[str, str]:
    """The last events as received (hashed) and as sent to each destination."""
    provider = view.providers.events
    if provider is None:
        return "Recent events", (
            '<p class="note">The recent-events view (the last events as received, hashed, and'
            " as sent to each platform with its answer) needs the debug ring, which this build"
            " does not provide yet.</p>"
        )
    sites = _sites(view)
    site = view.query.get("site") or None
    if site is not None and site not in sites:
        site = None
    destination = view.query.get("destination") or None
    if destination is not None and len(destination) > 64:
        destination = None
    found = await provider(site, destination, EVENTS_LIMIT)
    rows = []
    for ev in found:
        sent = "".join(
            f"<details><summary>{escape(copy.destination)} "
            f'<span class="pill {_tone(copy.status)}">'
            f"{escape(str(copy.status) if copy.status is not None else 'unsent')}</span>"
            f"</summary><pre>{escape(_pretty(copy.payload))}</pre></details>"
            for copy in ev.sent
        )
        rows.append(
            (
                escape(_clock(ev.received_at)),
                escape(ev.site),
                escape(ev.source),
                escape(ev.event_name),
                f"<code>{escape(ev.event_id)}</code>",
                "<details><summary>received</summary>"
                f"<pre>{escape(_pretty(ev.received))}</pre></details>",
                sent or '<span class="muted">not sent yet</span>',
            )
        )
    links = _site_links("events", sites, site or "")
    head = f'<p class="filters">Site: <a href="events">all</a> {links}</p>'
    return "Recent events", head + table(
        ("Received", "Site", "Source", "Event", "Event id", "As received", "As sent"), rows
    )


def _tone(status: int | None) -> str:
    return "ok" if status is not None and status < 300 else "bad"


def _pretty(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S") if math.isfinite(ts) else "-"


def _int(raw: str | None, default: int) -> int:
    return int(raw) if raw and raw.isascii() and raw.isdigit() and len(raw) < 6 else default
