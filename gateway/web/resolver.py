"""DNS facts for the Safari self-check: a host's CNAME chain and its A/AAAA addresses.

``socket.getaddrinfo`` gives addresses but not the CNAME chain Safari looks at, so the real
resolver asks the system's name servers (``/etc/resolv.conf``) through dnspython's asyncio stub
resolver: one A and one AAAA query, each following CNAMEs; the chain is read from the answer.
``/etc/hosts`` is not consulted (Safari's verdict is about public DNS). An IP literal resolves to
itself without a query.

`Resolver` is the protocol the self-check page and ``signalgate check-site`` take, so tests pass
a fake and never touch the network. `CachedResolver` keeps answers for a while so a public page
cannot be turned into a DNS query pump.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Sequence
from typing import Final, Protocol

import dns.asyncresolver
import dns.exception
import dns.resolver

from gateway.core.safari import Resolution

__all__ = ["CachedResolver", "DnsResolver", "Resolver"]

MAX_CHAIN: Final = 16
"""CNAME links reported at most (dnspython itself stops a loop)."""


class Resolver(Protocol):
    """Resolves one host name to its CNAME chain and addresses."""

    async def resolve(self, host: str) -> Resolution:
        """Return what DNS says about `host` (never raises: failures go in `error`)."""
        ...


def _literal(host: str) -> Resolution | None:
    try:
        return Resolution(host, (), (str(ipaddress.ip_address(host.strip("[]"))),))
    except ValueError:
        return None


class DnsResolver:
    """The system's name servers through dnspython (created on first use), or `nameservers`."""

    def __init__(
        self, timeout: float = 3.0, *, nameservers: Sequence[str] = (), port: int = 53
    ) -> None:
        self.timeout = timeout
        self.nameservers = list(nameservers)
        self.port = port
        self._resolver: dns.asyncresolver.Resolver | None = None

    async def resolve(self, host: str) -> Resolution:
        """Query A and AAAA for `host`; collect the CNAME chain and the addresses."""
        literal = _literal(host)
        if literal is not None:
            return literal
        resolver = self._resolver
        if resolver is None:
            try:  # reads /etc/resolv.conf unless name servers are given
                resolver = dns.asyncresolver.Resolver(configure=not self.nameservers)
            except dns.exception.DNSException as exc:
                return Resolution(host, error=f"no resolver configuration ({type(exc).__name__})")
            if self.nameservers:
                resolver.port = self.port  # before the servers: they take the port set now
                resolver.nameservers = list(self.nameservers)
            self._resolver = resolver
        cnames: list[str] = []
        addresses: list[str] = []
        errors: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = await resolver.resolve(
                    host, rdtype, raise_on_no_answer=False, search=False, lifetime=self.timeout
                )
            except dns.resolver.NXDOMAIN:
                return Resolution(host, error="no such name (NXDOMAIN)")
            except dns.exception.Timeout:
                errors.append(f"{rdtype}: timed out")
                continue
            except dns.exception.DNSException as exc:
                errors.append(f"{rdtype}: {type(exc).__name__}")
                continue
            chain = [
                rr.to_text().rstrip(".").lower()
                for rrset in answer.chaining_result.cnames
                for rr in rrset
            ]
            if len(chain) > len(cnames):
                cnames = chain[:MAX_CHAIN]
            if answer.rrset is not None:
                addresses.extend(rr.to_text() for rr in answer.rrset)
        error = "; ".join(errors) if errors else None
        return Resolution(host, tuple(cnames), tuple(dict.fromkeys(addresses)), error)


class CachedResolver:
    """Keeps each answer `ttl` seconds (failures `error_ttl`), at most `max_entries` hosts."""

    def __init__(
        self,
        inner: Resolver,
        clock: Callable[[], float],
        *,
        ttl: float = 300.0,
        error_ttl: float = 30.0,
        max_entries: int = 256,
    ) -> None:
        self.inner = inner
        self.clock = clock
        self.ttl = ttl
        self.error_ttl = error_ttl
        self.max_entries = max_entries
        self._cache: dict[str, tuple[float, Resolution]] = {}
        self._pending: dict[str, asyncio.Future[Resolution]] = {}

    async def resolve(self, host: str) -> Resolution:
        """Return the cached answer for `host`, else ask the inner resolver once."""
        key = host.lower().rstrip(".")
        now = self.clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Resolution] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            answer = await self.inner.resolve(key)
        except Exception as exc:  # a resolver must not raise; never let one break the page
            answer = Resolution(key, error=f"resolver failed ({type(exc).__name__})")
        except BaseException:  # cancelled: the waiters give up too
            future.cancel()
            raise
        finally:
            del self._pending[key]
        future.set_result(answer)
        if len(self._cache) >= self.max_entries:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            while len(self._cache) >= self.max_entries:
                del self._cache[next(iter(self._cache))]
        failed = answer.error is not None and not answer.addresses
        self._cache[key] = (now + (self.error_ttl if failed else self.ttl), answer)
        return answer
