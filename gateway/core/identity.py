"""Turn an event's raw PII into the hashed identifier sets its destinations need."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from gateway.core.event import PII_FIELDS, Event, FieldError, with_hashed
from gateway.core.normalize import Dropped, check, sha256_hex

_INPUT_NAME = {key: name for name, key in PII_FIELDS.items()}
_DIGEST_RE: Final = re.compile(r"[0-9a-f]{64}")


def hash_identifiers(
    event: Event,
    rulesets: Iterable[str],
    *,
    default_country: str | None = None,
    path: str = "",
) -> tuple[Event, list[FieldError]]:
    """Return the event with raw PII replaced by hashed values per rule set, and what was dropped.

    A value that cannot be normalised is dropped (never sent as garbage) and reported as a
    warning with its field path; the event itself is still accepted.
    """
    u = event.user
    if not u.pii:
        return event, []
    warnings: dict[tuple[str, str], FieldError] = {}
    hashed: dict[str, dict[str, tuple[str, ...]]] = {}
    for rules in rulesets:
        out: dict[str, tuple[str, ...]] = {}
        for key, values in u.pii.items():
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
    # Not dataclasses.replace: its per-call field introspection costs more than the hashing.
    return with_hashed(event, hashed), list(warnings.values())
