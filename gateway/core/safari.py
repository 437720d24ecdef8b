"""Would Safari cap the cookies a host sets? The verdict from DNS facts (pure: no I/O, no clock).

Safari (WebKit, tracking prevention on by default) shortens to 7 days every persistent cookie of
a same-site response in two cases (browser.md §1.3 d, read from WebKit's
``NetworkTaskCocoa.mm``):

1. **CNAME cloaking.** The last CNAME in the resolution chain of the serving host has a
   registrable domain that is neither the page's site nor the site of the page host's own
   CNAME (if it has one). A CNAME into the shop's own domain is fine.
2. **Third-party IP** (only when the serving host has no CNAME). The address the answer came
   from does not share its first half with the address the page was loaded from: the first
   16 bits for IPv4, the first 64 bits for IPv6. Addresses of different families share no bits.

A host that is the page's own host (same-origin path mode) can never be capped. Which address
a browser picks among several A/AAAA records is its choice, so every pairing must pass: a
same-family pair that differs in the first half caps, and so does a family one side offers and
the other lacks (a dual-stack visitor loads the page over IPv6 and the tracking host over IPv4).
When DNS gives no answer for either side, the verdict is unknown (``capped`` is None): Safari
itself would not cap then, but nothing can be promised.

The registrable domain (eTLD+1) is computed by the caller with the Public Suffix List
(``gateway.web.cookies.registrable_domain``) and passed in as `site_of`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CAP_SECONDS",
    "HALF_BITS",
    "AddressPair",
    "HostVerdict",
    "Resolution",
    "assess",
    "common_prefix_bits",
    "half_network",
    "safari_max_age",
    "shares_half",
]

CAP_SECONDS: Final = 7 * 86_400
"""What Safari shortens a capped persistent cookie's lifetime to."""
HALF_BITS: Final = {4: 16, 6: 64}
"""IP version → the leading bits two addresses must share (``4 * sizeof(in_addr / in6_addr)``)."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SiteOf = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class Resolution:
    """What DNS says about one host name."""

    host: str
    cnames: tuple[str, ...] = ()
    """The CNAME chain in order: the first is the host's own CNAME, the last the canonical name."""
    addresses: tuple[str, ...] = ()
    """Its A and AAAA addresses (after the chain)."""
    error: str | None = None
    """Why nothing (or only part) could be resolved, if so."""

    @property
    def last_cname(self) -> str | None:
        """The last name of the CNAME chain (the one Safari looks at), or None."""
        return self.cnames[-1] if self.cnames else None


@dataclass(frozen=True, slots=True)
class AddressPair:
    """One address of the serving host against one of the page host."""

    address: str
    page_address: str
    shared_bits: int
    """Leading bits both have in common (0 across families)."""
    needed_bits: int
    """What Safari asks for: 16 (IPv4) or 64 (IPv6)."""

    @property
    def ok(self) -> bool:
        """Whether this pairing keeps cookies at full lifetime."""
        return self.shared_bits >= self.needed_bits


@dataclass(frozen=True, slots=True)
class HostVerdict:
    """Whether Safari caps the cookies `host` sets for pages on `page_host`, why, and the fix."""

    host: str
    page_host: str
    capped: bool | None
    """True: capped to 7 days; False: full lifetime; None: could not tell (no DNS answer)."""
    rule: str
    """Which rule decided: same-host, cname, cname-same-site, ip or unknown."""
    reason: str
    fix: str | None
    cname: str | None = None
    """The last CNAME of `host`, if any."""
    cname_site: str | None = None
    """Its registrable domain."""
    page_site: str | None = None
    """The registrable domain of `page_host`."""
    pairs: tuple[AddressPair, ...] = ()
    missing_families: tuple[str, ...] = ()
    """Address families one side has and the other lacks (``IPv4``/``IPv6``, with the side)."""


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None


def common_prefix_bits(a: str, b: str) -> int:
    """Return how many leading bits two addresses share (0 across families or if invalid)."""
    x, y = _address(a), _address(b)
    if x is None or y is None or x.version != y.version:
        return 0
    width = x.max_prefixlen
    diff = int(x) ^ int(y)
    return width - diff.bit_length()


def shares_half(a: str, b: str) -> bool:
    """Whether two addresses share the first half Safari compares (IPv4 /16, IPv6 /64)."""
    x = _address(a)
    if x is None:
        return False
    return common_prefix_bits(a, b) >= HALF_BITS[x.version]


def half_network(address: str) -> str | None:
    """Return the network a serving address must lie in (``a.b.0.0/16`` or ``…::/64``)."""
    x = _address(address)
    if x is None:
        return None
    bits = HALF_BITS[x.version]
    return str(ipaddress.ip_network(f"{x}/{bits}", strict=False))


def safari_max_age(max_age: int, capped: bool | None) -> int:
    """Return the lifetime Safari keeps a cookie set with `max_age` (seconds) under a verdict."""
    return min(max_age, CAP_SECONDS) if capped and max_age > 0 else max_age


def _half_bits(address: str) -> int:
    x = _address(address)
    return HALF_BITS[x.version] if x is not None else HALF_BITS[6]


def _family(address: str) -> str:
    x = _address(address)
    return "invalid" if x is None else f"IPv{x.version}"


def _networks(addresses: Sequence[str]) -> str:
    nets = list(dict.fromkeys(n for a in addresses if (n := half_network(a)) is not None))
    return ", ".join(nets)


def _same_name(a: str, b: str) -> bool:
    return a.lower().rstrip(".") == b.lower().rstrip(".")


def _path_mode(page_host: str) -> str:
    return f"serve the gateway under a path of {page_host} (same-origin path mode, recipe B)"


def assess(host: Resolution, page: Resolution, site_of: SiteOf) -> HostVerdict:
    """Return Safari's verdict for cookies set by `host` on pages served from `page`."""
    name, page_host = host.host, page.host
    page_site = site_of(page_host)
    if _same_name(name, page_host):
        return HostVerdict(
            name,
            page_host,
            False,
            "same-host",
            "served from the page's own host (path mode): Safari never caps these cookies",
            None,
            page_site=page_site,
        )
    cname = host.last_cname
    if cname is not None:
        cname_site = site_of(cname) or cname
        page_cname = page.last_cname
        page_cname_site = (site_of(page_cname) or page_cname) if page_cname else None
        if cname_site in (page_site, page_cname_site):
            return HostVerdict(
                name,
                page_host,
                False,
                "cname-same-site",
                f"{name} is a CNAME to {cname}, which belongs to the page's own site"
                f" ({cname_site}): Safari does not cap",
                None,
                cname=cname,
                cname_site=cname_site,
                page_site=page_site,
            )
        fix = f"replace the CNAME of {name} with an A/AAAA record"
        if page.addresses:
            fix += f" in the site's own network ({_networks(page.addresses)})"
        fix += f", or {_path_mode(page_host)}"
        return HostVerdict(
            name,
            page_host,
            True,
            "cname",
            f"{name} is a CNAME to {cname} ({cname_site}), another site than {page_site}:"
            " Safari caps every cookie it sets to 7 days",
            fix,
            cname=cname,
            cname_site=cname_site,
            page_site=page_site,
        )
    return _assess_addresses(host, page, page_site)


def _assess_addresses(host: Resolution, page: Resolution, page_site: str | None) -> HostVerdict:
    name, page_host = host.host, page.host
    mine = [a for a in host.addresses if _address(a) is not None]
    theirs = [a for a in page.addresses if _address(a) is not None]
    if not mine or not theirs:
        absent = name if not mine else page_host
        why = host.error if not mine else page.error
        return HostVerdict(
            name,
            page_host,
            None,
            "unknown",
            f"no address found for {absent}"
            + (f" ({why})" if why else "")
            + ": cannot tell whether Safari caps",
            f"check the DNS records of {absent}",
            page_site=page_site,
        )
    pairs = tuple(
        AddressPair(a, b, common_prefix_bits(a, b), _half_bits(a))
        for a in mine
        for b in theirs
        if _family(a) == _family(b)
    )
    my_families = {_family(a) for a in mine}
    their_families = {_family(b) for b in theirs}
    missing = tuple(
        [f"{f} only on {page_host}" for f in sorted(their_families - my_families)]
        + [f"{f} only on {name}" for f in sorted(my_families - their_families)]
    )
    bad = [p for p in pairs if not p.ok]
    if not bad and not missing:
        return HostVerdict(
            name,
            page_host,
            False,
            "ip",
            f"every address of {name} shares the first half with {page_host}"
            " (IPv4 /16, IPv6 /64): Safari does not cap",
            None,
            page_site=page_site,
            pairs=pairs,
        )
    problems = [
        f"{p.address} shares {p.shared_bits} of the {p.needed_bits} leading bits with"
        f" {p.page_address}"
        for p in bad
    ]
    problems += [
        f"{m} (a dual-stack visitor reaches the two over different families)" for m in missing
    ]
    fix = (
        f"give {name} A/AAAA records in the site's own network ({_networks(theirs)})"
        f" for every address family {page_host} has, or {_path_mode(page_host)}"
    )
    return HostVerdict(
        name,
        page_host,
        True,
        "ip",
        "; ".join(problems) + ": Safari caps every cookie it sets to 7 days",
        fix,
        page_site=page_site,
        pairs=pairs,
        missing_families=missing,
    )
