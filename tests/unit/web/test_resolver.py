"""DNS facts for the self-check (gateway/web/resolver.py), against a local DNS server."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

sys.path.insert(0, str(Path(__file__).parents[2]))

from fakedns import FakeResolver

from gateway.core.safari import Resolution
from gateway.web.resolver import CachedResolver, DnsResolver

ZONE_CNAME = {"track.shop.test.": "a.shop.test.", "a.shop.test.": "edge.vendor.test."}
ZONE_A = {"edge.vendor.test.": "198.51.100.7", "www.shop.test.": "203.0.113.10"}
ZONE_AAAA = {"www.shop.test.": "2001:db8::10"}


class Zone(asyncio.DatagramProtocol):
    """A tiny authoritative answerer over UDP: follows its CNAMEs like a recursive server."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.queries: list[str] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name, rdtype = question.name.to_text(), question.rdtype
        self.queries.append(f"{name} {dns.rdatatype.to_text(rdtype)}")
        while name in ZONE_CNAME:
            target = ZONE_CNAME[name]
            response.answer.append(dns.rrset.from_text(name, 300, "IN", "CNAME", target))
            name = target
        table = ZONE_A if rdtype == dns.rdatatype.A else ZONE_AAAA
        if name in table:
            kind = dns.rdatatype.to_text(rdtype)
            response.answer.append(dns.rrset.from_text(name, 300, "IN", kind, table[name]))
        elif name not in ZONE_A and name not in ZONE_AAAA:
            response.set_rcode(dns.rcode.NXDOMAIN)
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def zone() -> AsyncIterator[tuple[Zone, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Zone, local_addr=("127.0.0.1", 0))
    try:
        yield protocol, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


async def test_cname_chain_and_addresses(zone: tuple[Zone, int]) -> None:
    server, port = zone
    resolver = DnsResolver(timeout=2.0, nameservers=["127.0.0.1"], port=port)
    track = await resolver.resolve("track.shop.test")
    assert track.cnames == ("a.shop.test", "edge.vendor.test")
    assert track.last_cname == "edge.vendor.test"
    assert track.addresses == ("198.51.100.7",)
    assert track.error is None
    www = await resolver.resolve("www.shop.test")
    assert www == Resolution("www.shop.test", (), ("203.0.113.10", "2001:db8::10"))
    gone = await resolver.resolve("nothing.shop.test")
    assert gone.addresses == ()
    assert gone.error is not None
    assert "NXDOMAIN" in gone.error
    assert "track.shop.test. A" in server.queries


async def test_ip_literals_need_no_query(zone: tuple[Zone, int]) -> None:
    server, port = zone
    resolver = DnsResolver(timeout=2.0, nameservers=["127.0.0.1"], port=port)
    assert (await resolver.resolve("127.0.0.1")).addresses == ("127.0.0.1",)
    assert (await resolver.resolve("[2001:db8::1]")).addresses == ("2001:db8::1",)
    assert server.queries == []


async def test_silent_server_times_out_into_an_error() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    try:
        port = transport.get_extra_info("sockname")[1]
        resolver = DnsResolver(timeout=0.3, nameservers=["127.0.0.1"], port=port)
        answer = await asyncio.wait_for(resolver.resolve("track.shop.test"), 10)
    finally:
        transport.close()
    assert answer.addresses == ()
    assert answer.error is not None


async def test_cache_keeps_answers_and_shares_one_lookup() -> None:
    now = [1000.0]
    inner = FakeResolver(addresses={"www.shop.test": ["203.0.113.10"]})
    cached = CachedResolver(inner, lambda: now[0], ttl=60, error_ttl=5, max_entries=2)
    first = await asyncio.gather(*(cached.resolve("WWW.shop.test.") for _ in range(5)))
    assert {r.addresses for r in first} == {("203.0.113.10",)}
    assert inner.asked == ["www.shop.test"]
    now[0] += 59
    await cached.resolve("www.shop.test")
    assert len(inner.asked) == 1
    now[0] += 2
    await cached.resolve("www.shop.test")
    assert len(inner.asked) == 2
    await cached.resolve("gone.test")
    now[0] += 6
    await cached.resolve("gone.test")  # failures are kept only error_ttl
    assert inner.asked.count("gone.test") == 2
    await cached.resolve("third.test")
    assert len(cached._cache) <= 2


async def test_a_raising_resolver_becomes_an_error_answer() -> None:
    class Broken:
        async def resolve(self, host: str) -> Resolution:
            raise RuntimeError("boom")

    answer = await CachedResolver(Broken(), lambda: 0.0).resolve("x.test")
    assert answer.error == "resolver failed (RuntimeError)"
