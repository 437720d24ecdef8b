"""A DNS stand-in for the self-check tests: fixed CNAME chains and addresses, no network."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gateway.core.safari import Resolution


@dataclass
class FakeResolver:
    """Answers from `records`: name → list of CNAME target (str) or addresses (list)."""

    cnames: Mapping[str, str] = field(default_factory=dict)
    addresses: Mapping[str, Sequence[str]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    async def resolve(self, host: str) -> Resolution:
        self.asked.append(host)
        try:
            return Resolution(host, (), (str(ipaddress.ip_address(host)),))
        except ValueError:
            pass
        chain: list[str] = []
        name = host
        while name in self.cnames and len(chain) < 8:
            name = self.cnames[name]
            chain.append(name)
        found = tuple(self.addresses.get(name, ()))
        if not chain and not found:
            return Resolution(host, error="no such name (NXDOMAIN)")
        return Resolution(host, tuple(chain), found)
