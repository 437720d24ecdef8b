"""Middlewares and request helpers: JSON error bodies, request ids, trusted client IPs, bodies."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from gateway.core.jsoncodec import loads
from gateway.store.availability import RETRY_AFTER_SECONDS, StoreUnavailableError
from gateway.web.deadlines import DEADLINES, Expiry

log = logging.getLogger("signalgate.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def error_response(
    status: int,
    code: str,
    message: str,
    errors: Sequence[dict[str, str]] = (),
    headers: dict[str, str] | None = None,
) -> web.Response:
    """Return a JSON error answer: {"error": code, "message": …, "errors": [{path, reason}]}."""
    body: dict[str, Any] = {"error": code, "message": message}
    if errors:
        body["errors"] = list(errors)
    return web.json_response(body, status=status, headers=headers)


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    429: "rate_limited",
}


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every HTTP error into a JSON body, a store that cannot write into a 503 with
    Retry-After, and every unexpected exception into a bare 500."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        code = _STATUS_CODES.get(exc.status, "error")
        headers = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "retry-after"}}
        return error_response(exc.status, code, exc.reason, headers=headers)
    except StoreUnavailableError as exc:  # logged once by the store when its state changed
        retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        return error_response(503, "store_unavailable", str(exc), headers=retry)
    except Exception:
        log.exception("Unhandled error.", extra={"path": request.path})
        return error_response(500, "internal", "internal error")


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Echo a sane client X-Request-Id so the caller can correlate (none is minted: cost)."""
    response = await handler(request)
    given = request.headers.get("X-Request-Id", "")
    if given and len(given) <= 64 and given.replace("-", "").isalnum():
        response.headers.setdefault("X-Request-Id", given)
    return response


def client_ip(request: web.Request, trusted: Sequence[Network]) -> str | None:
    """Return the client address, believing X-Forwarded-For only from trusted proxies.

    Walks the X-Forwarded-For chain from the right (nearest hop) and returns the first address
    that is not itself a trusted proxy; a malformed entry stops the walk at the last good hop.
    """
    return client_ip_of(request.remote, request.headers.getall("X-Forwarded-For", []), trusted)


def client_ip_of(
    peer: str | None, forwarded: Sequence[str], trusted: Sequence[Network]
) -> str | None:
    """`client_ip` from the peer address and the X-Forwarded-For header values."""
    try:
        addr = ipaddress.ip_address(peer) if peer else None
    except ValueError:
        return None
    if addr is None:
        return None
    if not trusted or not _is_trusted(addr, trusted):
        return str(addr)
    hops: list[str] = []
    for header in forwarded:
        hops.extend(h.strip() for h in header.split(","))
    current = addr
    for hop in reversed(hops):
        try:
            candidate = ipaddress.ip_address(hop)
        except ValueError:
            break
        current = candidate
        if not _is_trusted(candidate, trusted):
            break
    return str(current)


def proxied_https(peer: str | None, proto: str | None, trusted: Sequence[Network]) -> bool:
    """Whether a trusted proxy in front (the peer) says the browser used HTTPS.

    `proto` is the X-Forwarded-Proto value (its first entry counts); from any other peer the
    header is ignored, like X-Forwarded-For.
    """
    if not proto or not trusted or not peer:
        return False
    if proto.partition(",")[0].strip().lower() != "https":
        return False
    try:
        return _is_trusted(ipaddress.ip_address(peer), trusted)
    except ValueError:
        return False


def _is_trusted(
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address, nets: Sequence[Network]
) -> bool:
    return any(addr in net for net in nets)


class BodyError(Exception):
    """The body could not be read within limits; carries the HTTP status and a reason."""

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """Read the body within `max_bytes`, counted after Content-Encoding is undone.

    aiohttp inflates gzip/deflate bodies as they stream in, in bounded chunks; counting the
    inflated bytes here stops a compression bomb at the limit instead of in memory.
    """
    length = request.content_length
    encoded = request.headers.get("Content-Encoding", "identity").strip().lower()
    if length is not None and length > max_bytes and encoded in ("", "identity"):
        raise _refused(413, "payload_too_large", f"body larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    total = 0
    deadlines = request.app.get(DEADLINES)
    stall = deadlines.body if deadlines is not None else None
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(request.content.read(65536), stall)
            except TimeoutError:
                request.protocol.keep_alive(False)  # answered, then closed
                raise _refused(408, "request_timeout", Expiry.BODY.value) from None
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:
                raise _refused(413, "payload_too_large", f"body larger than {max_bytes} bytes")
            chunks.append(chunk)
    except BodyError:
        raise
    except Exception as exc:  # aiohttp raises parser/decoder errors of several classes here
        raise _refused(400, "bad_request", "could not read or decode the body") from exc
    return b"".join(chunks)


def _refused(status: int, code: str, reason: str) -> BodyError:
    """The BodyError of a refused body, logged as one line with its reason (nothing else)."""
    log.info("Request refused.", extra={"status": status, "reason": reason})
    return BodyError(status, code, reason)


async def read_json_body(request: web.Request, max_bytes: int) -> Any:
    """Read and parse a JSON body within the size limit."""
    raw = await read_body(request, max_bytes)
    if not raw.strip():
        raise BodyError(400, "bad_request", "empty body")
    try:
        return loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BodyError(400, "bad_request", f"body is not valid JSON: {str(exc)[:120]}") from exc
