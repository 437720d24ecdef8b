"""Turn an event's raw PII into the hashed identifier sets its destinations need."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

from gateway.core.event import PII_FIELDS, Event
from gateway.core.eventbuild import with_hashed
from gateway.core.fielderrors import FieldError
from gateway.core.normalize import DERIVED, SAME_RULE, check
from gateway.core.normalize.countries import country_code
from gateway.core.normalize.digests import sha256_hex
from gateway.core.normalize.rule import Dropped

_INPUT_NAME = {key: name for name, key in PII_FIELDS.items()}
_DIGEST_RE: Final = re.compile(r"[0-9a-f]{64}")

Hashed = dict[str, dict[str, tuple[str, ...]]]
"""Hashed identifiers: rule set ("meta", …) → identifier key (em, ph, …) → SHA-256 values."""


class PiiHasher:
    """Hashes raw PII for fixed rule sets and keeps what had to be dropped.

    Called by `parse_event` (its `hasher` argument) once the event is known to be valid, so the
    event is built once, already hashed. `warnings` then holds a FieldError per dropped value,
    with its path under `path` (e.g. ``events[3].user.phone``). One hasher may serve all the
    events of a request (set `path` per event, or `index` to mean ``<prefix>[index]`` without
    formatting a path that is only needed if something is dropped): it remembers the result
    of each (rule set, identifier, value) it has seen, so a value repeated across the batch (a
    phone number, a country) is normalised and hashed once. Raw values live in that memo only
    as long as the hasher, i.e. the request.

    A national phone number is read in the event's own country (its raw ``user.country``) when
    that names one, else in `default_country` (the site's): see `phone_country`.
    """

    __slots__ = (
        "_digests",
        "_memo",
        "_normals",
        "_path",
        "_plans",
        "_rules",
        "default_country",
        "index",
        "prefix",
        "rulesets",
        "warnings",
    )

    def __init__(
        self,
        rulesets: tuple[str, ...],
        *,
        default_country: str | None = None,
        path: str = "",
        prefix: str = "events",
    ) -> None:
        self.rulesets = rulesets
        self.default_country = default_country
        self._path = path
        self.prefix = prefix
        self.index: int | None = None
        self.warnings: list[FieldError] = []
        self._memo: dict[tuple[str, str, str, str | None], str | Dropped] = {}
        self._digests: dict[str, str] = {}
        """Normal form → its SHA-256 hex (as long as the hasher, like `_memo`)."""
        self._normals: dict[tuple[str, str, str, str | None], str | Dropped] = {}
        """`_memo`'s keys → the normal form (`_normal`; as long as the hasher)."""
        self._rules = tuple(dict.fromkeys(rulesets))
        self._plans: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {}
        """Identifier key → `_plan`."""

    @property
    def path(self) -> str:
        """Where warnings point: ``<prefix>[index]`` while `index` is set, else the path."""
        if self.index is not None:
            return f"{self.prefix}[{self.index}]"
        return self._path

    @path.setter
    def path(self, value: str) -> None:
        self._path = value
        self.index = None

    def __call__(self, pii: Mapping[str, tuple[str, ...]]) -> Hashed:
        memo = self._memo
        country = phone_country(pii, self.default_country)
        hashed: Hashed = {rules: {} for rules in self._rules}
        outs = list(hashed.values())
        for key, values in pii.items():
            if len(values) != 1:
                break  # lists: the general path below, warnings and all
            value = values[0]
            plan = self._plans.get(key)
            if plan is None:
                plan = self._plans[key] = self._plan(key)
            groups, picks = plan
            # Only the phone rule reads the country: other values stay shared across events.
            where = country if key == "ph" else None
            results: list[tuple[str, ...]] = []
            for group in groups:
                memo_key = (group, key, value, where)
                result = memo.get(memo_key)
                if result is None:
                    result = memo[memo_key] = self._digest_of(key, value, group, country)
                if type(result) is not str:
                    break  # a dropped value: the general path reports it
                results.append((result,))
            else:
                for out, pick in zip(outs, picks, strict=True):
                    out[key] = results[pick]
                continue
            break
        else:
            return hashed
        hashed, warnings = hash_pii(pii, self.rulesets, country, self.path)
        self.warnings.extend(warnings)
        return hashed

    def _plan(self, key: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """The distinct rules (SAME_RULE) the rule sets apply to `key`, and for each rule set
        the position of its own among them."""
        groups: list[str] = []
        picks: list[int] = []
        for rules in self._rules:
            group = SAME_RULE.get((rules, key), rules)  # unknown: `check` names the problem
            if group not in groups:
                groups.append(group)
            picks.append(groups.index(group))
        return tuple(groups), tuple(picks)

    def _digest_of(self, key: str, value: str, rules: str, country: str | None) -> str | Dropped:
        """Return the SHA-256 hex of the normalised value (a digest passes through), or why not.

        Each distinct normal form is hashed once per hasher: rule sets whose rules differ but
        normalise a value alike (an e-mail outside gmail for "meta" and "google") share it."""
        result = self._normal(key, value, rules, country)
        if isinstance(result, Dropped):
            return result
        if len(result) == 64 and _DIGEST_RE.fullmatch(result) is not None:
            return result
        digests = self._digests
        digest = digests.get(result)
        if digest is None:
            digest = digests[result] = sha256_hex(result)
        return digest

    def _normal(self, key: str, value: str, rules: str, country: str | None) -> str | Dropped:
        """`check`, memoised per hasher; a rule derived from another's (normalize.DERIVED, e.g.
        Google's e-mail from Meta's) reads the value once for both."""
        where = country if key == "ph" else None
        memo_key = (rules, key, value, where)
        normals = self._normals
        found = normals.get(memo_key)
        if found is not None:
            return found
        derived = DERIVED.get((rules, key))
        if derived is None:
            found = check(key, value, rules, default_country=country)
        else:
            base_rules, step = derived
            found = self._normal(key, value, base_rules, country)
            if type(found) is str and (len(found) != 64 or _DIGEST_RE.fullmatch(found) is None):
                found = step(found)
        normals[memo_key] = found
        return found


def phone_country(pii: Mapping[str, tuple[str, ...]], default: str | None) -> str | None:
    """The country national phone numbers of `pii` are read in: its own, else `default`.

    Its own is the raw ``country`` value when it names a country (code, alpha-3 or English
    name); a digest, an unknown name or no value leaves the site's default.
    """
    values = pii.get("country")
    if values is not None and len(values) == 1:
        own = country_code(values[0])
        if own is not None:
            return own
    return default


def hash_pii(
    pii: Mapping[str, tuple[str, ...]],
    rulesets: Iterable[str],
    default_country: str | None = None,
    path: str = "",
) -> tuple[Hashed, list[FieldError]]:
    """Return the hashed identifiers of `pii` per rule set, and a warning per dropped value.

    A value that cannot be normalised is dropped (never sent as garbage) and reported with its
    field path; the event itself is still accepted. A value that already is a SHA-256 digest
    (or normalises to one) is passed through; repeated digests are kept once, in order. Phone
    numbers are read in the event's own country when it names one (`phone_country`).
    """
    default_country = phone_country(pii, default_country)
    warnings: dict[tuple[str, str], FieldError] = {}
    hashed: Hashed = {}
    for rules in rulesets:
        out: dict[str, tuple[str, ...]] = {}
        for key, values in pii.items():
            if len(values) == 1:  # the usual shape: one e-mail, one phone, …
                result = check(key, values[0], rules, default_country=default_country)
                if type(result) is str:
                    if len(result) != 64 or _DIGEST_RE.fullmatch(result) is None:
                        result = sha256_hex(result)
                    out[key] = (result,)
                    continue
            digests: list[str] = []
            for i, value in enumerate(values):
                result = check(key, value, rules, default_country=default_country)
                if isinstance(result, Dropped):
                    where = f"{path}.user.{_INPUT_NAME[key]}" + (
                        f"[{i}]" if len(values) > 1 else ""
                    )
                    warnings.setdefault((where, result.reason), FieldError(where, result.reason))
                    continue
                # `check` passes a digest through; so is a value that normalises to one.
                if len(result) != 64 or _DIGEST_RE.fullmatch(result) is None:
                    result = sha256_hex(result)
                if result not in digests:
                    digests.append(result)
            if digests:
                out[key] = tuple(digests)
        hashed[rules] = out
    return hashed, list(warnings.values())


def hash_identifiers(
    event: Event,
    rulesets: Iterable[str],
    *,
    default_country: str | None = None,
    path: str = "",
) -> tuple[Event, list[FieldError]]:
    """Return the event with raw PII replaced by hashed values per rule set, and what was dropped.

    (`parse_event` with a `PiiHasher` does the same while parsing, without a second event.)
    """
    u = event.user
    if not u.pii:
        return event, []
    hashed, warnings = hash_pii(u.pii, rulesets, default_country, path)
    # Not dataclasses.replace: its per-call field introspection costs more than the hashing.
    return with_hashed(event, hashed), warnings
