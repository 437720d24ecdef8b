"""Turn an event's raw PII into the hashed identifier sets its destinations need."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from gateway.core.event import PII_FIELDS, Event, FieldError, User
from gateway.core.normalize import Dropped, check, sha256_hex

_INPUT_NAME = {key: name for name, key in PII_FIELDS.items()}


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
    if not event.user.pii:
        return event, []
    warnings: dict[tuple[str, str], FieldError] = {}
    hashed: dict[str, dict[str, tuple[str, ...]]] = {}
    for rules in rulesets:
        out: dict[str, tuple[str, ...]] = {}
        for key, values in event.user.pii.items():
            digests: list[str] = []
            for i, value in enumerate(values):
                result = check(key, value, rules, default_country=default_country)
                if isinstance(result, Dropped):
                    where = f"{path}.user.{_INPUT_NAME[key]}" + (
                        f"[{i}]" if len(values) > 1 else ""
                    )
                    warnings.setdefault((where, result.reason), FieldError(where, result.reason))
                    continue
                digest = result if _is_digest(result) else sha256_hex(result)
                if digest not in digests:
                    digests.append(digest)
            if digests:
                out[key] = tuple(digests)
        hashed[rules] = out
    u = event.user
    user = User(
        hashed=hashed, ip=u.ip, user_agent=u.user_agent, visitor_id=u.visitor_id,
        fbc=u.fbc, fbp=u.fbp, click_ids=u.click_ids,
    )  # fmt: skip
    return replace(event, user=user), list(warnings.values())


def _is_digest(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)
