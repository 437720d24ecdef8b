"""The values a proxied pixel hit travels as (gateway/web/hits.py): the request from either road
(aiohttp or the fast lane), what the mirror keeps of it, the answer, the proxy's counters and
the query decoding both roads share (yarl's rules)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final
from urllib.parse import unquote_to_bytes

from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from gateway.web.fastlane import Answer
from gateway.web.pipeline import Site

MAX_HIT_BODY: Final = 65_536
"""Largest hit body forwarded (413 above)."""
MAX_QUERY_BYTES: Final = 8_000
"""Largest raw query forwarded (414 above); just under aiohttp's 8190-byte request line."""
MAX_UPSTREAM_BODY: Final = 65_536
"""Largest upstream answer passed back (502 above); hit answers are a pixel or a short JSON."""
MEMO_MAX: Final = 1024
"""Entries kept by each per-process memo of the hit proxy."""
MEMO_TEXT_MAX: Final = 1024
"""Longest text (escaped query value, page URLs) kept in a memo."""


@dataclass
class HitStats:
    """Counters of the hit proxy (aggregates only)."""

    requests: int = 0
    forwarded: int = 0
    bad_gateway: int = 0
    rejected: int = 0
    not_events: int = 0
    """Hits that parsed to no event (automatic events, engagement pings, garbage)."""
    mirrored: int = 0
    invalid: int = 0
    """Parsed events the pipeline refused (e.g. a Purchase without value)."""
    consent_dropped: int = 0
    mirror_errors: int = 0
    batches: int = 0
    """Mirror batches run: one per loop turn in which hits arrived (one append per site)."""
    by_vendor: dict[str, int] = field(default_factory=dict)


class Observed:
    """What the mirror needs from one request, taken before the handler returns.

    A plain slotted class (one is built per hit): cheaper to build than a frozen dataclass.
    """

    __slots__ = (
        "body",
        "content_type",
        "cookies",
        "deny",
        "gpc",
        "ip",
        "method",
        "now",
        "query",
        "referer",
        "region",
        "site",
        "user_agent",
        "vendor",
    )

    def __init__(
        self,
        vendor: str,
        site: Site,
        method: str,
        query: Sequence[tuple[str, str]],
        body: bytes,
        content_type: str,
        cookies: Mapping[str, str],
        ip: str | None,
        user_agent: str | None,
        referer: str | None,
        gpc: bool,
        region: str | None,
        now: float,
    ) -> None:
        self.vendor = vendor
        self.site = site
        self.method = method
        self.query = query
        self.body = body
        self.content_type = content_type
        self.cookies = cookies
        self.ip = ip
        self.user_agent = user_agent
        self.referer = referer
        self.gpc = gpc
        self.region = region
        self.now = now
        self.deny = False
        """Set by the mirror when a signal explicitly denied consent: the answer then deletes
        the tracking cookies the request carries."""


class HitRequest:
    """One hit request, from aiohttp or from the fast lane (header lookups by lower-case name)."""

    __slots__ = (
        "body",
        "forwarded",
        "headers",
        "host",
        "method",
        "peer",
        "query",
        "raw_query",
        "secure",
    )

    def __init__(
        self,
        method: str,
        raw_query: str,
        query: Sequence[tuple[str, str]],
        host: str,
        headers: Mapping[str, str],
        peer: str | None,
        forwarded: tuple[str, ...],
        body: bytes,
        secure: bool = False,
    ) -> None:
        self.method = method
        self.raw_query = raw_query
        self.query = query
        """The decoded query (yarl's decoding, as `request.query`)."""
        self.host = host
        self.headers = headers
        self.peer = peer
        self.forwarded = forwarded
        """The X-Forwarded-For header values."""
        self.body = body
        self.secure = secure
        """Whether the gateway itself terminated TLS for this request ([tls])."""


_REASONS: Final = {s.value: s.phrase for s in HTTPStatus}
_JSON: Final = "application/json; charset=utf-8"

_HEADS: dict[tuple[object, ...], bytes] = {}


@dataclass(slots=True)
class HitAnswer:
    """The answer to a hit: status, our headers, the body (None: a bodiless status)."""

    status: int
    headers: dict[str, str]
    body: bytes | None
    cookies: tuple[str, ...] = ()
    """Set-Cookie values (deletions after an explicit denial)."""

    @classmethod
    def error(cls, status: int, code: str, message: str) -> HitAnswer:
        """Return an `error_response`-shaped JSON answer, never cached."""
        body = json.dumps({"error": code, "message": message}).encode()
        return cls(status, {"Cache-Control": "no-store", "Content-Type": _JSON}, body)

    def response(self) -> web.Response:
        """Return the aiohttp response."""
        if not self.cookies:
            return web.Response(status=self.status, body=self.body, headers=self.headers)
        headers = CIMultiDict(self.headers)
        for line in self.cookies:
            headers.add("Set-Cookie", line)
        return web.Response(status=self.status, body=self.body, headers=headers)

    def encode(self) -> Answer:
        """Return the status line and headers, and the body, for the fast lane."""
        key = (self.status, *self.headers.items())
        head = _HEADS.get(key)
        if head is None:  # hit answers repeat: the same few heads, built once
            lines = [f"HTTP/1.1 {self.status} {_REASONS.get(self.status, '')}\r\n"]
            lines += [f"{name}: {value}\r\n" for name, value in self.headers.items()]
            head = "".join(lines).encode("latin-1")
            if len(_HEADS) >= MEMO_MAX:
                _HEADS.clear()
            _HEADS[key] = head
        if self.cookies:
            head += "".join(f"Set-Cookie: {line}\r\n" for line in self.cookies).encode("ascii")
        return head, self.body or b""


def decode_query(raw: str) -> list[tuple[str, str]]:
    """Return the decoded pairs of a raw query string exactly as yarl decodes `request.query`.

    `+` is a space, percent-escapes are UTF-8; empty parts are skipped. A value whose escapes
    are not valid UTF-8 (rare) is left to yarl itself, so both roads always agree.
    """
    if not raw:
        return []
    if "%" not in raw:
        pairs = []
        for part in raw.replace("+", " ").split("&"):
            if part:
                name, _, value = part.partition("=")
                pairs.append((name, value))
        return pairs
    try:
        pairs = []
        for part in raw.split("&"):
            if part:
                name, _, value = part.partition("=")
                if "%" in name or "+" in name:
                    name = _unquote_plus(name)
                if "%" in value or "+" in value:
                    value = _unquote_plus(value)
                pairs.append((name, value))
        return pairs
    except UnicodeDecodeError:
        return list(URL.build(query_string=raw, encoded=True).query.items())


def _unquote_plus(text: str) -> str:
    if "%" not in text:
        return text.replace("+", " ")
    decoded = _UNQUOTED.get(text)
    if decoded is None:  # escaped values (page URLs) repeat from hit to hit
        decoded = unquote_to_bytes(text.replace("+", " ")).decode("utf-8")
        if len(text) <= MEMO_TEXT_MAX:
            if len(_UNQUOTED) >= MEMO_MAX:
                _UNQUOTED.clear()
            _UNQUOTED[text] = decoded
    return decoded


_UNQUOTED: dict[str, str] = {}
