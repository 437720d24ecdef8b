"""Cookie domain choice (Public Suffix List), raw Set-Cookie building, Cookie parsing, visitor ids.

Rules and their sources:

* Cookie domain = the registrable domain (eTLD+1) of the normalised Host, computed with the
  whole Public Suffix List *including its private section*, as browsers do (browser.md §1.9):
  ``github.io``, ``myshopify.com`` are suffixes, so ``a.myshop.github.io`` → ``myshop.github.io``,
  and ``a.b.shop.co.uk`` → ``shop.co.uk``; a hand-written "last two labels" rule gets both wrong.
  The list is the snapshot bundled with ``publicsuffixlist`` (offline, loaded once, on first use).
  Host normalisation: strip ``:port`` (also ``[v6]:port``), one trailing dot, lowercase, IDNA to
  A-labels (stdlib IDNA 2003; browsers already send A-labels, so this matters only for configured
  names). IP literals (including WHATWG-style ``127.1``/``0x7f.1``, whose last label is a number),
  public suffixes, single labels and malformed names give ``None``: the caller sets a host-only
  cookie or none. Browser.md §1.9 also asks for an allow-list of hosts; that is the caller's job.
* ``subdomain_index`` for ``_fbc``/``_fbp`` = labels(cookie domain) - 1 (platforms.md §1.4).
* Set-Cookie (browser.md §1.8): ``name=value; Domain=<eTLD+1>; Path=/; Max-Age=<s>;
  SameSite=Lax[; Secure][; HttpOnly]``, never ``Partitioned``, no ``Expires``. The header is
  built by hand because aiohttp's ``set_cookie`` quotes values containing ``/``, ``=`` or ``+``
  and browsers keep the quotes (browser.md §1.8, appendix). Names must be RFC 6265 tokens and
  values cookie-octets (no CTLs, space, ``"``, ``,``, ``;``, ``\\``, non-ASCII), else
  ``ValueError``: a header can never be injected. Add it with
  ``response.headers.add("Set-Cookie", header)``. Deletion repeats Domain and Path (browser.md
  §1.8) with ``Max-Age=0``.
* Cookie request header: at most 8 KiB is parsed (aiohttp's own field limit is 8190 bytes,
  browser.md §1.8); pairs are ``;``-separated, surrounding spaces ignored, one pair of wrapping
  double quotes removed, malformed pairs skipped, and the first well-formed occurrence of a name
  wins (browsers send the most specific path/domain first).
* Our visitor cookie (HttpOnly) is ``<id>.<sig>`` where ``sig`` is base64url (no padding) of
  HMAC-SHA256(key, ``"signalgate-visitor-v1:" + id``) truncated to 16 bytes, verified in constant
  time; the prefix keeps these MACs apart from any other use of the same key.
"""

from __future__ import annotations

import base64
import functools
import hmac
import ipaddress
import re
from collections.abc import Collection
from typing import Final

from publicsuffixlist import PublicSuffixList

__all__ = [
    "MAX_COOKIE_HEADER",
    "delete_cookie_header",
    "normalize_host",
    "parse_cookie_header",
    "registrable_domain",
    "set_cookie_header",
    "sign_visitor_id",
    "subdomain_index",
    "verify_visitor_id",
]

MAX_COOKIE_HEADER: Final = 8192
"""A Cookie header longer than this (in characters) is ignored whole."""

_MAX_HOST: Final = 300
_TOKEN_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_COOKIE_OCTETS_RE: Final = re.compile(r"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*")
_HOSTNAME_RE: Final = re.compile(
    r"(?=.{1,253}\Z)(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*"
    r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
)
_NUMERIC_LABEL_RE: Final = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")
_VISITOR_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
_SIG_RE: Final = re.compile(r"[A-Za-z0-9_-]{22}")
_SIG_CONTEXT: Final = b"signalgate-visitor-v1:"
_MAX_COOKIE_BYTES: Final = 4096


@functools.cache
def _psl() -> PublicSuffixList:
    # Loads the bundled snapshot (~60 ms) once per process; never touches the network.
    return PublicSuffixList(only_icann=False)


def normalize_host(host: str) -> str | None:
    """Return `host` lower-cased, in A-labels, without port or trailing dot; None if invalid."""
    if not host or len(host) > _MAX_HOST:
        return None
    host = host.strip()
    if host.startswith("["):
        return None  # an IPv6 literal, with or without a port
    name, colon, port = host.rpartition(":")
    if colon:
        if ":" in name or not port.isdigit():
            return None  # a bare IPv6 address, or junk after the colon
        host = name
    if host.endswith("."):
        host = host[:-1]
    try:
        ascii_host = host.lower().encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    if not _HOSTNAME_RE.fullmatch(ascii_host):
        return None
    return ascii_host


@functools.lru_cache(maxsize=1024)
def registrable_domain(host: str) -> str | None:
    """Return the eTLD+1 to use as cookie Domain for a Host header value, or None."""
    name = normalize_host(host)
    if name is None or _is_ip(name):
        return None
    domain = _psl().privatesuffix(name)
    return domain if isinstance(domain, str) and _HOSTNAME_RE.fullmatch(domain) else None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        # WHATWG URL: a host whose last label is a number is parsed as an IPv4 address.
        return _NUMERIC_LABEL_RE.fullmatch(name.rpartition(".")[2]) is not None
    return True


def subdomain_index(domain: str | None) -> int:
    """Return Meta's subdomainIndex for a cookie domain: labels - 1 (0 for host-only, max 9)."""
    if not domain:
        return 0
    return min(domain.strip(".").count("."), 9)


def set_cookie_header(
    name: str,
    value: str,
    *,
    domain: str | None,
    max_age: int,
    secure: bool,
    http_only: bool,
) -> str:
    """Return a raw Set-Cookie header value; ValueError if any part is not cookie-safe.

    Everything after the value is the same for every hit of a site, so it is built and checked
    once per (domain, max_age, secure, http_only) and kept: a hit checks only name and value.
    """
    _check_name_value(name, value)
    if type(max_age) is not int or max_age < 0:
        raise ValueError("max_age must be a non-negative int")
    key = (domain, max_age, secure, http_only)
    tail = _TAILS.get(key)
    if tail is None:
        tail = _tail(domain, max_age, secure, http_only)
        if len(_TAILS) >= _TAILS_MAX:
            _TAILS.clear()
        _TAILS[key] = tail
    return f"{name}={value}{tail}"


_TAILS: Final[dict[tuple[str | None, int, bool, bool], str]] = {}
_TAILS_MAX: Final = 256


def _tail(domain: str | None, max_age: int, secure: bool, http_only: bool) -> str:
    parts = [""]
    if domain is not None:
        if not _HOSTNAME_RE.fullmatch(domain):
            raise ValueError("domain must be a lower-case ASCII host name")
        parts.append(f"Domain={domain}")
    parts += ["Path=/", f"Max-Age={max_age}", "SameSite=Lax"]
    if secure:
        parts.append("Secure")
    if http_only:
        parts.append("HttpOnly")
    return "; ".join(parts)


def delete_cookie_header(name: str, domain: str | None, *, secure: bool = True) -> str:
    """Return a Set-Cookie header value deleting `name` on the same Domain and Path."""
    return set_cookie_header(name, "", domain=domain, max_age=0, secure=secure, http_only=False)


def _check_name_value(name: str, value: str) -> None:
    if name not in _NAMES:
        if not _TOKEN_RE.fullmatch(name):
            raise ValueError("cookie name must be an RFC 6265 token")
        if len(_NAMES) < _TAILS_MAX:
            _NAMES.add(name)
    if not _COOKIE_OCTETS_RE.fullmatch(value):
        raise ValueError("cookie value must be cookie-octets (no space, quote, comma, ; or \\)")
    if len(name) + len(value) > _MAX_COOKIE_BYTES:
        raise ValueError("cookie name and value exceed 4096 bytes")


_NAMES: Final[set[str]] = set()
"""Cookie names already found to be tokens."""


def parse_cookie_header(header: str | None, wanted: Collection[str]) -> dict[str, str]:
    """Return the wanted cookies of a Cookie request header (first well-formed one wins)."""
    if header is None or len(header) > MAX_COOKIE_HEADER:
        return {}
    found: dict[str, str] = {}
    for pair in header.split(";"):
        name, eq, value = pair.partition("=")
        name = name.strip(" \t")
        if not eq or not name or name in found or name not in wanted:
            continue
        value = value.strip(" \t")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if _COOKIE_OCTETS_RE.fullmatch(value):
            found[name] = value
            if len(found) == len(wanted):
                break
    return found


def _signature(raw_id: str, key: bytes) -> str:
    mac = hmac.digest(key, _SIG_CONTEXT + raw_id.encode("ascii"), "sha256")[:16]
    return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")


def sign_visitor_id(raw_id: str, key: bytes) -> str:
    """Return the visitor cookie value ``<id>.<base64url HMAC-SHA256/128>``."""
    if not _VISITOR_ID_RE.fullmatch(raw_id):
        raise ValueError("visitor id must be 1-128 base64url characters")
    if len(key) < 16:
        raise ValueError("signing key must be at least 16 bytes")
    return f"{raw_id}.{_signature(raw_id, key)}"


def verify_visitor_id(cookie: str, key: bytes) -> str | None:
    """Return the visitor id of a correctly signed cookie value, else None."""
    if len(key) < 16:
        return None
    raw_id, dot, sig = cookie.rpartition(".")
    if not dot or not _VISITOR_ID_RE.fullmatch(raw_id) or not _SIG_RE.fullmatch(sig):
        return None
    if not hmac.compare_digest(sig.encode("ascii"), _signature(raw_id, key).encode("ascii")):
        return None
    return raw_id
