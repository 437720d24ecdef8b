"""A tiny demo shop (product → cart → checkout → thank-you) that loads the gateway's loader.

Two layouts, as in production:
* subdomain: pages on `www.shop.example`, loader from `track.shop.example/sg.js`;
* path: pages and gateway share one origin; `/t/*` is reverse-proxied to the gateway (what the
  shop's nginx does), so the page loads `/t/sg.js`.

Query flags on every page: `?pixel=stub` defines a recording `fbq` (window.__fbq_calls) so
forwarding can be watched; `?pixel=blocked` adds a Meta pixel script from a host that does not
resolve, as an ad blocker would leave it; `?consent=denied` starts with every consent purpose
denied and shows an "Accept cookies" button that grants them.
"""

from __future__ import annotations

import html
import json
from typing import Final

import aiohttp
from aiohttp import web

PRODUCT: Final = {"id": "SKU-42", "name": "Signal Mug", "price": 19.5, "currency": "EUR"}
PREFIX: Final = "/t/"
CONSENT_KEYS: Final = ("ad_storage", "analytics_storage", "ad_user_data", "ad_personalization")
_HOP: Final = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host",
     "content-length", "proxy-authorization", "proxy-authenticate"}
)  # fmt: skip


class Shop:
    """The demo shop; `loader_src` is where pages load the loader from."""

    def __init__(self, loader_src: str, *, gateway_url: str | None = None) -> None:
        self.loader_src = loader_src
        self.gateway_url = gateway_url
        self._session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        """Return the shop's aiohttp application."""
        app = web.Application()
        app.router.add_get("/", self.product)
        app.router.add_get("/cart", self.cart)
        app.router.add_get("/checkout", self.checkout)
        app.router.add_get("/thank-you", self.thank_you)
        app.router.add_route("*", PREFIX + "{tail:.*}", self.proxy)
        app.on_cleanup.append(self._close)
        return app

    @staticmethod
    def _keep(request: web.Request) -> str:
        """Return the ?pixel=… flag to carry over to the next page."""
        pixel = request.query.get("pixel", "")
        return f"?pixel={html.escape(pixel)}" if pixel else ""

    def _page(self, request: web.Request, title: str, body: str, script: str = "") -> web.Response:
        pixel = request.query.get("pixel", "")
        vendor = ""
        if pixel == "stub":
            vendor = (
                "<script>window.__fbq_calls=[];window.fbq=function(){"
                "window.__fbq_calls.push(Array.prototype.slice.call(arguments))};</script>"
            )
        elif pixel == "blocked":
            vendor = '<script async src="https://connect.facebook.net/en_US/fbevents.js"></script>'
        consent = ""
        if request.query.get("consent") == "denied":
            denied = {k: "denied" for k in CONSENT_KEYS}
            consent = f"sg('consent',{json.dumps(denied)});"
            body += '<button id="accept">Accept cookies</button>'
            granted = json.dumps({k: "granted" for k in CONSENT_KEYS})
            script += (
                f"document.getElementById('accept').onclick=function(){{sg('consent',{granted})}};"
            )
        head = (
            '<meta charset="utf-8"><link rel="icon" href="data:,">'
            f"<title>{html.escape(title)} - Demo shop</title>"
            "<script>window.sg=window.sg||function(){(sg.q=sg.q||[]).push(arguments)};"
            f"{consent}</script>"
            f'{vendor}<script async src="{html.escape(self.loader_src)}"></script>'
            "<style>body{font-family:sans-serif;max-width:40em;margin:2em auto}</style>"
        )
        page = (
            f"<!doctype html><html><head>{head}</head><body><h1>{html.escape(title)}</h1>"
            f"{body}<script>{script}</script></body></html>"
        )
        return web.Response(text=page, content_type="text/html")

    async def product(self, request: web.Request) -> web.Response:
        """Product page: ViewContent, then AddToCart on click."""
        p = PRODUCT
        item = {"id": p["id"], "quantity": 1, "price": p["price"]}
        data = json.dumps({"value": p["price"], "currency": p["currency"], "contents": [item]})
        script = (
            f"sg('track','ViewContent',{data});"
            "document.getElementById('add').onclick=function(){"
            f"sg('track','AddToCart',{data});location.href='/cart{self._keep(request)}'}};"
        )
        body = f'<p>{p["price"]} {p["currency"]}</p><button id="add">Add to cart</button>'
        return self._page(request, str(p["name"]), body, script)

    async def cart(self, request: web.Request) -> web.Response:
        """Cart page: InitiateCheckout on click."""
        body = f'<p>1 x Signal Mug</p><a id="go" href="/checkout{self._keep(request)}">Checkout</a>'
        script = "document.getElementById('go').onclick=function(){sg('track','InitiateCheckout')};"
        return self._page(request, "Cart", body, script)

    async def checkout(self, request: web.Request) -> web.Response:
        """Checkout form: identify, then the thank-you page with a fresh order id."""
        form = (
            '<form id="f"><input id="email" value="jane.doe@example.com">'
            '<input id="phone" value="+1 650 555 1212"><button>Pay</button></form>'
        )
        script = (
            "document.getElementById('f').onsubmit=function(e){e.preventDefault();"
            "sg('identify',{email:document.getElementById('email').value,"
            "phone:document.getElementById('phone').value});"
            "location.href='/thank-you?order=ORDER-'+Date.now()+'"
            + self._keep(request).replace("?", "&")
            + "'};"
        )
        return self._page(request, "Checkout", form, script)

    async def thank_you(self, request: web.Request) -> web.Response:
        """Thank-you page: the Purchase, its event id derived from the order id."""
        order = request.query.get("order", "ORDER-0")
        p = PRODUCT
        data = {"value": p["price"], "currency": p["currency"], "order_id": order,
                "contents": [{"id": p["id"], "quantity": 1, "price": p["price"]}]}  # fmt: skip
        return self._page(
            request, "Thank you", f"<p>Order {html.escape(order)} is confirmed.</p>",
            f"sg('track','Purchase',{json.dumps(data)});",
        )  # fmt: skip

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        """Forward /t/* to the gateway as the shop's nginx would (prefix stripped)."""
        if self.gateway_url is None:
            raise web.HTTPNotFound()
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        headers["Host"] = request.host
        peer = request.remote or ""
        prior = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
        headers["X-Forwarded-Proto"] = request.scheme
        url = f"{self.gateway_url.rstrip('/')}/{request.match_info['tail']}"
        if request.query_string:
            url += "?" + request.query_string
        async with self._session.request(
            request.method, url, headers=headers, data=await request.read(), allow_redirects=False
        ) as upstream:
            body = await upstream.read()
            response = web.Response(status=upstream.status, body=body)
            for key, value in upstream.headers.items():
                if key.lower() not in _HOP:
                    response.headers.add(key, value)
            return response

    async def _close(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()
