"""The read-only pages: overview, signal quality, consent, errors.

Row counts, outbox depth and route state come from the store and the workers now; every other
figure (failed attempts, latency, coverage, dedup pairs, consent, dead letters by reason) from
the stored rollups of the page's range (window.py), so they survive restarts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Final

from gateway.core.quality import (
    MATCH_KEY_WEIGHTS,
    coverage,
    match_key_score,
    match_key_terms,
    redact_sample,
    share,
)
from gateway.core.rollup import (
    CONSENT_DROPPED,
    CONSENT_REASON,
    CONSENT_TIER,
    DEAD,
    DEDUP_PAIR,
    DEDUPLICATED,
    QUEUED,
    RETRIED,
    ROUTED_AWAY,
)
from gateway.store.base import Backlog, DeliveryState
from gateway.web.dashboard.charts import bars, lines, stacked
from gateway.web.dashboard.handlers import View
from gateway.web.dashboard.layout import hidden_csrf, num, pct, seconds, table, when
from gateway.web.dashboard.providers import SeriesQuery
from gateway.web.dashboard.window import RANGES, Window, range_links, window_of
from gateway.web.metrics import RouteView

COVERAGE_EVENTS: Final = ("Purchase", "Lead")
ERRORS_SCANNED: Final = 500
"""Newest dead letters per route the errors page groups."""


def _site_dest(route: str) -> tuple[str, str]:
    site, _, destination = route.partition(":")
    return site, destination


def _state(health: Mapping[str, object]) -> str:
    if health.get("paused"):
        return '<span class="pill bad">paused</span>'
    breaker = str(health.get("breaker", "closed"))
    if breaker == "open":
        return '<span class="pill bad">circuit open</span>'
    return '<span class="pill ok">delivering</span>'


def resume_form(route: str, csrf: str, back: str) -> str:
    """The button that lifts a route's credentials pause."""
    return (
        '<form method="post" action="resume" class="inline">'
        f'{hidden_csrf(csrf)}<input type="hidden" name="route" value="{escape(route)}">'
        f'<input type="hidden" name="back" value="{escape(back)}">'
        f'<button type="submit">Resume {escape(route)}</button></form>'
    )


async def overview(view: View) -> tuple[str, str]:
    """Per site and destination: delivered / failed / retrying / dead, outbox, state."""
    live = view.live
    routes = live.routes()
    names = sorted(routes)
    counts = await live.store.counts()
    backlog = await live.store.backlog(names, live.backlog_limit)
    window = await window_of(view)
    failed = window.figures.by_route(RETRIED)
    by_site: dict[str, list[str]] = {}
    for route in names:
        by_site.setdefault(_site_dest(route)[0], []).append(route)
    parts: list[str] = []
    flash = view.query.get("done")
    if flash:
        parts.append(f'<p class="flash">{escape(flash[:200])}</p>')
    for site, site_routes in by_site.items():
        parts.append(f"<h2>Site {escape(site)}</h2>")
        rows: list[tuple[str, Sequence[float]]] = []
        cards: list[str] = []
        for route in site_routes:
            row, card = _route_card(
                view, route, routes[route], counts, backlog.get(route), failed.get(route, 0), window
            )
            rows.append(row)
            cards.append(card)
        parts.append(
            stacked(
                f"Deliveries of site {site}",
                ("delivered", "waiting", "retrying", "dead"),
                rows,
                (0, 1, 2, 3),
            )
        )
        parts.append(f'<div class="grid">{"".join(cards)}</div>')
    if not names:
        parts.append('<p class="muted">No destination is configured.</p>')
    parts.append(await _timeline(view, names))
    return "Overview", "".join(parts)


def _route_card(
    view: View,
    route: str,
    rv: RouteView,
    counts: Mapping[tuple[str, DeliveryState], int],
    found: Backlog | None,
    failed: int,
    window: Window,
) -> tuple[tuple[str, Sequence[float]], str]:
    """One destination's chart row (delivered, waiting, retrying, dead) and its card; `failed`:
    its failed attempts over the page's range (`window`)."""

    def c(state: DeliveryState) -> int:
        return counts.get((route, state), 0)

    delivered, dead, retrying = c(DeliveryState.DONE), c(DeliveryState.DEAD), c(DeliveryState.RETRY)
    waiting = c(DeliveryState.PENDING) + c(DeliveryState.LEASED)
    depth = found.depth if found is not None else 0
    oldest = found.oldest if found is not None else None
    age = max(0.0, view.now - oldest) if oldest is not None else None
    health = rv.health
    extra = ""
    if health.get("paused"):
        reason = redact_sample(str(health.get("paused_reason") or ""))
        extra = f'<p class="bad">Paused: {escape(reason)}</p>' + resume_form(route, view.csrf, "./")
    elif health.get("breaker") == "open":
        why = redact_sample(str(health.get("breaker_reason") or ""))
        extra = f'<p class="warn">Platform down: {escape(why)}</p>'
    capped = "+" if depth >= view.live.backlog_limit else ""
    destination = _site_dest(route)[1]
    card = (
        f'<div class="card"><h3>{escape(destination)} {_state(health)}</h3>'
        '<div class="kv">'
        f"<span>Delivered</span><span>{num(delivered)}</span>"
        f"<span>Waiting</span><span>{num(waiting)}</span>"
        f"<span>Retrying</span><span>{num(retrying)}</span>"
        f'<span>Dead letters</span><span><a href="dead?route={escape(route)}">'
        f"{num(dead)}</a></span>"
        f"<span>Failed attempts ({escape(window.label)})</span><span>{num(failed)}</span>"
        f"<span>Outbox depth</span><span>{num(depth)}{capped}</span>"
        f"<span>Oldest waiting</span><span>{seconds(age)}</span>"
        f"</div>{extra}</div>"
    )
    return (destination, (delivered, waiting, retrying, dead)), card


async def _timeline(view: View, names: Sequence[str]) -> str:
    """Deliveries over time (the stats provider's rollups), or a note when it is absent."""
    stats = view.providers.stats
    head = "<h2>Over time</h2>"
    if stats is None:
        return head + (
            '<p class="note">Deliveries over time come from the per-minute rollups, which this'
            " build does not provide yet; the figures above are live counts.</p>"
        )
    key = view.query.get("range", "24h")
    span, step = RANGES.get(key, RANGES["24h"])
    route = view.query.get("route") or None
    if route is not None and route not in names:
        route = None
    since = (view.now - span) // step * step
    points = await stats(SeriesQuery(route, since, view.now, step))
    links = " ".join(
        f'<a href="./?range={k}{"&route=" + escape(route) if route else ""}"'
        f"{' class=on' if k == key else ''}>{k}</a>"
        for k in RANGES
    )
    route_links = " ".join(
        f'<a href="./?range={key}&route={escape(r)}">{escape(r)}</a>' for r in names
    )
    fmt = "%H:%M" if span <= 86400 else "%m-%d %H:%M"
    times = [datetime.fromtimestamp(p.start, UTC).strftime(fmt) for p in points]
    chart = lines(
        f"Deliveries per {seconds(step)} ({route or 'all destinations'})",
        times,
        [
            ("delivered", [float(p.delivered) for p in points]),
            ("failed attempts", [float(p.retried) for p in points]),
            ("dead", [float(p.dead) for p in points]),
        ],
    )
    return (
        head
        + f'<p class="filters">Range: {links} · <a href="./?range={key}">all</a>'
        + f" {route_links}</p>"
        + chart
    )


async def signal(view: View) -> tuple[str, str]:
    """Delivery latency, identifier coverage and match-key score, dedup pair rate: all from
    the rollups of the page's range."""
    window = await window_of(view)
    fig = window.figures
    names = sorted(view.live.routes())
    span = escape(window.label)
    parts: list[str] = [range_links("signal", window), "<h2>Delivery latency</h2>"]
    latency_rows = []
    for route in names:
        lat = fig.latency(route)
        latency_rows.append((escape(route), num(lat.accepted), seconds(lat.p50), seconds(lat.p95)))
    parts.append(
        table(("Destination", f"Delivered ({span})", "p50", "p95"), latency_rows, (1, 2, 3))
    )
    parts.append(
        '<p class="muted">Event time to the platform\'s acceptance, interpolated within the'
        f" latency histogram buckets ({span}).</p>"
    )
    parts.append("<h2>Identifier coverage and match-key score</h2>")
    for event in COVERAGE_EVENTS:
        parts.append(f"<h3>{escape(event)}</h3>")
        rows = []
        charts = []
        for route in names:
            delivered = fig.delivered(route)
            cov = coverage(fig.identifiers(route), delivered, event)
            sent = delivered.get(event, 0)
            if sent == 0:
                rows.append((escape(route), "0", "-", '<span class="muted">none delivered</span>'))
                continue
            terms = ", ".join(
                f"{escape(t.name)} {pct(s)}" for t, s in match_key_terms(cov) if s > 0
            )
            rows.append(
                (escape(route), num(sent), f"{match_key_score(cov):.1f} / 10", terms or "-")
            )
            charts.append(
                bars(
                    f"{event} coverage, {route}",
                    [(kind, round(v * 100, 1)) for kind, v in sorted(cov.items())],
                    unit="%",
                )
            )
        parts.append(
            table(
                ("Destination", f"Delivered ({span})", "Match-key score (estimate)", "Terms"),
                rows,
                (1, 2),
            )
        )
        parts.extend(charts)
    weights = ", ".join(f"{escape(t.name)} {t.weight:g}" for t in MATCH_KEY_WEIGHTS)
    parts.append(
        '<p class="muted">The score is an estimate: the sum of weight x coverage with weights'
        f" {weights} (README, Admin dashboard).</p>"
    )
    parts.append("<h2>Pixel + server dedup pairs</h2>")
    queued = fig.by_route(QUEUED)
    dedup_rows = [
        (escape(route), escape(pair), num(n), pct(share(n, queued.get(route, 0))))
        for route in names
        for pair, n in sorted(fig.by_detail(DEDUP_PAIR, route).items())
    ]
    parts.append(
        table(("Destination", "Source pair", "Duplicates", "Pair rate"), dedup_rows, (2, 3))
    )
    parts.append(
        '<p class="muted">Pair rate: duplicates of the pair (e.g. api+loader: the server copy of'
        " an event the browser already sent) per delivery row queued for the destination"
        f" ({span}).</p>"
    )
    return "Signal quality", "".join(parts)


async def consent(view: View) -> tuple[str, str]:
    """Loader hits by consent tier and reason; events consent kept from each destination: from
    the rollups of the page's range."""
    window = await window_of(view)
    fig = window.figures
    span = window.label
    parts: list[str] = [range_links("consent", window)]
    tiers = fig.by_detail(CONSENT_TIER)
    parts.append(f"<h2>Browser hits by consent tier ({escape(span)})</h2>")
    parts.append(bars("Loader hits by tier", sorted(tiers.items())))
    parts.append("<h2>What decided the tier</h2>")
    parts.append(bars("Consent reasons", sorted(fig.by_detail(CONSENT_REASON).items())))
    sites = sorted({site for site, _ in fig.by_site_detail(CONSENT_TIER)})
    if len(sites) > 1:
        per_site = fig.by_site_detail(CONSENT_TIER)
        tier_names = sorted(tiers)
        parts.append(
            table(
                ("Site", *tier_names),
                [
                    (escape(site), *(num(per_site.get((site, t), 0)) for t in tier_names))
                    for site in sites
                ],
                tuple(range(1, len(tier_names) + 1)),
            )
        )
    queued, duplicates = fig.by_route(QUEUED), fig.by_route(DEDUPLICATED)
    denied, away = fig.by_route(CONSENT_DROPPED), fig.by_route(ROUTED_AWAY)
    rows = []
    chart_rows: list[tuple[str, Sequence[float]]] = []
    for route in sorted(view.live.routes()):
        taken = queued.get(route, 0) + duplicates.get(route, 0)
        dropped = denied.get(route, 0)
        rows.append(
            (
                escape(route),
                num(taken),
                num(dropped),
                pct(share(dropped, taken + dropped)),
                num(away.get(route, 0)),
            )
        )
        chart_rows.append((route, (taken, dropped)))
    parts.append(f"<h2>Per destination ({escape(span)})</h2>")
    parts.append(
        stacked("Events per destination", ("queued", "consent-dropped"), chart_rows, (0, 2))
    )
    parts.append(
        table(
            ("Destination", "Queued", "Consent-dropped", "Dropped share", "Routed away"),
            rows,
            (1, 2, 3, 4),
        )
    )
    return "Consent", "".join(parts)


async def errors(view: View) -> tuple[str, str]:
    """Top errors with counts and a PII-free sample; each route's latest delivery error."""
    live = view.live
    routes = live.routes()
    groups: Counter[tuple[str, str, str]] = Counter()
    for route in sorted(routes):
        for info in await live.store.dead_letters(route, ERRORS_SCANNED):
            code, _, detail = (info.reason or "").partition(":")
            groups[(route, code.strip(), redact_sample(detail.strip()))] += 1
    top = groups.most_common(25)
    rows = [
        (
            escape(route),
            f'<a href="dead?route={escape(route)}&reason={escape(code)}">{escape(code)}</a>',
            num(n),
            f"<code>{escape(sample)}</code>" if sample else "-",
        )
        for (route, code, sample), n in top
    ]
    parts = [
        "<h2>Top dead-letter errors</h2>",
        table(("Destination", "Reason", "Count", "Sample (redacted)"), rows, (2,)),
        f'<p class="muted">Grouped over the newest {ERRORS_SCANNED} dead letters of each'
        " destination; e-mails, numbers, digests and tokens are masked in samples.</p>",
    ]
    window = await window_of(view)
    parts.insert(0, range_links("errors", window))
    parts.append(f"<h2>Dead-lettered ({escape(window.label)}), by reason</h2>")
    parts.append(bars("Dead letters by reason", sorted(window.figures.by_detail(DEAD).items())))
    failed = window.figures.by_route(RETRIED)
    latest = [
        (
            escape(route),
            num(failed.get(route, 0)),
            f"<code>{escape(redact_sample(str(rv.health.get('last_error') or '')))}</code>"
            if rv.health.get("last_error")
            else "-",
        )
        for route, rv in sorted(routes.items())
    ]
    parts.append("<h2>Latest delivery error per destination</h2>")
    parts.append(
        table(
            ("Destination", f"Failed attempts ({escape(window.label)})", "Latest error (redacted)"),
            latest,
            (1,),
        )
    )
    parts.append(f'<p class="muted">As of {escape(when(view.now))}.</p>')
    return "Errors", "".join(parts)
