"""Static checks and a Node smoke test of the browser loader (static_js/loader.js).

The smoke test runs the loader in a fake DOM (node:vm): no browser is needed. Real-browser
behaviour (CORS, cookies, keepalive) is covered later by the Chromium tests.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gateway.core.event import Event
from gateway.core.eventparse import parse_event

ROOT = Path(__file__).resolve().parents[2]
LOADER = ROOT / "static_js" / "loader.js"
README = ROOT / "static_js" / "README.md"
NODE = shutil.which("node")
PLACEHOLDER = '"__SG_COLLECT__"'

# browser.md §5.1/§5.2: words generic filter rules match in paths and host names.
BLOCKED_WORDS = ("track", "analytic", "metric", "collect", "pixel", "gtm", "gtag", "fbevents",
                 "beacon", "pageview", "stats", "telemetry")  # fmt: skip
BLOCKED_SEGMENTS = {"tr", "t.gif", "event", "events", "log", "ga", "p"}


def source() -> str:
    return LOADER.read_text(encoding="utf-8")


def test_gzipped_size_is_under_3000_bytes() -> None:
    size = len(gzip.compress(LOADER.read_bytes(), 9))
    assert size <= 3000, f"loader is {size} bytes gzipped"


def test_placeholder_present_exactly_once() -> None:
    text = source()
    assert text.count(PLACEHOLDER) == 1
    assert text.count("__SG_COLLECT__") == 1  # nothing else would be rewritten at serve time


def test_no_console_calls() -> None:
    assert not re.search(r"\bconsole\s*[.\[]", source())


def test_no_storage_of_identify_data_by_name() -> None:
    # only the two documented keys are ever written
    keys = set(re.findall(r"put\('([^']+)'", source()))
    assert keys == {"sg_q", "sg_consent"}
    assert "sessionStorage" not in source()
    assert "document.cookie" not in source()


def test_node_syntax_check() -> None:
    if NODE is None:
        pytest.skip("node is not on PATH")
    run = subprocess.run([NODE, "--check", str(LOADER)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def _blocked(part: str) -> str | None:
    low = part.lower()
    if low in BLOCKED_SEGMENTS:
        return low
    return next((w for w in BLOCKED_WORDS if w in low), None)


def test_default_names_avoid_blocklist_words() -> None:
    text = source()
    collect = re.search(r"indexOf\('__'\)\?COLLECT:'([^']+)'", text)
    filename = re.search(r"/\\/([\w.-]+?)\\\.js\$/", text)
    assert collect, "default collect name not found in the loader"
    assert filename, "fallback file name not found in the loader"
    assert collect.group(1) == "e"
    assert filename.group(1) == "sg"
    for part in (collect.group(1), filename.group(1) + ".js"):
        assert _blocked(part) is None, part
    # every URL the README tells people to paste into a page
    urls = re.findall(r'src="(https?://[^"]+)"', README.read_text(encoding="utf-8"))
    assert urls, "README shows no snippet"
    for url in urls:
        parts = urlsplit(url)
        host = parts.hostname or ""
        for label in host.split(".")[:-2]:
            assert _blocked(label) is None, f"{url}: host label {label!r}"
        for seg in parts.path.split("/"):
            assert _blocked(seg) is None, f"{url}: path segment {seg!r}"


HARNESS = r"""
'use strict';
const fs = require('fs'), vm = require('vm'), assert = require('assert');
const {webcrypto} = require('crypto');
const SRC = fs.readFileSync(process.argv[2], 'utf8');
const SNIPPET = 'window.sg=window.sg||function(){(sg.q=sg.q||[]).push(arguments)};';
const plain = (x) => JSON.parse(JSON.stringify(x));
const tick = () => new Promise((r) => setTimeout(r, 0));
const results = {ok: [], fail: [], bodies: []};
process.on('unhandledRejection',
  (e) => results.fail.push({name: 'unhandledRejection', err: String(e)}));

class Store {
  constructor() { this.m = new Map(); }
  getItem(k) { return this.m.has(k) ? this.m.get(k) : null; }
  setItem(k, v) { this.m.set(k, String(v)); }
  removeItem(k) { this.m.delete(k); }
  dump() { return Object.fromEntries(this.m); }
}

// One page load. fetchMode: 'ok' | 'fail' | 'none'
function load(o = {}) {
  const calls = {fetch: [], beacon: [], con: []};
  for (const k of ['fbq', 'ttq', 'gtag', 'snaptr', 'pintrk']) calls[k] = [];
  const href = o.href || 'https://shop.example/p/1';
  const loc = {href, origin: new URL(href).origin};
  const nav = (u) => { loc.href = new URL(u, loc.href).href; };
  const listeners = {}, docListeners = {};
  const script = {src: o.script || 'https://shop.example/t/sg.js'};
  const win = {
    location: loc,
    document: {currentScript: o.noCurrent ? null : script, referrer: o.referrer || '',
      scripts: [{src: 'https://cdn.example/app.js'}, script, {src: ''}],
      prerendering: !!o.prerender,
      addEventListener(t, f, opt) { (docListeners[t] = docListeners[t] || []).push(f); }},
    history: {pushState(s, t, u) { nav(u); }, replaceState(s, t, u) { if (u) nav(u); }},
    navigator: {sendBeacon(u, b) { calls.beacon.push({u, b}); return o.beacon !== false; }},
    crypto: o.crypto || webcrypto, URL, Blob, setTimeout,
    console: new Proxy({}, {get: (t, k) => (...a) => calls.con.push([k, a])}),
    addEventListener(t, f) { (listeners[t] = listeners[t] || []).push(f); },
  };
  if (o.storage === 'throw') {
    Object.defineProperty(win, 'localStorage', {get() { throw new Error('SecurityError'); }});
  } else {
    win.localStorage = o.storage || new Store();
  }
  const mode = o.fetch || 'ok';
  if (mode !== 'none') {
    win.fetch = (u, init) => {
      calls.fetch.push({u, init});
      if (mode === 'ok') results.bodies.push(init.body);
      return mode === 'ok' ? Promise.resolve({status: 202})
        : Promise.reject(new TypeError('Failed to fetch'));
    };
  }
  if (o.vendors !== false) {
    win.fbq = (...a) => calls.fbq.push(a);
    win.ttq = {track: (...a) => calls.ttq.push(a)};
    win.gtag = (...a) => calls.gtag.push(a);
    win.snaptr = (...a) => calls.snaptr.push(a);
    win.pintrk = (...a) => calls.pintrk.push(a);
  }
  win.window = win;
  vm.createContext(win);
  vm.runInContext(SNIPPET, win);
  for (const c of o.pre || []) win.sg(...c);
  const before = new Set(Object.keys(win));
  vm.runInContext(o.code || SRC, win);
  if (o.twice) vm.runInContext(o.code || SRC, win);
  const added = Object.keys(win).filter((k) => !before.has(k));
  const bodies = () => calls.fetch.map((f) => JSON.parse(f.init.body));
  const pop = (u) => { if (u) nav(u); (listeners.popstate || []).forEach((f) => f({})); };
  const activate = () => {
    win.document.prerendering = false;
    (docListeners.prerenderingchange || []).forEach((f) => f({}));
  };
  return {win, calls, loc, bodies, added, pop, activate};
}

async function check(name, fn) {
  try { await fn(); results.ok.push(name); } catch (e) {
    results.fail.push({name, err: String(e && e.stack || e)});
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const PURCHASE = {value: 49.9, currency: 'EUR', order_id: 1001, coupon: 'X', nested: {a: 1},
  contents: [{id: 'SKU-1', quantity: 1, price: 49.9, name: 'Tee'}]};

(async () => {
  await check('queue replay, endpoint, fetch options, wire format', async () => {
    const p = load({href: 'https://shop.example/thanks?o=1', referrer: 'https://www.google.com/',
      pre: [['consent', {ad_storage: 'granted', analytics_storage: 'granted', ad_user_data: 'x',
        bogus: 'granted'}],
      ['identify', {email: 'jane@example.com', phone: '+1 650 555 1212', nickname: 'j'}],
      ['track', 'Purchase', PURCHASE],
      ['track', 'Newsletter Signup', {list: 'weekly'}, {event_id: 'evt-1'}]]});
    await tick();
    assert.deepStrictEqual(p.added, [], 'no globals besides window.sg (the stub made it)');
    assert.strictEqual(typeof p.win.sg, 'function');
    assert.strictEqual(p.win.sg.q, undefined, 'the real function has no queue');
    const url = 'https://shop.example/thanks?o=1';
    for (const f of p.calls.fetch) {
      assert.strictEqual(f.u, 'https://shop.example/t/e');
      assert.deepStrictEqual(plain({...f.init, body: 0}), {method: 'POST', body: 0, keepalive: true,
        credentials: 'include', headers: {'Content-Type': 'text/plain'}});
      assert.strictEqual(typeof f.init.body, 'string');
    }
    const b = p.bodies().map(({vid, ...rest}) => rest);
    const vids = new Set(p.bodies().map((x) => x.vid));
    assert.strictEqual(vids.size, 1, 'one visitor id candidate per page');
    assert.match([...vids][0], /^\d{13}-[0-9a-f]{16}$/);
    assert.deepStrictEqual(b.map((x) => x.event),
      ['sg:consent', 'sg:identify', 'Purchase', 'Newsletter Signup', 'PageView']);
    const consent = {ad_storage: 'granted', analytics_storage: 'granted'};
    const user = {email: 'jane@example.com', phone: '+1 650 555 1212'};
    assert.deepStrictEqual(b[0], {event: 'sg:consent', url, consent});
    assert.deepStrictEqual(b[1], {event: 'sg:identify', url, user});
    assert.deepStrictEqual(b[2], {event: 'Purchase', event_id: '1001', url,
      referrer: 'https://www.google.com/', user, consent,
      data: {value: 49.9, currency: 'EUR', order_id: 1001, custom: {coupon: 'X'},
        contents: [{id: 'SKU-1', quantity: 1, price: 49.9}]}});
    assert.strictEqual(b[3].event_id, 'evt-1');
    assert.deepStrictEqual(b[3].data, {custom: {list: 'weekly'}});
    assert.match(b[4].event_id, UUID);
    assert.strictEqual(b[4].data, undefined);
    assert.ok(b.every((x) => !('time' in x)), 'no client time');
    assert.deepStrictEqual(p.calls.beacon, []);
  });

  await check('vendor forwarding with the same event id', async () => {
    const p = load({pre: [['track', 'Purchase', PURCHASE],
      ['track', 'Newsletter Signup', {list: 'weekly'}, {event_id: 'evt-1'}]]});
    const c = plain(p.calls);
    assert.deepStrictEqual(c.fbq, [
      ['track', 'Purchase', {value: 49.9, currency: 'EUR', order_id: 1001, coupon: 'X',
        contents: [{id: 'SKU-1', quantity: 1, item_price: 49.9}], content_ids: ['SKU-1'],
        content_type: 'product'}, {eventID: '1001'}],
      ['trackCustom', 'Newsletter Signup', {list: 'weekly'}, {eventID: 'evt-1'}]]);
    assert.deepStrictEqual(c.ttq[0], ['Purchase', {value: 49.9, currency: 'EUR',
      content_type: 'product', contents: [{content_id: 'SKU-1', quantity: 1, price: 49.9}]},
    {event_id: '1001'}]);
    assert.deepStrictEqual(c.gtag, [
      ['event', 'purchase', {value: 49.9, currency: 'EUR', transaction_id: 1001, event_id: '1001',
        items: [{item_id: 'SKU-1', quantity: 1, price: 49.9}]}],
      ['event', 'Newsletter Signup', {event_id: 'evt-1'}]]);
    assert.deepStrictEqual(c.snaptr, [['track', 'PURCHASE', {price: 49.9, currency: 'EUR',
      item_ids: ['SKU-1'], transaction_id: 1001, client_dedup_id: '1001'}]],
    'Snap gets standard names only');
    assert.deepStrictEqual(c.pintrk[0], ['track', 'checkout', {value: 49.9, currency: 'EUR',
      order_id: 1001, event_id: '1001',
      line_items: [{product_id: 'SKU-1', product_quantity: 1, product_price: 49.9}]}]);
    assert.deepStrictEqual(c.pintrk[1], ['track', 'Newsletter Signup', {event_id: 'evt-1'}]);
    assert.strictEqual(c.ttq.length + c.fbq.length, 4, 'automatic PageView is not forwarded');
    p.win.sg('track', 'AddToCart', {value: 5, currency: 'EUR', contents: [{id: 7}]});
    const last = plain(p.calls.fbq.at(-1));
    assert.deepStrictEqual(last.slice(0, 2), ['track', 'AddToCart']);
    assert.deepStrictEqual(last[2].content_ids, ['7']);
    assert.strictEqual(last[3].eventID, p.bodies().at(-1).event_id);
    assert.match(last[3].eventID, UUID);
    assert.deepStrictEqual(plain(p.calls.snaptr.at(-1)).slice(0, 2), ['track', 'ADD_CART']);
    p.win.sg('track', 'PageView');
    assert.deepStrictEqual(plain(p.calls.gtag.at(-1)).slice(0, 2), ['event', 'page_view']);
    assert.strictEqual(plain(p.calls.ttq.at(-1))[0], 'Pageview');
    p.win.sg('page');
    assert.strictEqual(p.calls.fbq.length, 4, "sg('page') is not forwarded");
  });

  await check('network failure -> sg_q (no user) -> resent first on next load', async () => {
    const store = new Store();
    const a = load({storage: store, fetch: 'fail',
      pre: [['identify', {email: 'jane@example.com'}],
        ['track', 'Purchase', {value: 10, currency: 'EUR', order_id: 'A-77'}]]});
    await tick();
    assert.ok(!JSON.stringify(store.dump()).includes('jane'), 'no PII in storage');
    const q = JSON.parse(store.getItem('sg_q'));
    const qb = q.map((e) => JSON.parse(e[1]));
    assert.deepStrictEqual(qb.map((x) => x.event), ['Purchase', 'PageView'], 'no control hits');
    assert.strictEqual(qb[0].event_id, 'A-77');
    assert.ok(qb.every((x) => !('user' in x)));
    assert.deepStrictEqual(Object.keys(store.dump()), ['sg_q']);
    const failed = a.calls.fetch.filter((f) => JSON.parse(f.init.body).event !== 'sg:identify');
    assert.ok(JSON.parse(failed[0].init.body).user, 'the live send carried the user');
    const b = load({storage: store, href: 'https://shop.example/next'});
    const sent = b.bodies();
    assert.deepStrictEqual(sent.slice(0, 2), qb, 'queued bodies go first, unchanged');
    assert.strictEqual(sent[2].url, 'https://shop.example/next');
    assert.notStrictEqual(sent[2].vid, sent[0].vid, 'a new page mints a new candidate');
    assert.ok(store.getItem('sg_q'), 'kept until the sends succeed');
    await tick();
    assert.strictEqual(store.getItem('sg_q'), null, 'removed after success');
  });

  await check('queue: resend failure keeps entries, expiry, bounds', async () => {
    const store = new Store();
    const old = JSON.stringify({event: 'Lead', event_id: 'old', url: 'https://shop.example/'});
    const keep = JSON.stringify({event: 'Lead', event_id: 'keep', url: 'https://shop.example/'});
    store.setItem('sg_q', JSON.stringify([[Date.now() - 2 * 864e5, old], [Date.now(), keep]]));
    const p = load({storage: store, fetch: 'fail'});
    await tick();
    const ids = () => JSON.parse(store.getItem('sg_q')).map((e) => JSON.parse(e[1]).event_id);
    assert.strictEqual(ids()[0], 'keep');
    assert.strictEqual(ids().length, 2, 'expired entry dropped, failed resend kept once');
    const pad = 'x'.repeat(500);
    for (let i = 0; i < 30; i++) p.win.sg('track', 'Lead', {n: pad}, {event_id: `L${i}`});
    await tick();
    const raw = store.getItem('sg_q');
    assert.ok(JSON.parse(raw).length <= 20 && raw.length <= 16000, 'bounded');
    assert.strictEqual(ids().at(-1), 'L29', 'newest kept, oldest dropped');
    for (const junk of ['{"not": "a list"}', '[null, 5, "x", [1]]', '{']) {
      store.setItem('sg_q', junk);
      const r = load({storage: store});
      assert.strictEqual(r.bodies().length, 1, `garbage queue ignored: ${junk}`);
      assert.strictEqual(typeof r.win.sg.q, 'undefined', 'loader started');
    }
  });

  await check('endpoint: replaced placeholder, currentScript fallback', async () => {
    const code = SRC.replace('"__SG_COLLECT__"', '"/x/e"');
    const p = load({code, noCurrent: true, script: 'https://gw.shop.example/static/sg.js?v=3'});
    assert.strictEqual(p.calls.fetch[0].u, 'https://gw.shop.example/x/e');
    const q = load({noCurrent: true, script: 'https://gw.shop.example/sg.js'});
    assert.strictEqual(q.calls.fetch[0].u, 'https://gw.shop.example/e');
    const r = load({script: 'https://shop.example/t/sg.js'});
    assert.strictEqual(r.calls.fetch[0].u, 'https://shop.example/t/e');
  });

  await check('consent: remembered, ad_storage denied stops vendor forwarding', async () => {
    const store = new Store();
    const a = load({storage: store});
    a.win.sg('consent', {ad_storage: 'denied', ad_user_data: 'denied'});
    a.win.sg('track', 'Purchase', {value: 1, currency: 'EUR', order_id: 'C-1'});
    assert.deepStrictEqual(a.calls.fbq, []);
    const denied = {ad_storage: 'denied', ad_user_data: 'denied'};
    assert.deepStrictEqual(a.bodies().at(-1).consent, denied);
    assert.deepStrictEqual(JSON.parse(store.getItem('sg_consent')),
      {ad_storage: 'denied', ad_user_data: 'denied'});
    const b = load({storage: store, pre: [['track', 'Lead', {}]]});
    assert.deepStrictEqual(b.bodies()[0].consent, {ad_storage: 'denied', ad_user_data: 'denied'});
    assert.deepStrictEqual([b.calls.fbq, b.calls.gtag, b.calls.pintrk], [[], [], []]);
    b.win.sg('consent', {ad_storage: 'granted'});
    b.win.sg('track', 'Lead', {});
    assert.strictEqual(b.calls.fbq.length, 1);
  });

  await check('SPA page views', async () => {
    const p = load({href: 'https://shop.example/a'});
    const pv = () => p.bodies().filter((x) => x.event === 'PageView').map((x) => x.url);
    p.win.history.pushState({}, '', '/b');
    p.win.history.replaceState({}, '');
    p.win.history.replaceState({}, '', '/b');
    p.win.history.replaceState({}, '', '/b?f=1');
    p.pop('/a');
    p.pop();
    assert.deepStrictEqual(pv(), ['https://shop.example/a', 'https://shop.example/b',
      'https://shop.example/b?f=1', 'https://shop.example/a']);
    assert.deepStrictEqual(p.calls.fbq, [], 'page views are not forwarded');
    const q = load({twice: true});
    q.win.history.pushState({}, '', '/z');
    assert.strictEqual(q.bodies().length, 2, 'a second copy of the loader does nothing');
  });

  await check('fallbacks: no fetch -> sendBeacon; beacon refused -> queue', async () => {
    const store = new Store();
    const p = load({fetch: 'none', storage: store});
    assert.strictEqual(p.calls.beacon.length, 1);
    assert.strictEqual(p.calls.beacon[0].u, 'https://shop.example/t/e');
    assert.strictEqual(JSON.parse(p.calls.beacon[0].b).event, 'PageView');
    assert.strictEqual(store.getItem('sg_q'), null);
    load({fetch: 'none', beacon: false, storage: store});
    assert.strictEqual(JSON.parse(store.getItem('sg_q')).length, 1);
  });

  await check('never throws; storage unavailable; oversize skipped; ids', async () => {
    const insecure = {getRandomValues: (a) => webcrypto.getRandomValues(a)};
    const p = load({storage: 'throw', crypto: insecure});
    assert.match(p.bodies()[0].event_id, /^[0-9a-f]{32}$/, 'hex id without randomUUID');
    const cyc = {}; cyc.self = cyc;
    const sg = p.win.sg;
    sg('track', 'X', {custom: cyc});
    sg('track', 'X', cyc);
    sg('track');
    sg('track', 42);
    sg('bogus');
    sg();
    sg('identify', 'jane');
    sg('consent', null);
    sg('track', 'sg:consent', {});
    const n = p.calls.fetch.length;
    sg('track', 'Big', {content_name: 'x'.repeat(70000)});
    assert.strictEqual(p.calls.fetch.length, n, 'a body over 64 KB is not sent');
    sg('track', 'Lead', {order_id: ''}, {event_id: ''});
    assert.match(p.bodies().at(-1).event_id, /^[0-9a-f]{32}$/, 'empty ids count as absent');
    sg('track', 'Lead', {order_id: 0});
    assert.strictEqual(p.bodies().at(-1).event_id, '0');
    sg('identify', {email: 'a@b.example'});
    sg('identify', null);
    sg('track', 'Lead', {});
    assert.strictEqual(p.bodies().at(-1).user, undefined, 'identify(null) clears the user');
    assert.deepStrictEqual(p.calls.con, [], 'no console output');
    const r = load({referrer: 'android-app://com.google.android.gm/'});
    assert.strictEqual(r.bodies()[0].referrer, undefined, 'non-http referrer dropped');
  });

  await check('prerendered page starts when shown', async () => {
    const p = load({prerender: true, twice: true, pre: [['track', 'Lead', {}]]});
    p.win.sg('track', 'Contact', {});
    assert.deepStrictEqual([p.calls.fetch, p.calls.fbq], [[], []], 'nothing before activation');
    p.activate();
    assert.deepStrictEqual(p.bodies().map((x) => x.event), ['Lead', 'Contact', 'PageView']);
    assert.strictEqual(p.calls.fbq.length, 2);
  });

  await tick();
  process.stdout.write(JSON.stringify(results));
})();
"""


def test_node_smoke(tmp_path: Path) -> None:
    if NODE is None:
        pytest.skip("node is not on PATH")
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS, encoding="utf-8")
    run = subprocess.run(
        [NODE, str(harness), str(LOADER)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    assert results["fail"] == [], "\n\n".join(f"{f['name']}: {f['err']}" for f in results["fail"])
    assert len(results["ok"]) == 10, results["ok"]
    # every body the loader sent parses as the gateway's own Event shape
    assert len(results["bodies"]) > 20
    for body in results["bodies"]:
        doc = json.loads(body)
        assert re.fullmatch(r"\d{13}-[0-9a-f]{16}", doc.pop("vid")), doc  # read by /e itself
        event = parse_event(doc, now=1_790_000_000.0, new_id=lambda: "server-id")
        assert isinstance(event, Event), (body, event)
