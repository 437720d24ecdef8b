"""The time window a page's figures cover (``?range=1h|24h|7d``) and where they come from.

With rollups on, the figures are the stored per-minute rollups of the window plus the minute
not flushed yet (`Providers.window`): they survive restarts and read the same on every store
backend. With rollups off there is no history: the pages show the live counters since start
(the same keys, built by `gateway.core.rollup.snapshot`), and say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Final

from gateway.core.figures import Figures
from gateway.core.rollup import pair_counts, snapshot
from gateway.web.dashboard.handlers import View

RANGES: Final = {"1h": (3600.0, 60.0), "24h": (86400.0, 900.0), "7d": (7 * 86400.0, 7200.0)}
"""Time ranges: span and the over-time chart's step, seconds."""
DEFAULT_RANGE: Final = "24h"


@dataclass(frozen=True, slots=True)
class Window:
    """A page's figures and what they cover."""

    key: str
    """The range key (``24h``)."""
    figures: Figures
    stored: bool
    """True: the rollups of the window; False: the live counters since start."""

    @property
    def label(self) -> str:
        """How the page's headings name the window ("last 24h", "since start")."""
        return f"last {self.key}" if self.stored else "since start"


def range_key(view: View) -> str:
    """The page's range key (the default when absent or unknown)."""
    key = view.query.get("range", DEFAULT_RANGE)
    return key if key in RANGES else DEFAULT_RANGE


async def window_of(view: View) -> Window:
    """Read the figures of the page's range."""
    key = range_key(view)
    provider = view.providers.window
    if provider is not None:
        span, _ = RANGES[key]
        return Window(key, await provider(view.now - span, view.now), stored=True)
    live = view.live
    hits = live.browser()
    counts = snapshot(
        live.ingest,
        {route: rv.tally for route, rv in live.routes().items()},
        live.consent_denied,
        live.routed_away,
        tiers=hits.site_tiers if hits is not None else None,
        reasons=hits.site_reasons if hits is not None else None,
    )
    counts.update(pair_counts(await live.store.dedup_counts()))
    return Window(key, Figures.of_counts(counts), stored=False)


def range_links(page: str, window: Window, extra: str = "") -> str:
    """The range filter of a page (`page`: its link relative to /admin/, `extra`: more query)."""
    if not window.stored:
        return (
            '<p class="note">Rollups are off (<code>[audit] rollups</code>): the figures are'
            " the live counters since start and restart at zero.</p>"
        )
    links = " ".join(
        f'<a href="{page}?range={k}{escape(extra)}"{" class=on" if k == window.key else ""}>{k}</a>'
        for k in RANGES
    )
    return (
        f'<p class="filters">Range: {links} <span class="muted">(the stored per-minute'
        " rollups)</span></p>"
    )
