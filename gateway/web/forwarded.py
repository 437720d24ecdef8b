"""What the trusted proxies in front say about a connection, memoised per process.

The client's address (`client_ip_of`: X-Forwarded-For) and whether the browser used HTTPS
(`proxied_https`: X-Forwarded-Proto), both believed only from a peer in
`server.trusted_proxies`. Peers and header values repeat, and an address parse per hit costs
more than a look-up, so each answer is kept in a bounded memo.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from gateway.web.middleware import Network, client_ip_of, proxied_https

_MEMO_MAX: Final = 1024
"""Entries kept by each per-process memo (client addresses, HTTPS answers)."""


class TrustedProxies:
    """`client_ip_of` and `proxied_https` with the configured trusted proxies, memoised."""

    def __init__(self, trusted_proxies: Sequence[Network]) -> None:
        self.trusted = tuple(trusted_proxies)
        self._ips: dict[tuple[str | None, tuple[str, ...]], str | None] = {}
        self._https: dict[tuple[str | None, str], bool] = {}

    def proxied_https(self, peer: str | None, proto: str | None) -> bool:
        """`middleware.proxied_https` with the trusted proxies, memoised per (peer, value)."""
        if proto is None:
            return False
        key = (peer, proto)
        found = self._https.get(key)
        if found is None:
            found = proxied_https(peer, proto, self.trusted)
            if len(self._https) >= _MEMO_MAX:
                self._https.clear()
            self._https[key] = found
        return found

    def client_ip(self, peer: str | None, forwarded: tuple[str, ...]) -> str | None:
        """`client_ip_of`, memoised (an address parse per hit costs more than the lookup)."""
        key = (peer, forwarded)
        try:
            return self._ips[key]
        except KeyError:
            pass
        ip = client_ip_of(peer, forwarded, self.trusted)
        if len(self._ips) >= _MEMO_MAX:
            self._ips.clear()
        self._ips[key] = ip
        return ip
