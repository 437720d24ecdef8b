"""The dashboard's HTML shell: head, navigation, one stylesheet inline, no script, no external
resource (the answer's Content-Security-Policy forbids them: `SECURITY_HEADERS`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Final

NAV: Final = (
    ("./", "Overview"),
    ("dead", "Dead letters"),
    ("signal", "Signal quality"),
    ("consent", "Consent"),
    ("errors", "Errors"),
    ("gap", "Conversion gap"),
    ("events", "Recent events"),
)
"""(link, title) of each page. Links are relative to /admin/ (every page is one level below
it), so the dashboard also works under a path prefix such as nginx path mode's /t/."""

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make form POSTs say Origin: null
    "Cache-Control": "no-store",
}

CSS: Final = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;
background:#f4f6fa}
header{background:#1d2330;color:#fff;padding:.6rem 1rem;display:flex;flex-wrap:wrap;gap:.4rem 1rem;
align-items:center}
header strong{margin-right:auto}
nav{display:flex;flex-wrap:wrap;gap:.2rem}
nav a{color:#cfd6e4;text-decoration:none;padding:.25rem .55rem;border-radius:4px}
nav a.on,nav a:hover{background:#3a4660;color:#fff}
main{padding:1rem;max-width:1200px;margin:0 auto}
h1{font-size:1.35rem;margin:.2rem 0 1rem}
h2{font-size:1.1rem;margin:1.4rem 0 .5rem}
h3{font-size:1rem;margin:1rem 0 .4rem}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:.8rem}
.card{background:#fff;border:1px solid #dde2ec;border-radius:6px;padding:.8rem 1rem}
.card h3{margin-top:0}
.kv{display:grid;grid-template-columns:auto auto;gap:.1rem 1rem}
.kv span:nth-child(odd){color:#5b6478}
.kv span:nth-child(even){text-align:right;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto;background:#fff;border:1px solid #dde2ec;border-radius:6px}
table{border-collapse:collapse;width:100%}
th,td{padding:.35rem .6rem;border-bottom:1px solid #e6e9f0;text-align:left;vertical-align:top}
th{background:#eef1f7;font-weight:600;white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
pre{white-space:pre-wrap;word-break:break-all;background:#f7f8fb;padding:.5rem;margin:.3rem 0;
font-size:.8rem;max-height:22rem;overflow:auto}
.muted{color:#6b7385}
.ok{color:#1b7f3a}.bad{color:#b42318}.warn{color:#a15c00}
.pill{display:inline-block;padding:0 .45rem;border-radius:9px;font-size:.8rem;background:#e6e9f0}
.pill.bad{background:#fde2e0}.pill.ok{background:#dcf3e3}.pill.warn{background:#fff0d6}
.flash{background:#dcf3e3;border:1px solid #9fd8b0;padding:.5rem .8rem;border-radius:6px}
.note{background:#fff7e6;border:1px solid #f3d79a;padding:.6rem .8rem;border-radius:6px}
form.inline{display:inline}
button,input,select{font:inherit;padding:.3rem .6rem;border:1px solid #b9c1d1;border-radius:4px;
background:#fff}
button{background:#2f5bd3;color:#fff;border-color:#2f5bd3;cursor:pointer}
button.secondary{background:#fff;color:#2f5bd3}
.filters a.on{font-weight:600;text-decoration:none;color:#1d2330}
.filters{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end;margin-bottom:.8rem}
.filters label{display:flex;flex-direction:column;font-size:.85rem;color:#5b6478}
svg.chart{width:100%;height:auto;max-width:760px;background:#fff;border:1px solid #dde2ec;
border-radius:6px}
svg .lbl{font-size:12px;fill:#3a4254}svg .val{font-size:11px;fill:#5b6478}
svg .axis{stroke:#b9c1d1}
svg .ln{fill:none;stroke-width:2}
.c0{fill:#2f9e5b}.c1{fill:#2f5bd3}.c2{fill:#e0a100}.c3{fill:#c8372d}.c4{fill:#7a55c7}.c5{fill:#6b7385}
.s0{stroke:#2f9e5b}.s1{stroke:#e0a100}.s2{stroke:#c8372d}.s3{stroke:#2f5bd3}.s4{stroke:#7a55c7}
.s5{stroke:#6b7385}
.login{max-width:360px;margin:10vh auto;background:#fff;border:1px solid #dde2ec;border-radius:8px;
padding:1.4rem}
.login input{width:100%;margin:.3rem 0 .8rem}
@media (max-width:640px){main{padding:.6rem}header{padding:.5rem .6rem}th,td{padding:.3rem .4rem}
body{font-size:14px}}
"""


def page(title: str, here: str, body: str, *, csrf: str | None = None) -> str:
    """Return a whole dashboard page (`here`: its NAV link); `csrf` adds the logout form
    (signed-in pages)."""
    links = "".join(
        f'<a href="{href}"{" class=on" if href == here else ""}>{escape(name)}</a>'
        for href, name in NAV
    )
    logout = (
        '<form method="post" action="logout" class="inline">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        '<button class="secondary" type="submit">Log out</button></form>'
        if csrf is not None
        else ""
    )
    nav = f"<nav>{links}</nav>{logout}" if csrf is not None else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="robots" content="noindex">'
        '<link rel="icon" href="data:,">'
        f"<title>{escape(title)} · signalgate</title><style>{CSS}</style></head><body>"
        f"<header><strong>signalgate</strong>{nav}</header>"
        f"<main><h1>{escape(title)}</h1>{body}</main></body></html>"
    )


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Iterable[int] = ()
) -> str:
    """Return a table; cells are HTML already (escape text with `escape` first)."""
    right = set(numeric)
    head = "".join(
        f"<th{' class=n' if i in right else ''}>{escape(h)}</th>" for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=n' if i in right else ''}>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    if not body:
        body = f'<tr><td colspan="{len(headers)}" class="muted">Nothing yet.</td></tr>'
    table_html = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table_html}</div>'


def when(ts: float | None) -> str:
    """A Unix time as UTC text."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def seconds(value: float | None) -> str:
    """A duration, compact (s, min, h, d)."""
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    if value < 172800:
        return f"{value / 3600:.1f} h"
    return f"{value / 86400:.1f} d"


def num(value: int | float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def hidden_csrf(csrf: str) -> str:
    return f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
