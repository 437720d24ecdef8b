"""Forwarding a proxied pixel hit to its vendor (gateway/web/hits.py): the upstream request's
bytes and the answer passed back to the browser (the rules are in hits.py's module docstring).

Plain functions over the request and answer values; the connection pool, the per-site targets
and the counters stay with `HitProxy`.
"""

from __future__ import annotations

import re
from typing import Final

from gateway.web.codings import CodingError, accepts, decode
from gateway.web.cookies import MAX_COOKIE_HEADER
from gateway.web.hitroutes import HitRoute
from gateway.web.hitvalues import MAX_UPSTREAM_BODY, HitAnswer, HitRequest, Observed
from gateway.web.pipeline import Site
from gateway.web.upstream import UpstreamAnswer, UpstreamError

_COOKIE_VALUE_RE: Final = re.compile(r"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*")
_CONTENT_TYPE_RE: Final = re.compile(r"[\x20-\x7e]{1,256}")
_UA_RE: Final = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")


def hits_base(site: Site, route: HitRoute) -> str:
    """The configured hit upstream base of `route`'s vendor for `site`."""
    return str(getattr(site.config.proxy, f"{route.vendor}_hits_upstream")).rstrip("/")


def upstream_request(
    hit: HitRequest, route: HitRoute, path: str, host_header: str, observed: Observed
) -> bytes:
    """Return the bytes of a hit's upstream request to `path` on the host `host_header`: the
    same method, raw query and body, the client's User-Agent and Content-Type, its address in
    X-Forwarded-For and only the route's vendor cookies."""
    method = hit.method
    raw_query = hit.raw_query
    parts = [
        f"{method} {path}?{raw_query} HTTP/1.1\r\n"
        if raw_query
        else f"{method} {path} HTTP/1.1\r\n",
        f"Host: {host_header}\r\nAccept: */*\r\nAccept-Encoding: identity\r\n",
    ]
    user_agent = observed.user_agent
    if user_agent and _UA_RE.fullmatch(user_agent):
        parts.append(f"User-Agent: {user_agent}\r\n")
    if observed.ip:
        parts.append(f"X-Forwarded-For: {observed.ip}\r\n")
    cookie = vendor_cookies(hit.headers.get("cookie"), route)
    if cookie:
        parts.append(f"Cookie: {cookie}\r\n")
    body = b""
    if method == "POST":
        content_type = hit.headers.get("content-type")
        if content_type and _CONTENT_TYPE_RE.fullmatch(content_type):
            parts.append(f"Content-Type: {content_type}\r\n")
        body = hit.body
        parts.append(f"Content-Length: {len(body)}\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("utf-8", "surrogateescape") + body


def vendor_cookies(header: str | None, route: HitRoute) -> str:
    """Return a Cookie header holding only the route's vendor cookies (raw values, in order)."""
    if not header or len(header) > MAX_COOKIE_HEADER:
        return ""
    kept: list[str] = []
    seen: set[str] = set()
    for pair in header.split(";"):
        name, eq, value = pair.partition("=")
        name, value = name.strip(" \t"), value.strip(" \t")
        if not eq or name in seen or not route.keeps(name):
            continue
        if _COOKIE_VALUE_RE.fullmatch(value.strip('"')):
            seen.add(name)
            kept.append(f"{name}={value}")
    return "; ".join(kept)


def passed_answer(resp: UpstreamAnswer, status: int) -> HitAnswer:
    """The browser's answer to a forwarded (non-redirect) upstream answer: its status, body,
    Content-Type and Content-Encoding, never cached."""
    out = {"Cache-Control": "no-store"}
    for name, key in (
        ("Content-Type", "content-type"),
        ("Content-Encoding", "content-encoding"),
    ):
        value = resp.header(key)
        if value and _CONTENT_TYPE_RE.fullmatch(value):
            out[name] = value
    if status in (204, 304) or status < 200:
        return HitAnswer(status, out, None)
    out.setdefault("Content-Type", "application/octet-stream")  # what aiohttp would add
    return HitAnswer(status, out, resp.body)


def for_client(
    result: UpstreamAnswer | UpstreamError, hit: HitRequest
) -> UpstreamAnswer | UpstreamError:
    """The upstream answer in a content coding the client accepts (gateway/web/codings.py):
    decoded (bounded) when it did not accept the upstream's, an error (502) when undecodable."""
    if not isinstance(result, UpstreamAnswer):
        return result
    coding = result.header("content-encoding")
    if not coding or coding.strip().lower() == "identity":
        return result
    if accepts(hit.headers.get("accept-encoding"), coding.strip()):
        return result
    try:
        body = decode(result.body, coding, MAX_UPSTREAM_BODY)
    except CodingError as exc:
        return UpstreamError(str(exc))
    return result.without_coding(body)
