"""Inline SVG charts: pure string builders, every label escaped, colours from CSS classes.

Each chart is a self-contained ``<svg>`` with ``role="img"`` and a ``<title>`` (screen readers,
and the tooltip of a hovered shape); it scales to its container (``viewBox``, width 100%).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Final

WIDTH: Final = 600
ROW: Final = 26
LABEL_W: Final = 170


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def bars(title: str, rows: Sequence[tuple[str, float]], *, unit: str = "") -> str:
    """A horizontal bar per (label, value), scaled to the largest value."""
    if not rows:
        return _empty(title)
    top = max((v for _, v in rows), default=0.0) or 1.0
    height = ROW * len(rows) + 8
    span = WIDTH - LABEL_W - 70
    parts = [_open(title, height)]
    for i, (label, value) in enumerate(rows):
        y = 4 + i * ROW
        w = max(0.0, value) / top * span
        text = escape(f"{label}: {_fmt(value)}{unit}")
        parts.append(
            f'<text x="{LABEL_W - 6}" y="{y + 17}" class="lbl" text-anchor="end">'
            f"{escape(_clip(label))}</text>"
            f'<rect x="{LABEL_W}" y="{y + 4}" width="{_num(w)}" height="{ROW - 8}"'
            f' class="c{i % 6}">'
            f"<title>{text}</title></rect>"
            f'<text x="{_num(LABEL_W + w + 6)}" y="{y + 17}" class="val">'
            f"{escape(_fmt(value) + unit)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def stacked(
    title: str,
    parts_of: Sequence[str],
    rows: Sequence[tuple[str, Sequence[float]]],
    colours: Sequence[int] = (),
) -> str:
    """A horizontal stacked bar per row (its values in the order of `parts_of`), with a legend;
    every row is scaled to the largest row total. `colours`: the palette index of each part
    (default: in order)."""
    tone = [colours[k] if k < len(colours) else k for k in range(len(parts_of))]
    if not rows:
        return _empty(title)
    top = max((sum(v) for _, v in rows), default=0.0) or 1.0
    legend_h = 24
    height = legend_h + ROW * len(rows) + 8
    span = WIDTH - LABEL_W - 70
    out = [_open(title, height)]
    x = 0.0
    for k, name in enumerate(parts_of):
        out.append(
            f'<rect x="{_num(x)}" y="4" width="12" height="12" class="c{tone[k] % 6}"/>'
            f'<text x="{_num(x + 16)}" y="15" class="lbl">{escape(name)}</text>'
        )
        x += 22 + 7.5 * len(name)
    for i, (label, values) in enumerate(rows):
        y = legend_h + 4 + i * ROW
        out.append(
            f'<text x="{LABEL_W - 6}" y="{y + 17}" class="lbl" text-anchor="end">'
            f"{escape(_clip(label))}</text>"
        )
        x = float(LABEL_W)
        for k, value in enumerate(values):
            w = max(0.0, value) / top * span
            if w > 0:
                tip = escape(f"{label} {parts_of[k]}: {_fmt(value)}")
                out.append(
                    f'<rect x="{_num(x)}" y="{y + 4}" width="{_num(w)}" height="{ROW - 8}"'
                    f' class="c{tone[k] % 6}"><title>{tip}</title></rect>'
                )
            x += w
        out.append(
            f'<text x="{_num(x + 6)}" y="{y + 17}" class="val">{escape(_fmt(sum(values)))}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def lines(
    title: str,
    times: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
) -> str:
    """A line per named series over the x labels `times` (first and last are printed)."""
    n = len(times)
    if n == 0 or not series:
        return _empty(title)
    height = 220
    left, right, top_pad, bottom = 48, 12, 28, 28
    plot_w = WIDTH - left - right
    plot_h = height - top_pad - bottom
    top = max((max(vals, default=0.0) for _, vals in series), default=0.0) or 1.0
    out = [_open(title, height)]
    x = float(left)
    for k, (name, _) in enumerate(series):
        out.append(
            f'<rect x="{_num(x)}" y="6" width="12" height="12" class="c{k % 6}"/>'
            f'<text x="{_num(x + 16)}" y="17" class="lbl">{escape(name)}</text>'
        )
        x += 22 + 7.5 * len(name)
    base = top_pad + plot_h
    out.append(
        f'<line x1="{left}" y1="{base}" x2="{WIDTH - right}" y2="{base}" class="axis"/>'
        f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{base}" class="axis"/>'
        f'<text x="{left - 4}" y="{top_pad + 10}" class="val" text-anchor="end">'
        f"{escape(_fmt(top))}</text>"
        f'<text x="{left - 4}" y="{base}" class="val" text-anchor="end">0</text>'
        f'<text x="{left}" y="{height - 8}" class="val">{escape(times[0])}</text>'
        f'<text x="{WIDTH - right}" y="{height - 8}" class="val" text-anchor="end">'
        f"{escape(times[-1])}</text>"
    )
    step = plot_w / max(1, n - 1)
    for k, (name, values) in enumerate(series):
        points = " ".join(
            f"{_num(left + i * step)},{_num(base - max(0.0, v) / top * plot_h)}"
            for i, v in enumerate(values[:n])
        )
        out.append(
            f'<polyline points="{points}" class="ln s{k % 6}"><title>{escape(name)}</title>'
            "</polyline>"
        )
    out.append("</svg>")
    return "".join(out)


def _open(title: str, height: int) -> str:
    t = escape(title)
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{t}"'
        f' xmlns="http://www.w3.org/2000/svg"><title>{t}</title>'
    )


def _empty(title: str) -> str:
    return f'<p class="muted">{escape(title)}: no data yet.</p>'


def _clip(label: str, most: int = 24) -> str:
    return label if len(label) <= most else label[: most - 1] + "…"
