"""Which browser origins may call the collect endpoint and the hit routes (CORS).

An origin is compared as the triple (scheme, host, port), never as a bare host:
`https://shop.example` allows neither `http://shop.example` nor `https://shop.example:8443`,
and an allowed origin with a port allows that port only (a default port is the same as none:
`https://shop.example:443` is `https://shop.example`). The same-origin case (the path
deployment behind the shop's own nginx) compares the Origin with the request's Host: same
host and same port, where a Host without a port means the default port of the Origin's scheme.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}

Triple = tuple[str, str, int]


def origin_triple(origin: str) -> Triple | None:
    """Return (scheme, host, port) of a serialized origin, or None when it is not one
    (a path, a query, user info, a scheme other than http(s), a bad port)."""
    if not origin.isascii() or not origin.isprintable() or " " in origin:
        return None
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    default = _DEFAULT_PORTS.get(scheme)
    host = parts.hostname
    if (
        default is None
        or not host
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
    ):
        return None
    return scheme, host.rstrip("."), default if port is None else port


def host_pair(host: str, default_port: int) -> tuple[str, int] | None:
    """Return (host, port) of a Host header value, the port defaulting to `default_port`."""
    triple = origin_triple(f"http://{host}") if host else None
    if triple is None:
        return None
    explicit = host.rsplit("]", 1)[-1].partition(":")[2]
    return triple[1], int(explicit) if explicit else default_port


class OriginRule:
    """The allowed origins of one site, normalized once."""

    __slots__ = ("_allowed",)

    def __init__(self, allowed: Iterable[str]) -> None:
        triples = (origin_triple(origin) for origin in allowed)
        self._allowed = frozenset(t for t in triples if t is not None)

    def allows(self, origin: str, host: str) -> bool:
        """Whether a request with this Origin header and this Host header may be answered."""
        triple = origin_triple(origin)
        if triple is None:
            return False
        if triple in self._allowed:
            return True
        scheme, name, port = triple
        return host_pair(host, _DEFAULT_PORTS[scheme]) == (name, port)


_RULES: dict[tuple[str, ...], OriginRule] = {}
_DECIDED: dict[tuple[str, str, tuple[str, ...]], bool] = {}
_MEMO_MAX: Final = 4096


def origin_allowed(origin: str, host: str, allowed: tuple[str, ...]) -> bool:
    """`OriginRule(allowed).allows(origin, host)`, memoised (a few origins and hosts repeat)."""
    key = (origin, host, allowed)
    found = _DECIDED.get(key)
    if found is None:
        rule = _RULES.get(allowed)
        if rule is None:
            if len(_RULES) >= _MEMO_MAX:
                _RULES.clear()
            rule = _RULES[allowed] = OriginRule(allowed)
        found = rule.allows(origin, host)
        if len(_DECIDED) >= _MEMO_MAX:
            _DECIDED.clear()
        _DECIDED[key] = found
    return found


def cors_headers(
    origin: str | None, host: str, allowed: tuple[str, ...]
) -> list[tuple[str, str]] | None:
    """The CORS headers of an answer to a request with this Origin (none without one), or None
    when the origin is not allowed. Same origin (a path deployment) is always allowed."""
    if origin is None:
        return []
    if not origin_allowed(origin, host, allowed):
        return None
    return [
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Allow-Credentials", "true"),
        ("Vary", "Origin"),
    ]
