"""The HTML of the self-check page (gateway/web/selfcheck.py): one document, no external resource.

Every value that comes from the request or from DNS is escaped; the style and the one script
carry the response's CSP nonce. The script only reads ``document.cookie`` and writes into the
page; it sends nothing anywhere.
"""

from __future__ import annotations

from html import escape
from typing import Any, Final

__all__ = ["render"]

_STYLE: Final = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:64rem;padding:1rem;color:#1b1f24}
h1{font-size:1.35rem}h2{font-size:1.1rem;margin-top:1.6rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border-bottom:1px solid #d6dae0;padding:.35rem .4rem;text-align:left;vertical-align:top}
th{background:#f3f5f7}code{font-size:.85rem;word-break:break-all}
.ok{color:#146c2e}.bad{color:#a3140c;font-weight:600}.unknown{color:#8a5a00}
.wrap{overflow-x:auto}.note{color:#555;font-size:.85rem;font-weight:normal}
@media (max-width:40rem){td,th{padding:.3rem .2rem}body{font-size:14px}}
"""

_SCRIPT: Final = """
(function(){
  var seen = {};
  document.cookie.split(';').forEach(function(pair){
    var name = pair.split('=')[0].trim();
    if (name) { seen[name] = true; }
  });
  var rows = document.querySelectorAll('tr[data-cookie]');
  var bad = 0, checked = 0;
  rows.forEach(function(row){
    var name = row.getAttribute('data-cookie');
    var httpOnly = row.getAttribute('data-http-only') === '1';
    var sent = row.getAttribute('data-sent') === '1';
    var cell = row.querySelector('td.js');
    var visible = seen[name] === true;
    var text, ok = true;
    if (!sent && !visible) { text = 'not set'; }
    else if (httpOnly) {
      ok = !visible;
      text = visible ? 'visible: HttpOnly lost' : 'hidden (HttpOnly)';
    }
    else { ok = visible; text = visible ? 'visible' : 'not visible to script'; }
    if (sent || visible) { checked += 1; }
    if (!ok) { bad += 1; }
    cell.textContent = text;
    cell.className = 'js ' + (ok ? 'ok' : 'bad');
  });
  var out = document.getElementById('script-check');
  out.textContent = bad === 0
    ? 'Script check: ' + checked + ' cookie(s) seen as expected by document.cookie.'
    : 'Script check: ' + bad + ' cookie(s) not as the gateway set them.';
  out.className = bad === 0 ? 'ok' : 'bad';
  document.body.setAttribute('data-script-check', bad === 0 ? 'ok' : 'mismatch');
})();
"""


def _days(seconds: int) -> str:
    days = seconds / 86400
    return f"{days:.0f} d" if days >= 1 and days == int(days) else f"{days:.2f} d"


def _verdict_class(capped: bool | None) -> str:
    return "bad" if capped else ("unknown" if capped is None else "ok")


def _verdict_word(capped: bool | None) -> str:
    return "capped to 7 days" if capped else ("unknown" if capped is None else "full lifetime")


def _cookie_rows(report: dict[str, Any]) -> str:
    rows = []
    for c in report["cookies"]:
        sent = c["sent"]
        value = escape(c["value_prefix"]) if sent else "—"
        safari = _days(c["safari_max_age"])
        safari_cls = "bad" if c["safari_max_age"] < c["max_age"] else ""
        rows.append(
            f'<tr data-cookie="{escape(c["name"])}" data-http-only="{int(c["http_only"])}"'
            f' data-sent="{int(sent)}" data-max-age="{c["max_age"]}">'
            f"<td><code>{escape(c['name'])}</code><br><span class=note>"
            f"{escape(c['owner'])}: {escape(c['purpose'])}</span></td>"
            f"<td>{_days(c['max_age'])}</td>"
            f'<td class="{safari_cls}">{safari}</td>'
            f"<td><code>{escape(c['attributes'])}</code></td>"
            f"<td>{'yes' if sent else 'no'}</td><td><code>{value}</code></td>"
            f'<td class="js">…</td></tr>'
        )
    return "\n".join(rows)


def _verdict_rows(report: dict[str, Any]) -> str:
    rows = []
    for v in report["verdicts"]:
        cname = " → ".join(escape(c) for c in v["cnames"]) or "—"
        addresses = ", ".join(escape(a) for a in v["addresses"]) or "—"
        fix = escape(v["fix"]) if v["fix"] else "—"
        rows.append(
            f'<tr data-host="{escape(v["host"])}" data-capped="{_verdict_word(v["capped"])}">'
            f"<td><code>{escape(v['host'])}</code></td><td><code>{escape(v['page_host'])}</code>"
            f"</td><td>{cname}</td><td>{addresses}</td>"
            f'<td class="{_verdict_class(v["capped"])}">{_verdict_word(v["capped"])}'
            f"<br><span class=note>{escape(v['reason'])}</span></td><td>{fix}</td></tr>"
        )
    return "\n".join(rows)


def _facts(report: dict[str, Any]) -> str:
    host = escape(report["host"])
    items = [
        f"Host <code>{host}</code>: "
        + (
            "one of the site's configured hosts."
            if report["host_configured"]
            else "not among the site's configured hosts (the only site answers on any host)."
        ),
        "Reached through a trusted proxy (X-Forwarded-For believed)."
        if report["via_proxy"]
        else "Reached directly (no trusted proxy in between).",
        "Cookies are marked Secure (HTTPS)."
        if report["secure"]
        else "Not HTTPS: cookies are set without Secure.",
        "Pages of this site are served from "
        + ", ".join(f"<code>{escape(h)}</code>" for h in report["page_hosts"])
        + ".",
    ]
    connected = report.get("connected")
    if connected is not None:
        where = (
            f"<code>{escape(connected['address'])}</code>"
            if connected["address"]
            else "a non-public address (NAT or a load balancer: the DNS check below is what counts)"
        )
        share = connected["shares_half"]
        tail = (
            "; it shares the first half with the page host's address."
            if share
            else "; it does not share the first half with the page host's address."
            if share is False
            else "."
        )
        items.append(f"This browser connected to the gateway at {where}{tail}")
    return "".join(f"<li>{item}</li>" for item in items)


def render(report: dict[str, Any], nonce: str) -> str:
    """Return the page for a self-check report (``SelfCheck.report``)."""
    capped = report["capped"]
    summary = {
        True: "Safari caps the cookies of this host to 7 days. See the fix below.",
        False: "Safari keeps the cookies of this host for their full lifetime.",
        None: "Whether Safari caps the cookies of this host could not be determined.",
    }[capped]
    n = escape(nonce)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>signalgate cookie self-check</title>
<style nonce="{n}">{_STYLE}</style></head>
<body data-site="{escape(report["site"])}" data-capped="{_verdict_word(capped)}">
<h1>Cookie and Safari self-check</h1>
<p id="summary" class="{_verdict_class(capped)}">{summary}</p>
<ul>{_facts(report)}</ul>
<h2>Cookies</h2>
<p class="note">Lifetimes and flags are those the gateway sets (a browser never sends them back);
"sent" tells whether this browser sent the cookie here; values are cut to a short prefix.</p>
<div class="wrap"><table id="cookies">
<thead><tr><th>cookie</th><th>Max-Age</th><th>in Safari</th><th>Set-Cookie attributes</th>
<th>sent</th><th>value</th><th>script sees</th></tr></thead>
<tbody>
{_cookie_rows(report)}
</tbody></table></div>
<p id="script-check" class="unknown">Script check needs JavaScript.</p>
<h2>Hosts</h2>
<p class="note">Safari caps every cookie of a response to 7 days when the host is a CNAME to
another site, or when its address does not share the first half (IPv4 /16, IPv6 /64) with the
page's. The gateway under a path of the shop's own host (path mode) is never capped.</p>
<div class="wrap"><table id="hosts">
<thead><tr><th>served host</th><th>page host</th><th>CNAME chain</th><th>addresses</th>
<th>Safari</th><th>fix</th></tr></thead>
<tbody>
{_verdict_rows(report)}
</tbody></table></div>
<script nonce="{n}">{_SCRIPT}</script>
</body></html>
"""
