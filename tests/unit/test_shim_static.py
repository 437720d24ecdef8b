"""Static checks and a Node smoke test of the event-id shim (static_js/shim.js).

The smoke test runs the shim in a fake window (node:vm) with base-code-like vendor stubs; the
real-browser path (shim + fbevents.js through the gateway) is in tests/browser.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIM = ROOT / "static_js" / "shim.js"
NODE = shutil.which("node")
MAX_GZIP = 1200


def test_gzipped_size_is_bounded() -> None:
    size = len(gzip.compress(SHIM.read_bytes(), 9))
    assert size <= MAX_GZIP, f"shim is {size} bytes gzipped"


def test_no_console_calls_and_no_storage() -> None:
    text = SHIM.read_text(encoding="utf-8")
    assert not re.search(r"\bconsole\s*[.\[]", text)
    for word in ("localStorage", "sessionStorage", "document.cookie", "fetch(", "sendBeacon"):
        assert word not in text


def test_node_syntax_check() -> None:
    if NODE is None:
        pytest.skip("node is not on PATH")
    run = subprocess.run([NODE, "--check", str(SHIM)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


SMOKE = r"""
const vm = require('node:vm'), fs = require('node:fs');
const listeners = [], timers = [];
const ctx = {crypto: globalThis.crypto, calls: {fbq: [], gtag: [], ttq: [], snaptr: []}};
ctx.window = ctx;
ctx.document = {addEventListener: (n, f) => listeners.push(f)};
ctx.addEventListener = (n, f) => listeners.push(f);
ctx.setInterval = (f) => { timers.push(f); return timers.length; };
ctx.clearInterval = () => {};
vm.createContext(ctx);
// Before the shim: the Meta base-code stub (with one queued call) and the gtag snippet.
vm.runInContext(`
  var n = window.fbq = function () {
    n.callMethod ? n.callMethod.apply(n, arguments) : n.queue.push(arguments) };
  n.queue = []; n.loaded = true;
  fbq('track', 'Purchase', {value: 1, currency: 'EUR', order_id: 7});
  window.dataLayer = [];
  function gtag() { dataLayer.push(arguments) }
  gtag('event', 'purchase', {transaction_id: 'T-0'});
`, ctx);
vm.runInContext(fs.readFileSync(process.argv[1], 'utf8'), ctx);
const out = vm.runInContext(`
  var out = {};
  out.queued = Array.from(fbq.queue[0]);
  out.dl = Array.from(dataLayer[0]);
  out.dlIsArgs = Object.prototype.toString.call(dataLayer[0]);
  // the vendor script arrives: it sets callMethod through the wrapped function
  fbq.callMethod = function () { calls.fbq.push(Array.from(arguments)) };
  fbq('init', '123');
  fbq('track', 'Purchase', {value: 19.5, currency: 'EUR', order_id: 'ORDER-1'});
  fbq('track', 'PageView');
  fbq('track', 'Lead', {}, {eventID: 'keep-me'});
  fbq('trackCustom', 'Promo', {transaction_id: 'TX-3'});
  gtag('config', 'G-TEST');
  gtag('event', 'purchase', {transaction_id: 'T-1', value: 2, currency: 'EUR'});
  gtag('event', 'purchase', {event_id: 'mine', order_id: 'ignored'});
  out;
`, ctx);
// Vendors defined after the shim: picked up on load (or by the bounded poll).
vm.runInContext(`
  window.ttq = []; ttq.track = function () { calls.ttq.push(Array.from(arguments)) };
  ttq.push(['track', 'AddToCart', {order_id: 'Q-1'}]);
  window.snaptr = function () { calls.snaptr.push(Array.from(arguments)) };
`, ctx);
listeners.forEach((f) => f());
timers.forEach((f) => f());
vm.runInContext(`
  ttq.track('CompletePayment', {order_id: 'ORDER-2', value: 1});
  ttq.track('ViewContent', {}, {event_id: 'tt-own'});
  snaptr('track', 'PURCHASE', {transaction_id: 'ORDER-3'});
  snaptr('init', 'abc');
`, ctx);
out.fbq = ctx.calls.fbq;
out.gtag = Array.from(ctx.dataLayer).slice(1).map((a) => Array.from(a));
out.ttqQueued = ctx.ttq[0];
out.ttq = ctx.calls.ttq;
out.snaptr = ctx.calls.snaptr;
// Hostile page: a throwing getter and a missing document listener API never reach the page.
const bad = {crypto: undefined, addEventListener: () => { throw new Error('x') },
  document: {}, setInterval: () => { throw new Error('y') }};
bad.window = bad;
Object.defineProperty(bad, 'gtag', {get() { throw new Error('z') }});
vm.createContext(bad);
vm.runInContext(`window.fbq = function () {};`, bad);
vm.runInContext(fs.readFileSync(process.argv[1], 'utf8'), bad);
out.badOk = true;
console.log(JSON.stringify(out));
"""


def test_node_smoke_ids_added_and_equal_to_order_id() -> None:
    if NODE is None:
        pytest.skip("node is not on PATH")
    run = subprocess.run([NODE, "-e", SMOKE, str(SHIM)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    # queued before the shim loaded: fixed in place, kind preserved
    assert out["queued"][3] == {"eventID": "7"}
    assert out["dl"][2]["event_id"] == "T-0"
    assert out["dlIsArgs"] == "[object Arguments]"
    init, purchase, page_view, lead, promo = out["fbq"]
    assert init == ["init", "123"]
    assert purchase[2]["order_id"] == "ORDER-1"
    assert purchase[3] == {"eventID": "ORDER-1"}
    assert re.fullmatch(r"[0-9a-f-]{36}", page_view[3]["eventID"])
    assert lead[3] == {"eventID": "keep-me"}
    assert promo[3] == {"eventID": "TX-3"}
    config, purchase_ga, own = out["gtag"]
    assert config == ["config", "G-TEST"]
    assert purchase_ga[2]["event_id"] == "T-1"
    assert own[2]["event_id"] == "mine"
    assert out["ttqQueued"][3] == {"event_id": "Q-1"}
    payment, view = out["ttq"]
    assert payment[0] == "CompletePayment"
    assert payment[2] == {"event_id": "ORDER-2"}
    assert view[2] == {"event_id": "tt-own"}
    track, init_snap = out["snaptr"]
    assert track[2]["client_dedup_id"] == "ORDER-3"
    assert init_snap == ["init", "abc"]
    assert out["badOk"] is True
