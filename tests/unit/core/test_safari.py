"""Safari's 7-day cookie cap verdict (gateway/core/safari.py): CNAME and first-half IP rules."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.safari import (
    CAP_SECONDS,
    Resolution,
    assess,
    common_prefix_bits,
    half_network,
    safari_max_age,
    shares_half,
)
from gateway.web.cookies import registrable_domain

V4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
V6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))


def v4(n: int) -> str:
    return str(ipaddress.IPv4Address(n))


def v6(n: int) -> str:
    return str(ipaddress.IPv6Address(n))


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**16 - 1))
def test_ipv4_addresses_in_the_same_slash_16_share_the_half(base: int, low: int) -> None:
    other = (base & 0xFFFF0000) | low
    assert shares_half(v4(base), v4(other))
    assert common_prefix_bits(v4(base), v4(other)) >= 16


@given(st.integers(0, 2**32 - 1), st.integers(1, 2**16 - 1), st.integers(0, 2**16 - 1))
def test_ipv4_addresses_differing_in_the_first_16_bits_do_not(
    base: int, flip: int, low: int
) -> None:
    other = ((base ^ (flip << 16)) & 0xFFFF0000) | low
    assert not shares_half(v4(base), v4(other))
    assert common_prefix_bits(v4(base), v4(other)) < 16


@given(st.integers(0, 2**128 - 1), st.integers(0, 2**64 - 1))
def test_ipv6_addresses_in_the_same_slash_64_share_the_half(base: int, low: int) -> None:
    other = (base >> 64 << 64) | low
    assert shares_half(v6(base), v6(other))


@given(st.integers(0, 2**128 - 1), st.integers(1, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_ipv6_addresses_differing_in_the_first_64_bits_do_not(
    base: int, flip: int, low: int
) -> None:
    other = ((base ^ (flip << 64)) >> 64 << 64) | low
    assert not shares_half(v6(base), v6(other))


@given(V4, V6)
def test_addresses_of_different_families_share_nothing(a: str, b: str) -> None:
    assert common_prefix_bits(a, b) == 0
    assert not shares_half(a, b)
    assert not shares_half(b, a)


@given(st.one_of(V4, V6), st.one_of(V4, V6))
def test_common_prefix_is_symmetric_and_full_only_for_equal_addresses(a: str, b: str) -> None:
    bits = common_prefix_bits(a, b)
    assert bits == common_prefix_bits(b, a)
    width = ipaddress.ip_address(a).max_prefixlen
    assert 0 <= bits <= width
    assert (bits == width) == (ipaddress.ip_address(a) == ipaddress.ip_address(b))


@given(st.one_of(V4, V6))
def test_half_network_holds_exactly_the_addresses_sharing_the_half(a: str) -> None:
    net = ipaddress.ip_network(half_network(a) or "")
    assert ipaddress.ip_address(a) in net
    assert net.prefixlen == (16 if ":" not in a else 64)
    assert shares_half(a, str(net.network_address))
    assert shares_half(a, str(net.broadcast_address))


@given(
    st.lists(V4, min_size=1, max_size=4),
    st.lists(V4, min_size=1, max_size=4),
)
def test_ip_verdict_caps_unless_every_pairing_shares_the_half(
    mine: list[str], theirs: list[str]
) -> None:
    verdict = assess(
        Resolution("track.shop.example", (), tuple(mine)),
        Resolution("www.shop.example", (), tuple(theirs)),
        registrable_domain,
    )
    every = all(shares_half(a, b) for a in mine for b in theirs)
    assert verdict.rule == "ip"
    assert verdict.capped is (not every)
    assert (verdict.fix is None) is every
    assert len(verdict.pairs) == len(mine) * len(theirs)


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**16 - 1), st.integers(0, 2**128 - 1))
def test_a_family_only_one_side_has_caps_dual_stack_visitors(base: int, low: int, six: int) -> None:
    near = v4((base & 0xFFFF0000) | low)
    page = Resolution("www.shop.example", (), (v4(base), v6(six)))
    verdict = assess(Resolution("track.shop.example", (), (near,)), page, registrable_domain)
    assert verdict.capped is True
    assert verdict.missing_families == ("IPv6 only on www.shop.example",)
    both = Resolution("track.shop.example", (), (near, v6(six ^ 1)))
    assert assess(both, page, registrable_domain).capped is False


def test_same_host_is_never_capped_even_through_a_cname() -> None:
    page = Resolution("www.shop.example", ("shops.myshopify.com",), ("23.227.38.65",))
    verdict = assess(page, page, registrable_domain)
    assert verdict.capped is False
    assert verdict.rule == "same-host"


def test_cname_to_another_site_caps_with_the_fix() -> None:
    track = Resolution("track.shop.example", ("gw.vendor-cloud.net",), ("198.51.100.7",))
    page = Resolution("www.shop.example", (), ("203.0.113.10",))
    verdict = assess(track, page, registrable_domain)
    assert verdict.capped is True
    assert verdict.rule == "cname"
    assert verdict.cname_site == "vendor-cloud.net"
    assert verdict.page_site == "shop.example"
    assert verdict.fix is not None
    assert "203.0.0.0/16" in verdict.fix
    assert "path mode" in verdict.fix


def test_cname_inside_the_shop_site_or_to_the_page_hosts_own_vendor_is_fine() -> None:
    page = Resolution("www.shop.example", (), ("203.0.113.10",))
    inside = Resolution("track.shop.example", ("gw.shop.example",), ("198.51.100.7",))
    assert assess(inside, page, registrable_domain).capped is False
    # The page host itself is a CNAME into the same vendor: Safari does not cap.
    hosted = Resolution("www.shop.example", ("shop.hoster.net",), ("203.0.113.10",))
    same_vendor = Resolution("track.shop.example", ("gw.hoster.net",), ("198.51.100.7",))
    assert assess(same_vendor, hosted, registrable_domain).capped is False
    assert assess(same_vendor, page, registrable_domain).capped is True


def test_last_cname_of_a_chain_decides_and_private_suffixes_count() -> None:
    page = Resolution("www.shop.example", (), ("203.0.113.10",))
    chain = Resolution("t.shop.example", ("a.shop.example", "shop.github.io"), ("185.199.108.1",))
    verdict = assess(chain, page, registrable_domain)
    assert verdict.capped is True
    assert verdict.cname == "shop.github.io"
    assert verdict.cname_site == "shop.github.io"  # github.io is a public suffix (private part)


def test_unknown_without_addresses() -> None:
    page = Resolution("www.shop.example", (), ("203.0.113.10",))
    gone = Resolution("track.shop.example", error="no such name (NXDOMAIN)")
    verdict = assess(gone, page, registrable_domain)
    assert verdict.capped is None
    assert "NXDOMAIN" in verdict.reason


def test_safari_lifetime() -> None:
    assert safari_max_age(400 * 86400, True) == CAP_SECONDS
    assert safari_max_age(400 * 86400, False) == 400 * 86400
    assert safari_max_age(3600, True) == 3600
    assert safari_max_age(0, True) == 0


LABEL = st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True)


@given(LABEL, LABEL, LABEL, st.sampled_from(["com", "co.uk", "net", "github.io"]))
def test_cname_is_capped_exactly_when_its_site_differs_from_the_pages(
    shop: str, vendor: str, label: str, suffix: str
) -> None:
    page = Resolution(f"www.{shop}.example", (), ("203.0.113.10",))
    target = f"{label}.{vendor}.{suffix}"
    verdict = assess(
        Resolution(f"t.{shop}.example", (target,), ("203.0.113.11",)), page, registrable_domain
    )
    assert verdict.rule in ("cname", "cname-same-site")
    assert verdict.capped is True  # the vendor's domain is never the shop's .example site
    inside = assess(
        Resolution(f"t.{shop}.example", (f"{label}.{shop}.example",), ("198.51.100.1",)),
        page,
        registrable_domain,
    )
    assert inside.capped is False  # a CNAME into the shop's own site: no cap, whatever the IP
