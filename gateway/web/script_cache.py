"""The upstream side of the script proxy: the cache of vendor scripts and the fetches that fill it.

Cache (one per gateway, keyed by the upstream URL): a copy is fresh for the site's
`cache_seconds`; after that the next request revalidates it upstream (`If-None-Match` /
`If-Modified-Since`; a 304 keeps the body and restarts freshness). Any upstream failure — connect
error, timeout, a status other than 200/304 (redirects are never followed), a non-JavaScript
Content-Type, an unknown Content-Encoding, a body over 2 MiB (before or after gunzip) — serves the
last good copy while it is at most `max_stale_seconds` past freshness, else answers 502; the URL
is then not asked again for `ERROR_BACKOFF_SECONDS`. Concurrent requests for one URL share a
single upstream fetch. The cache holds at most `MAX_CACHE_BYTES`, least recently used first out.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Final
from urllib.parse import urlsplit

import aiohttp

from gateway.config import PROXY_VENDORS, ProxyConfig

log = logging.getLogger("signalgate.proxy")

Clock = Callable[[], float]

MAX_BODY_BYTES: Final = 2 * 1024 * 1024
"""Largest upstream script, compressed and decompressed."""
MAX_CACHE_BYTES: Final = 64 * 1024 * 1024
ERROR_BACKOFF_SECONDS: Final = 10.0
"""After a failed fetch, the URL is not asked again for this long (stale copy or 502 meanwhile)."""
CONNECT_TIMEOUT: Final = 2.0
USER_AGENT: Final = "signalgate-script-proxy"
JS_TYPES: Final = frozenset(
    {
        "application/javascript",
        "application/x-javascript",
        "text/javascript",
        "application/ecmascript",
        "text/ecmascript",
    }
)
_MAX_BACKOFF_KEYS: Final = 10_000
_CHARSET: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")


class UpstreamError(Exception):
    """The upstream did not give a usable script (the message is a short reason)."""


@dataclass(frozen=True, slots=True)
class SiteScripts:
    """A site's proxy settings, resolved once."""

    prefix: str
    vendors: frozenset[str]
    upstreams: Mapping[str, str]
    cache_seconds: float
    max_stale_seconds: float
    timeout_seconds: float

    @classmethod
    def from_config(cls, config: ProxyConfig) -> SiteScripts:
        """Resolve `[sites.proxy]`."""
        return cls(
            prefix=config.prefix,
            vendors=frozenset(config.vendors),
            upstreams={v: str(getattr(config, f"{v}_upstream")).rstrip("/") for v in PROXY_VENDORS},
            cache_seconds=config.cache_seconds,
            max_stale_seconds=config.max_stale_seconds,
            timeout_seconds=config.timeout_seconds,
        )

    def servable(self, entry: Entry, now: float) -> bool:
        """Return whether `entry` may still be served as a stale copy."""
        return now - entry.validated_at <= self.cache_seconds + self.max_stale_seconds


@dataclass(frozen=True, slots=True)
class Entry:
    """One cached script: the text, the upstream's gzip bytes if any, and validators."""

    body: bytes
    gzipped: bytes | None
    content_type: str
    etag: str
    validated_at: float
    upstream_etag: str | None = None
    last_modified: str | None = None

    @property
    def size(self) -> int:
        """Return the bytes this entry holds."""
        return len(self.body) + len(self.gzipped or b"")


@dataclass
class ProxyStats:
    """Counters of the script proxy."""

    requests: int = 0
    hits: int = 0
    misses: int = 0
    revalidated: int = 0
    stale: int = 0
    bad_gateway: int = 0
    rejected: int = 0
    fetches: int = 0


class ScriptCache:
    """Upstream side: one shared client session, the cache, single-flight fetches, stale copies."""

    def __init__(
        self,
        *,
        clock: Clock,
        stats: ProxyStats | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_cache_bytes: int = MAX_CACHE_BYTES,
    ) -> None:
        self.clock = clock
        self.stats = stats or ProxyStats()
        self.max_body_bytes = max_body_bytes
        self.max_cache_bytes = max_cache_bytes
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._bytes = 0
        self._inflight: dict[str, asyncio.Task[tuple[Entry, str]]] = {}
        self._retry_at: dict[str, float] = {}
        self._session: aiohttp.ClientSession | None = None

    def fresh(self, url: str, site: SiteScripts) -> Entry | None:
        """Return the cached copy of `url` while it is fresh for `site` (a HIT), else None."""
        entry = self._entries.get(url)
        if entry is None or self.clock() - entry.validated_at >= site.cache_seconds:
            return None
        self._entries.move_to_end(url)
        return entry

    async def get(self, url: str, site: SiteScripts) -> tuple[Entry, str]:
        """Return the script at `url` and how it was obtained; raise UpstreamError for none."""
        now = self.clock()
        entry = self._entries.get(url)
        if entry is not None and now - entry.validated_at < site.cache_seconds:
            self._entries.move_to_end(url)
            return entry, "HIT"
        if now < self._retry_at.get(url, 0.0):
            if entry is not None and site.servable(entry, now):
                return entry, "STALE"
            raise UpstreamError("upstream failed recently")
        task = self._inflight.get(url)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._refresh(url, entry, site.timeout_seconds)
            )
            self._inflight[url] = task
            task.add_done_callback(partial(self._forget, url))
        try:
            return await asyncio.shield(task)
        except UpstreamError:
            current = self._entries.get(url)
            if current is not None and site.servable(current, self.clock()):
                return current, "STALE"
            raise

    def _forget(self, url: str, task: asyncio.Task[tuple[Entry, str]]) -> None:
        if self._inflight.get(url) is task:
            del self._inflight[url]
        if not task.cancelled():
            task.exception()  # retrieved here, so an unawaited failure is never reported as lost

    async def _refresh(self, url: str, entry: Entry | None, seconds: float) -> tuple[Entry, str]:
        self.stats.fetches += 1
        try:
            fresh, how = await self._fetch(url, entry, seconds)
        except (aiohttp.ClientError, TimeoutError, UpstreamError) as exc:
            reason = str(exc) if isinstance(exc, UpstreamError) else type(exc).__name__
            self._back_off(url)
            log.warning(
                "Script upstream failed; a cached copy is served if there is one.",
                extra={"path": urlsplit(url).path, "reason": reason},
            )
            raise UpstreamError(reason) from exc
        self._retry_at.pop(url, None)
        self._store(url, fresh)
        return fresh, how

    def _back_off(self, url: str) -> None:
        now = self.clock()
        if len(self._retry_at) >= _MAX_BACKOFF_KEYS:
            self._retry_at = {k: t for k, t in self._retry_at.items() if t > now}
            if len(self._retry_at) >= _MAX_BACKOFF_KEYS:
                self._retry_at.clear()
        self._retry_at[url] = now + ERROR_BACKOFF_SECONDS

    def _store(self, url: str, entry: Entry) -> None:
        old = self._entries.pop(url, None)
        if old is not None:
            self._bytes -= old.size
        self._entries[url] = entry
        self._bytes += entry.size
        while self._bytes > self.max_cache_bytes and len(self._entries) > 1:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.size

    async def _fetch(self, url: str, entry: Entry | None, seconds: float) -> tuple[Entry, str]:
        headers = {"Accept": "*/*", "Accept-Encoding": "gzip", "User-Agent": USER_AGENT}
        if entry is not None and entry.upstream_etag:
            headers["If-None-Match"] = entry.upstream_etag
        if entry is not None and entry.last_modified:
            headers["If-Modified-Since"] = entry.last_modified
        limits = aiohttp.ClientTimeout(total=seconds, connect=min(CONNECT_TIMEOUT, seconds))
        session = self._client()
        async with session.get(url, headers=headers, allow_redirects=False, timeout=limits) as resp:
            conditional = "If-None-Match" in headers or "If-Modified-Since" in headers
            if resp.status == 304 and entry is not None and conditional:
                etag = resp.headers.get("ETag", entry.upstream_etag)
                return replace(entry, validated_at=self.clock(), upstream_etag=etag), "REVALIDATED"
            if resp.status != 200:
                raise UpstreamError(f"status {resp.status}")
            content_type = _script_type(resp)
            raw = await _read_limited(resp, self.max_body_bytes)
            coding = resp.headers.get("Content-Encoding", "identity").strip().lower()
            if coding in ("gzip", "x-gzip"):
                body, gzipped = _gunzip(raw, self.max_body_bytes), raw
            elif coding in ("identity", ""):
                body, gzipped = raw, None
            else:
                raise UpstreamError("unsupported content encoding")
            fresh = Entry(
                body=body,
                gzipped=gzipped,
                content_type=content_type,
                etag=f'W/"{hashlib.sha256(body).hexdigest()[:24]}"',
                validated_at=self.clock(),
                upstream_etag=resp.headers.get("ETag"),
                last_modified=resp.headers.get("Last-Modified"),
            )
            return fresh, "MISS"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                connector=aiohttp.TCPConnector(limit=32, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=10.0, connect=CONNECT_TIMEOUT),
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        """Cancel fetches in flight and close the client session."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, UpstreamError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None


def _script_type(resp: aiohttp.ClientResponse) -> str:
    media = resp.content_type.lower()
    if media not in JS_TYPES:
        raise UpstreamError("not a script content type")
    charset = resp.charset
    return f"{media}; charset={charset}" if charset and _CHARSET.fullmatch(charset) else media


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise UpstreamError("body over the size limit")
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(65_536):
        buf += chunk
        if len(buf) > limit:
            raise UpstreamError("body over the size limit")
    return bytes(buf)


def _gunzip(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise UpstreamError("bad gzip body") from exc
    if len(out) > limit:
        raise UpstreamError("body over the size limit")
    if not inflater.eof or inflater.unused_data:
        raise UpstreamError("bad gzip body")
    return out
