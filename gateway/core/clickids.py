"""Click ids from landing URLs, and the vendor cookies built from them: the machinery (pure).

What each platform owns — its click-id query parameters and its cookie formats — lives in its
package (``gateway/destinations/<name>/clickids.py``) as ``ClickIdParam`` and ``CookieSpec``
values; the web layer passes them in (``gateway.destinations.CLICK_IDS`` and ``COOKIES``,
built from the platforms). This module holds the rules they all follow. The clock and
randomness are parameters (``now_ms``, ``random_bits``): nothing here reads the time, draws
random numbers or does I/O. Sources: platforms.md §1.4, §3.3, §4.3, §8, §10.2 and §11
pitfalls 4, 21, 28; browser.md §2.1 (cookie formats, observed values), §2.2 (server-side
re-setting), §1.8 (lifetimes).

Rules:

* ``capture`` reads the query parameters of a ``ClickIdTable``. A parameter marked
  ``any_case`` (Snap's ScCid, matched as Snap's own tag does) is matched case-insensitively;
  other names are case-sensitive. Keys come back lower-case (``sccid``). A missing or invalid id
  in the page URL is taken from the referrer's query (Meta's param builder does this for fbclid,
  Snap's tag for ScCid). The query is percent-decoded once (``+`` is a space, as in forms) and the
  value is never re-cased, trimmed or decoded again: fbclid and gclid are case-sensitive and a
  modified gclid is refused by Google (pitfall 21). The first valid occurrence wins.
* Value checks: an id must match its parameter's pattern, most often ``SAFE_ID`` (1-500 of
  ``A-Z a-z 0-9 . _ ~ -``, the event parser's rule, so a captured id is always accepted by
  ``parse_event``). Anything else is ignored, never repaired.
* Cookie formats: a spec's validator returns the value unchanged, or ``None`` for a malformed
  value; a platform's formatter raises ``ValueError`` on inputs it could not format validly,
  which is a programming error. ``check_index``, ``check_digits`` and ``check_bits`` are the
  shared argument checks of those formatters.
* Only the cookies of the specs are managed; a platform whose cookie format is undocumented or
  unverified has no spec, and we never invent values for formats we do not control
  (browser.md §2.2). Its click ids still reach the server APIs through ``capture``.
* ``plan_cookies`` decides what to (re)issue on a hit; its docstring holds the rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final
from urllib.parse import unquote

__all__ = [
    "MAX_QUERY_CHARS",
    "SAFE_ID",
    "ClickIdParam",
    "ClickIdTable",
    "CookieKind",
    "CookieSpec",
    "capture",
    "carried_cookies",
    "check_bits",
    "check_digits",
    "check_index",
    "click_ids_from_cookies",
    "matching",
    "plan_cookies",
    "tracking_cookies",
    "validating",
]

SAFE_ID: Final = re.compile(r"[A-Za-z0-9._~-]{1,500}")
"""The usual click-id pattern (the event parser's rule for ``user.click_ids`` values)."""

MAX_QUERY_CHARS: Final = 16_384
"""Query characters examined per URL; a pair reaching past this bound is ignored, not cut."""


@dataclass(frozen=True, slots=True)
class ClickIdParam:
    """One click-id query parameter of a platform."""

    key: str
    """The parameter name in lower case, also its ``User.click_ids`` key."""
    pattern: re.Pattern[str]
    """What its whole value must match."""
    any_case: bool = False
    """Whether the name is matched case-insensitively (else exactly ``key``)."""

    def valid(self, value: object) -> str | None:
        """Return `value` if it is a well-formed id for this parameter, else None."""
        if not isinstance(value, str) or not self.pattern.fullmatch(value):
            return None
        return value


class ClickIdTable:
    """The click-id parameters ``capture`` reads, by key (built once, from the platforms)."""

    __slots__ = ("_exact", "_folded", "params")

    def __init__(self, params: Iterable[ClickIdParam]) -> None:
        self.params: dict[str, ClickIdParam] = {}
        for param in params:
            if param.key in self.params or param.key != param.key.lower():
                raise ValueError(f"click id {param.key!r}: duplicate or not lower-case")
            self.params[param.key] = param
        self._exact = {k: p for k, p in self.params.items() if not p.any_case}
        self._folded = {k: p for k, p in self.params.items() if p.any_case}

    def valid(self, key: str, value: object) -> str | None:
        """Return `value` if it is a well-formed click id for `key` (lower-case), else None."""
        param = self.params.get(key)
        return None if param is None else param.valid(value)

    def key_of(self, name: str) -> str | None:
        """Return the key of the query parameter `name`, or None if it is not a click id."""
        if name in self._exact:
            return name
        folded = name.lower()
        return folded if folded in self._folded else None


class CookieKind(Enum):
    """How ``plan_cookies`` treats a managed cookie."""

    CLICK = "click"
    """Holds a click id and the time it was first seen: kept while the click id is the same,
    rewritten (``build``) when a different one arrives (``_fbc``, ``_gcl_aw``)."""
    CARRIER = "carrier"
    """Built from a newly captured click id, else the known value (``ttclid``, ``_scclid``)."""
    VISITOR = "visitor"
    """One per visitor: the known value, else a new one (``create``: ``_fbp``, ``_ttp``)."""
    READ = "read"
    """Set by the vendor's own script in a format we do not control: only read (its value
    fills `reads_as`), never planned, written or deleted (``_epik``, ``_rdt_uuid``)."""


@dataclass(frozen=True, slots=True)
class CookieSpec:
    """One first-party vendor cookie the gateway manages: its format and how it is issued."""

    name: str
    kind: CookieKind
    max_age_days: int
    """The vendor's own lifetime for it (all below the 400-day cap); 0 for READ cookies."""
    validate: Callable[[str], str | None]
    """Return the value unchanged if well-formed, else None."""
    click_id: str | None = None
    """CLICK and CARRIER: the captured click-id key it is built from."""
    build: Callable[[str, int, int], str] | None = None
    """CLICK and CARRIER: (click id, now in ms, subdomain index) → the value."""
    click_of: Callable[[str], str | None] | None = None
    """CLICK: the click id inside a valid value."""
    create: Callable[[int, Callable[[int], int], int], str] | None = None
    """VISITOR: (now in ms, random_bits, subdomain index) → a new value."""
    reads_as: str | None = None
    """The ``User.click_ids`` key a valid cookie fills (``click_ids_from_cookies``), if any."""
    read: Callable[[str], str | None] | None = None
    """With `reads_as`: the value → that click id (None: malformed)."""
    carried: bool = False
    """A known visitor normally carries it (every VISITOR cookie, and Meta's ``_fbc``): a hit
    of a known visitor without it reads the visitor profile to restore the value, instead of
    issuing a new one (a missing click cookie alone does not: most visitors never had one)."""


def tracking_cookies(specs: Iterable[CookieSpec]) -> tuple[str, ...]:
    """Return the names of the cookies of `specs` the gateway sets (every kind but READ), in
    the order of `specs`: what an explicit consent denial deletes (``gateway.core.consent``)."""
    return tuple(spec.name for spec in specs if spec.kind is not CookieKind.READ)


def carried_cookies(specs: Iterable[CookieSpec]) -> tuple[str, ...]:
    """Return the names of the ``carried`` cookies of `specs`, in their order."""
    return tuple(spec.name for spec in specs if spec.carried and spec.kind is not CookieKind.READ)


def matching(pattern: re.Pattern[str]) -> Callable[[str], str | None]:
    """Return a validator keeping the values that `pattern` matches whole."""

    def validate(value: str) -> str | None:
        return value if pattern.fullmatch(value) else None

    return validate


def validating(parse: Callable[[object], object | None]) -> Callable[[str], str | None]:
    """Return a validator keeping the values that `parse` can read."""

    def validate(value: str) -> str | None:
        return value if parse(value) is not None else None

    return validate


def capture(url: str | None, referrer: str | None, table: ClickIdTable) -> dict[str, str]:
    """Return the valid click ids of `url`'s query, each missing one taken from `referrer`'s."""
    found = _query_click_ids(url, table)
    for key, value in _query_click_ids(referrer, table).items():
        found.setdefault(key, value)
    return found


def _query_click_ids(url: object, table: ClickIdTable) -> dict[str, str]:
    if not isinstance(url, str):
        return {}
    query = url.partition("#")[0].partition("?")[2][: MAX_QUERY_CHARS + 1]
    found: dict[str, str] = {}
    start = 0
    for pair in query.split("&"):
        end = start + len(pair)
        if end > MAX_QUERY_CHARS:
            break
        start = end + 1
        raw_name, eq, raw_value = pair.partition("=")
        if not eq:
            continue
        key = table.key_of(_form_decode(raw_name))
        if key is None or key in found:
            continue
        value = table.valid(key, _form_decode(raw_value))
        if value is not None:
            found[key] = value
    return found


def _form_decode(text: str) -> str:
    # One percent-decoding pass; invalid UTF-8 becomes U+FFFD, which no id pattern accepts.
    return unquote(text.replace("+", " "))


def click_ids_from_cookies(
    cookies: Mapping[str, str], specs: Sequence[CookieSpec]
) -> dict[str, str]:
    """Return ``User.click_ids`` entries read from the valid cookies of the specs that have
    ``reads_as`` (in the order of `specs`)."""
    out: dict[str, str] = {}
    for spec in specs:
        if spec.reads_as is None or spec.read is None:
            continue
        raw = cookies.get(spec.name)
        if isinstance(raw, str) and (value := spec.read(raw)) is not None:
            out[spec.reads_as] = value
    return out


_FROM_CLICKS: Final = frozenset({CookieKind.CLICK, CookieKind.CARRIER})


def plan_cookies(
    *,
    click_ids: Mapping[str, str],
    existing: Mapping[str, str],
    profile_values: Mapping[str, str],
    now_ms: int,
    random_bits: Callable[[int], int],
    subdomain_index: int,
    specs: Sequence[CookieSpec],
    table: ClickIdTable,
) -> dict[str, str]:
    """Return cookie name → value for every vendor cookie to (re)issue on this hit.

    Inputs: `click_ids` from ``capture`` (lower-case keys, checked again against `table`),
    `existing` request cookies and the visitor profile's last known values (`profile_values`),
    both keyed by cookie name; `random_bits(k)` returns a random int of k bits
    (``secrets.randbits``); `subdomain_index` is ``labels(cookie domain) - 1`` (platforms.md
    §1.4). Invalid inputs are ignored. A value is *known* when the existing cookie, else the
    profile value, passes its spec's validator. Rules, by kind:

    * CLICK (``_fbc``, ``_gcl_aw``): a new click id equal to a known value's click id keeps that
      value (and so its first creation time and appendix); a different or first click id gives
      a new value (platforms.md §1.4: rewrite only when the fbclid differs). No click id: the
      known value.
    * CARRIER (``ttclid``, ``_scclid``, ``_uetmsclkid``): built from the new click id, else the
      known value.
    * VISITOR (``_fbp``, ``_ttp``, ``_scid``: one per visitor): the known value, else a new one.
    * A cookie with no valid value is left out: a malformed cookie is replaced when something
      replaces it, otherwise not re-issued (never deleted: it may be a vendor format we do not
      know, which its own script still reads).

    * READ cookies are never planned.

    The plan lists the CLICK and CARRIER cookies first, then the VISITOR ones, each in the order
    of `specs`; ``random_bits`` is called only for visitor ids that must be created, in that
    order. Every emitted value passes its spec's validator.
    """
    plan: dict[str, str] = {}

    def known(spec: CookieSpec) -> list[str]:
        check = spec.validate
        return [
            raw
            for raw in (existing.get(spec.name), profile_values.get(spec.name))
            if isinstance(raw, str) and check(raw) is not None
        ]

    for spec in specs:
        if spec.kind not in _FROM_CLICKS or spec.click_id is None or spec.build is None:
            continue
        fresh = table.valid(spec.click_id, click_ids.get(spec.click_id))
        values = known(spec)
        if fresh is not None:
            click_of = spec.click_of if spec.kind is CookieKind.CLICK else None
            same = None
            if click_of is not None:
                same = next((raw for raw in values if click_of(raw) == fresh), None)
            plan[spec.name] = same or spec.build(fresh, now_ms, subdomain_index)
        elif values:
            plan[spec.name] = values[0]

    for spec in specs:
        if spec.kind is not CookieKind.VISITOR or spec.create is None:
            continue
        values = known(spec)
        plan[spec.name] = values[0] if values else spec.create(now_ms, random_bits, subdomain_index)
    return plan


def check_index(subdomain_index: int) -> None:
    """Raise ValueError unless `subdomain_index` is an int 0-9 (the cookie-domain index)."""
    if type(subdomain_index) is not int or not 0 <= subdomain_index <= 9:
        raise ValueError("subdomain_index must be 0-9")


def check_digits(name: str, number: int, low: int, high: int) -> None:
    """Raise ValueError unless `number` is a non-negative int of `low`-`high` digits."""
    if type(number) is not int or number < 0:
        raise ValueError(f"{name} must be a non-negative int")
    if not low <= len(str(number)) <= high:
        raise ValueError(f"{name} must have {low}-{high} digits")


def check_bits(name: str, number: int, bits: int) -> None:
    """Raise ValueError unless `number` is an int of at most `bits` bits."""
    if type(number) is not int or not 0 <= number < 1 << bits:
        raise ValueError(f"{name} must be an int of at most {bits} bits")
