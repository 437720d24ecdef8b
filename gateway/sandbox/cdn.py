"""A fake vendor script CDN: the real script paths, small JavaScript bodies, validators, faults.

One app stands in for every vendor host (tests and the demo point each upstream base at it). It
serves the paths the real CDNs serve (shared platforms.md §1.10, §2.8, §3.6, §4.2, §5.4 and
browser.md §4.1/§5.1):

    /<locale>/fbevents.js and /signals/config/<pixel_id>    Meta (connect.facebook.net)
    /i18n/pixel/events.js                                   TikTok (analytics.tiktok.com)
    /gtag/js and /gtm.js                                    Google (www.googletagmanager.com)
    /scevent.min.js                                         Snap (sc-static.net)
    /ct/core.js                                             Pinterest (s.pinimg.com)
    /bat.js                                                 Microsoft UET (bat.bing.com)
    /ads/pixel.js                                           Reddit (www.redditstatic.com)

plus `/elsewhere.js`, the target of the redirect fault, and the vendors' hit endpoints (what the
hit proxy forwards to; each recorded in `hits` with method, query, headers and body):

    /tr and /tr/ (GET, POST)        Meta (www.facebook.com)         200 image/gif
    /api/v2/pixel (POST)            TikTok (analytics.tiktok.com)   200 {"code": 0}
    /p (POST)                       Snap (tr.snapchat.com)          200 text/plain
    /g/collect (GET, POST)          GA4 (www.google-analytics.com)  204

Hits honour the `status`, `latency`, `set_cookie` and `hit_gzip` faults. A body names its path,
query and the CDN's `version` (bump it to publish a new script). Every answer has a strong ETag
and honours `If-None-Match` with 304; bodies are gzipped for clients that accept gzip. `counts`
holds the requests per path (304s and faults included), `not_modified` the 304s, `seen` the
last requests.

Fault knobs (`CdnFaults`, also `POST /_sandbox/faults`): a status to fail with (e.g. 500), a
latency, a redirect target, a Set-Cookie header, an oversized body, chunked transfer, no gzip, no
ETag, another Content-Type, gzip on hit answers regardless of the client.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from aiohttp import web

__all__ = ["HIT_PATHS", "SCRIPT_PATHS", "CdnFaults", "FakeCdn", "SeenHit", "SeenRequest"]

SCRIPT_PATHS = (
    r"/{locale:[a-z]{2,3}_[A-Z]{2}}/fbevents.js",
    r"/signals/config/{pixel_id:[0-9]+}",
    "/i18n/pixel/events.js",
    "/gtag/js",
    "/gtm.js",
    "/scevent.min.js",
    "/ct/core.js",
    "/bat.js",
    "/ads/pixel.js",
    "/elsewhere.js",
)
HIT_PATHS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("/tr", ("GET", "POST")),
    ("/tr/", ("GET", "POST")),
    ("/api/v2/pixel", ("POST",)),
    ("/p", ("POST",)),
    ("/g/collect", ("GET", "POST")),
)
"""Vendor hit endpoints and their methods."""
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00"
    b"\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
REDIRECT_TARGET = "/elsewhere.js"

# --- fake fbevents.js (browser tests): a tiny working `fbq` ---------------------------------------
FAKE_FBEVENTS = r"""!function(w,d){try{
var s=d.currentScript||[].slice.call(d.scripts).reverse().find(function(e){
  return /\/[a-z]{2,3}_[A-Z]{2}\/[^\/?#]+\.js([?#]|$)/.test(e.src)}),
src=String(s&&s.src||'').split(/[?#]/)[0],
E=/\/[a-z]{2,3}_[A-Z]{2}\/[^\/]+$/.test(src)?src.replace(/\/[^\/]+\/[^\/]+$/,'/tr'):location.origin+'/tr',
m=d.cookie.match(/(?:^|;\s*)_fbp=([^;]+)/),fbp=m?m[1]:'',ids=[],f=w.fbq;
if(!fbp){fbp='fb.1.'+Date.now()+'.'+Math.floor(Math.random()*2147483647);
  d.cookie='_fbp='+fbp+'; path=/; max-age=7776000; SameSite=Lax'}
var hit=function(ev,p,o){p=p&&typeof p=='object'?p:{};ids.forEach(function(id){
  var q=[['id',id],['ev',ev],['dl',location.href],['ts',Date.now()],['fbp',fbp]],k,v;
  if(d.referrer)q.push(['rl',d.referrer]);
  if(o&&o.eventID!=null)q.push(['eid',o.eventID]);
  for(k in p){v=p[k];if(v!=null)q.push(['cd['+k+']',typeof v=='object'?JSON.stringify(v):v])}
  new Image().src=E+'?'+q.map(function(x){
    return encodeURIComponent(x[0])+'='+encodeURIComponent(x[1])}).join('&')})};
if(!f){f=w.fbq=function(){f.callMethod?f.callMethod.apply(f,arguments):f.queue.push(arguments)};
  f.queue=[];w._fbq=w._fbq||f}
f.callMethod=function(c,a,b,o){try{
  if(c=='init'){a=String(a);ids.indexOf(a)<0&&ids.push(a)}
  else if(c=='track'||c=='trackCustom')hit(a,b,o)}catch(e){}};
f.loaded=!0;f.version='2.0';
var q=f.queue||[];f.queue=[];
q.forEach(function(a){f.callMethod.apply(f,a)});
}catch(e){}}(window,document);
"""
"""Appended to every `/<locale>/fbevents.js`: `fbq('init', id)` remembers the pixel id and
`fbq('track'|'trackCustom', name, params, {eventID})` loads `<script dir>/../tr?id&ev&dl&ts&fbp
&eid&cd[…]` (the script's src with `/<locale>/<file>` replaced by `/tr`, so through the gateway's
`/p/m/en_US/e.js` the hits go to `/p/m/tr`). Sets `_fbp` when absent, like the real pixel."""
# --- end fake fbevents.js ------------------------------------------------------------------------
# --- fake gtag.js (browser tests): a tiny working `gtag` over `dataLayer` ------------------------
FAKE_GTAG = r"""!function(w,d){try{
var s=d.currentScript,
L=(String(s&&s.src||'').match(/[?&]l=([A-Za-z_][A-Za-z0-9_]*)/)||[])[1]||'dataLayer',
dl=w[L]=w[L]||[],m=d.cookie.match(/(?:^|;\s*)_ga=GA1\.\d+\.(\d+\.\d+)/),cid=m?m[1]:'123.456',
P=Math.floor(Math.random()*2147483647),n=0,T={},
e=function(x){return encodeURIComponent(String(x))},
q=function(a){return a.map(function(x){return e(x[0])+'='+e(x[1])}).join('&')},
send=function(id,en,p){var c=T[id],base=c.server||'https://www.google-analytics.com',k,v,
  u=base.replace(/\/+$/,'')+'/g/collect?'+q([['v',2],['tid',id],['cid',cid],['_p',P],['_s',++n],
  ['dl',location.href],['dt',d.title]]),b=[['en',en]];
  p=p&&typeof p=='object'?p:{};
  for(k in p){v=p[k];if(v==null||k=='items'||k=='send_to')continue;
    if(k=='currency')b.push(['cu',v]);
    else b.push([(typeof v=='number'?'epn.':'ep.')+k,v])}
  (p.items||[]).slice(0,200).forEach(function(it,i){var f=[];
    if(it.item_id!=null)f.push('id'+it.item_id);if(it.item_name!=null)f.push('nm'+it.item_name);
    if(it.price!=null)f.push('pr'+it.price);if(it.quantity!=null)f.push('qt'+it.quantity);
    b.push(['pr'+(i+1),f.join('~')])});
  navigator.sendBeacon(u,q(b))},
run=function(a){try{a=[].slice.call(a);var c=a[0],id,o,k;
  if(c=='config'){id=String(a[1]);o=a[2]||{};
    T[id]={server:o.server_container_url||o.transport_url||''};
    if(o.send_page_view!==false)send(id,'page_view',{})}
  else if(c=='event'){o=a[2]||{};
    for(k in T)if(!o.send_to||o.send_to==k)send(k,String(a[1]),o)}}catch(x){}},
push=dl.push,each=function(l){[].forEach.call(l,function(a){
  a&&typeof a=='object'&&'length' in a&&run(a)})};
if(!w.gtag)w.gtag=function(){dl.push(arguments)};
dl.push=function(){var r=push.apply(dl,arguments);each(arguments);return r};
each(dl.slice(0));
}catch(x){}}(window,document);
"""
"""Appended to `/gtag/js`: processes the `arguments` entries queued in `dataLayer` (or the `l=`
layer) and every later push. `gtag('config', id, {server_container_url|transport_url,
send_page_view})` remembers the server (default www.google-analytics.com) and sends `page_view`
unless `send_page_view: false`; `gtag('event', name, params)` sends to every configured id (or
`send_to`). Each event is one `navigator.sendBeacon` POST (platforms.md §4.2 batched form, one
line): `<server>/g/collect?v=2&tid&cid&_p&_s&dl&dt` with body `en=<name>&ep.<k>=…&epn.<k>=…
&cu=<currency>&pr<N>=id…~nm…~pr…~qt…` (text/plain). `cid` from `_ga`, else `123.456`."""
# --- end fake gtag.js ----------------------------------------------------------------------------
MAX_SEEN = 1000


@dataclass
class CdnFaults:
    """Mutable knobs, read on every script request."""

    status: int = 0
    """Answer with this status (e.g. 500) instead of the script; 0 = off."""
    latency: float = 0.0
    """Seconds to wait before answering."""
    redirect_to: str | None = None
    """Answer 302 with this Location (the redirect target itself is never redirected)."""
    set_cookie: bool = False
    """Add `Set-Cookie: vendor_id=…` (a proxy must not pass it on)."""
    oversized: int = 0
    """Pad the script to this many bytes (before gzip); 0 = off."""
    chunked: bool = False
    """Send without Content-Length (chunked transfer)."""
    gzip: bool = True
    """Gzip the body when the client accepts gzip."""
    hit_gzip: bool = False
    """Gzip hit answers even for a client that did not accept gzip (a misbehaving upstream)."""
    etags: bool = True
    """Send an ETag and answer If-None-Match with 304."""
    content_type: str = "application/javascript; charset=utf-8"

    def update(self, changes: Mapping[str, object]) -> None:
        """Validate and apply `changes` all-or-nothing; raise ValueError on a bad knob."""
        kinds = {f.name: f.type for f in fields(self)}
        staged: dict[str, object] = {}
        for name, value in changes.items():
            kind = kinds.get(name)
            if kind is None:
                raise ValueError(f"unknown fault knob: {name}")
            staged[name] = _coerce(name, str(kind), value)
        for name, value in staged.items():
            setattr(self, name, value)

    def reset(self) -> None:
        """Put every knob back to its default, in place."""
        for f in fields(self):
            setattr(self, f.name, getattr(CdnFaults(), f.name))


def _coerce(name: str, kind: str, value: object) -> object:
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a boolean")
        return value
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number")
        if not math.isfinite(value) or value < 0 or (kind == "int" and value != int(value)):
            raise ValueError(f"{name} must be a non-negative {kind}")
        return int(value) if kind == "int" else float(value)
    if value is None and "None" in kind:
        return None
    if not isinstance(value, str) or "\n" in value or "\r" in value:
        raise ValueError(f"{name} must be a one-line string")
    return value


@dataclass(frozen=True, slots=True)
class SeenRequest:
    """One script request as the CDN received it."""

    path: str
    query: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SeenHit:
    """One vendor hit as the fake upstream received it."""

    method: str
    path: str
    query: str
    """The raw query string, exactly as received."""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


class FakeCdn:
    """The fake CDN's state; `app()` builds the aiohttp application serving it."""

    def __init__(self) -> None:
        self.faults = CdnFaults()
        self.version = 1
        self.counts: Counter[str] = Counter()
        self.not_modified: Counter[str] = Counter()
        self.seen: list[SeenRequest] = []
        self.hits: list[SeenHit] = []

    @property
    def total(self) -> int:
        """Return how many script requests arrived, on every path."""
        return sum(self.counts.values())

    def reset(self) -> None:
        """Forget requests, reset the faults and the version, in place."""
        self.faults.reset()
        self.version = 1
        self.counts.clear()
        self.not_modified.clear()
        self.seen.clear()
        self.hits.clear()

    def app(self) -> web.Application:
        """Return the aiohttp application."""
        app = web.Application()
        for path in SCRIPT_PATHS:
            app.router.add_get(path, self._script)
        for path, methods in HIT_PATHS:
            for method in methods:
                app.router.add_route(method, path, self._hit)
        app.router.add_get("/_sandbox/state", self._state)
        app.router.add_post("/_sandbox/faults", self._set_faults)
        app.router.add_post("/_sandbox/reset", self._reset)
        return app

    def body_for(self, path: str, query: str) -> bytes:
        """Return the script served at `path?query` for the current version."""
        label = json.dumps(f"{path}?{query}" if query else path)
        text = (
            f"/* fake-cdn {path} v{self.version} */\n"
            f"window.__fakeCdn = (window.__fakeCdn || []).concat([{label}]);\n"
        )
        if path.endswith("/fbevents.js"):  # fake fbevents.js (see FAKE_FBEVENTS)
            text += FAKE_FBEVENTS
        if path == "/gtag/js":  # fake gtag.js (see FAKE_GTAG)
            text += FAKE_GTAG
        body = text.encode()
        if self.faults.oversized > len(body):
            body += b" " * (self.faults.oversized - len(body))
        return body

    async def _script(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.counts[path] += 1
        self.seen.append(SeenRequest(path, request.query_string, dict(request.headers)))
        del self.seen[:-MAX_SEEN]
        faults = self.faults
        if faults.latency > 0:
            await asyncio.sleep(faults.latency)
        headers = {"X-Fake-Cdn": "1"}
        if faults.set_cookie:
            headers["Set-Cookie"] = "vendor_id=fake123; Path=/; Max-Age=3600"
        if faults.status:
            return web.Response(status=faults.status, text="fault\n", headers=headers)
        if faults.redirect_to and path != REDIRECT_TARGET:
            headers["Location"] = faults.redirect_to
            return web.Response(status=302, headers=headers)
        body = self.body_for(path, request.query_string)
        if faults.etags:
            etag = f'"v{self.version}-{hashlib.sha256(body).hexdigest()[:16]}"'
            headers["ETag"] = etag
            if etag in request.headers.get("If-None-Match", ""):
                self.not_modified[path] += 1
                return web.Response(status=304, headers=headers)
        if faults.gzip and "gzip" in request.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, mtime=0)
            headers["Content-Encoding"] = "gzip"
        headers["Content-Type"] = faults.content_type
        if not faults.chunked:
            return web.Response(body=body, headers=headers)
        response = web.StreamResponse(headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), 65_536):
            await response.write(body[start : start + 65_536])
        await response.write_eof()
        return response

    async def _hit(self, request: web.Request) -> web.Response:
        body = await request.read()
        raw_query = request.raw_path.partition("?")[2]  # as sent, not decoded
        self.hits.append(
            SeenHit(request.method, request.path, raw_query, dict(request.headers), body)
        )
        del self.hits[:-MAX_SEEN]
        faults = self.faults
        if faults.latency > 0:
            await asyncio.sleep(faults.latency)
        headers = {"X-Fake-Cdn": "1", "Connection": "keep-alive"}
        if faults.set_cookie:
            headers["Set-Cookie"] = "vendor_id=fake123; Path=/; Max-Age=3600"
        if faults.status:
            return web.Response(status=faults.status, text="fault\n", headers=headers)
        path = request.path
        if path.startswith("/tr"):
            answer = web.Response(body=GIF, content_type="image/gif", headers=headers)
        elif path == "/api/v2/pixel":
            answer = web.json_response({"code": 0, "message": "OK"}, headers=headers)
        elif path == "/p":
            answer = web.Response(text="ok", headers=headers)
        else:
            return web.Response(status=204, headers=headers)
        if faults.hit_gzip and isinstance(answer.body, bytes):
            answer.body = gzip.compress(answer.body, mtime=0)
            answer.headers["Content-Encoding"] = "gzip"
        return answer

    async def _state(self, request: web.Request) -> web.Response:
        state: dict[str, Any] = {
            "version": self.version,
            "counts": dict(self.counts),
            "not_modified": dict(self.not_modified),
            "hits": len(self.hits),
            "faults": asdict(self.faults),
        }
        return web.json_response(state)

    async def _set_faults(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object")
            self.faults.update(changes)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(asdict(self.faults))

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})
